//! Whole programs: a DSL of async operations, a sequential reference model of the
//! semantics that says which outcomes a program may have, and a driver that runs the
//! program on the real runtime and checks that its outcome is one of them.
//!
//! # The DSL ([`dsl`])
//!
//! A [`Program`] is the main thread's script over numbered slots: completion sources
//! (`TaskCompletionSource<i64>`), spawned tasks whose bodies are short step lists, delays
//! on a manual clock, `when_all` / `when_any` tasks, cancellation sources (linked to
//! earlier ones, with counting callbacks, `cancel`, `cancel_after`), blocking waits, and
//! dropped handles and sources. A body awaits only slots that exist when it is spawned,
//! so nothing waits in a cycle; it can also check a token, yield, fail, panic, or return
//! a small (cacheable) value; each await is plain or `configure_await(false)`. A task is
//! spawned eagerly (`taskcheck::start` on the driver thread) or lazily (`pool.spawn` on a
//! 2-worker pool).
//!
//! [`Op`] derives [`arbitrary::Arbitrary`] (fuzzing) and implements proptest's
//! `Arbitrary` ([`dsl::program_strategy`]) from the same definition. [`Plan::new`]
//! resolves a program's references (modulo the candidates, dropping what has none) and
//! bounds it: at most [`dsl::MAX_OPS`] ops, [`dsl::MAX_BODY_STEPS`] steps per body, a few
//! slots of each kind. The plan ends with a clean-up: wait for quiescence, complete every
//! pending source, advance the clock past every timer, wait for every task.
//!
//! # The model ([`model`])
//!
//! [`Model::expect`] interprets the plan with one actor per thread of control (the driver,
//! each body) and atomic steps as fine as the runtime's rules allow other threads to
//! interleave; it explores every interleaving and returns every allowed [`Record`]: the
//! results of the driver's ops (`try_set_*`, `register`, `cancel`, `advance`, waits), the
//! order the cancellation callbacks ran in, each slot's final status and value, and which
//! tasks were reported as unobserved (to which hook, with which errors). Where the schedule
//! decides — a body checking a token the driver cancels meanwhile, the winner of a
//! `when_any` whose inputs complete concurrently, whether a fault is observed by a body
//! that may or may not get that far — the set has several records.
//!
//! It covers: tasks and completion sources (one winner; abandoned on drop; a source is a
//! handle of its task), faults and
//! panics (a panic is a fault), eager and lazy start (`start` runs the body to its first
//! suspension before returning; a synchronous small result is the cached task),
//! cancellation (flag first, LIFO callbacks, failures collected, inline registration on a
//! canceled token with its panic reaching the caller, linked sources in their LIFO slot,
//! `cancel_after` on the manual clock, delays released by whichever of timer and token
//! comes first), `when_all` (flattened faults, the first canceled input's cancellation
//! with its token, observation), `when_any`
//! (scan, registration, first to run its callback wins, losers released), observation and
//! unobserved-error reports (exactly once, only faults, only unobserved, to the pool's
//! hook for pool tasks and to the process-wide hook otherwise).
//!
//! It leaves out: the moment a report happens (only the final set is compared), where a
//! continuation runs (thread, inline or queued: not observable by these programs),
//! `when_each`, `wait_async`, `start_void`, single-thread contexts and their deadlock
//! detection, `ValueTask`, `try_reset` / dispose / unregister (the cancellation
//! properties cover them), and the error messages' text.
//!
//! # The driver ([`driver`])
//!
//! [`run_expectation`] runs a plan on the runtime and compares; [`check_program`] does the
//! whole thing on real threads. Besides the record it checks the global invariants: every
//! held task completes; no completed task keeps continuations; at quiescence every
//! pending task has exactly the continuations the model says (a `when_any` that keeps its
//! losers' continuations is a leak); every body future is dropped (a drop counter); no
//! panic escapes. Under `--cfg shuttle` the same driver runs inside a shuttle execution
//! (`tests/program_shuttle.rs`).
//!
//! [`Model::with_flaw`] makes deliberately wrong models ([`Flaw`]); `tests/program.rs`
//! shows that the property catches each of them.

pub mod driver;
pub mod dsl;
pub mod model;
pub mod record;

#[cfg(not(shuttle))]
pub use driver::check_program;
pub use driver::{
    expect, install_panic_filter, run_expectation, Planted, Problem, ProgramError, Summary,
};
pub use dsl::{BodyOp, Op, Plan, Program};
pub use model::{Expectation, Flaw, Model, ModelError};
pub use record::{Failure, Fault, Final, HookKind, OpResult, Outcome, Record, Report, Value};
