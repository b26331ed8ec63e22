//! Sequential reference models of taskcheck's semantics, and drivers that run the real
//! runtime next to them and report the first divergence.
//!
//! A model here is deliberately small and plain: it states a contract of `taskcheck` (the
//! rules in the runtime's module docs and in `DESIGN.md`) as a state machine with no
//! concurrency and no cleverness, so that it can be checked by reading. The drivers are
//! what the proptest properties (`tests/`) and the cargo-fuzz targets (`fuzz/`) call: they
//! take a sequence of generated operations, apply each to the runtime and to the model, and
//! return a typed [`Divergence`] instead of panicking.
//!
//! | module | contract | driver |
//! |---|---|---|
//! | [`value_task_source`] | `ManualResetValueTaskSourceCore`: tokens, one completion, one continuation, one take, reset | [`value_task_source::run_against_runtime`] |
//! | [`value_task_pool`] | `ValueTaskSourcePool`: rent, producer, consumer (`ValueTask` status, await, drop), return of the slot | [`value_task_pool::run_against_runtime`] |
//! | [`cancellation`] | Cancellation sources, tokens and registrations on a manual `Clock`: LIFO callbacks and their failures, idempotent cancel, inline register, unregister, linked sources, `cancel_after` timers, dispose (callbacks stay registered, their closures go), `try_reset`, which callbacks' closures are still alive | [`cancellation::run_against_runtime`] |
//! | [`combinators`] | `when_all` / `when_any` / `when_each` over completion sources complete before or after the call (duplicates, empty lists, cancellations with and without tokens, token cancellation), and the unobserved-error reports when handles and sources are dropped | [`combinators::run_against_runtime`] |
//! | [`program`] | Whole programs: completion sources, eager and lazy tasks (awaits, faults, panics, token checks), cancellation with linked sources and timers, `when_all` / `when_any`, waits, dropped handles; every interleaving's outcome, callback order and unobserved reports | [`program::check_program`] (`program::run_expectation` under shuttle) |
//!
//! Operations derive [`arbitrary::Arbitrary`] (fuzzing) and implement proptest's
//! `Arbitrary` (properties) from the same enum.
//!
//! The crate runs the std build of the runtime. Under `--cfg loom` / `--cfg shuttle` it is
//! empty, so a model build of the whole workspace skips it.
//! The exception is [`program`], which is also built under `--cfg shuttle`: its driver runs
//! inside shuttle executions in `tests/program_shuttle.rs`.

#![warn(missing_docs)]

#[cfg(not(any(loom, shuttle)))]
pub mod cancellation;
#[cfg(not(any(loom, shuttle)))]
pub mod combinators;
#[cfg(not(any(loom, shuttle)))]
mod harness;
// Also built under `--cfg shuttle`: `tests/program_shuttle.rs` runs it in shuttle executions.
#[cfg(not(loom))]
pub mod program;
#[cfg(not(any(loom, shuttle)))]
pub mod value_task_pool;
#[cfg(not(any(loom, shuttle)))]
pub mod value_task_source;

#[cfg(not(any(loom, shuttle)))]
pub use harness::{Divergence, DivergenceKind};
