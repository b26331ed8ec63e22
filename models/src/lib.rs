//! The harness every taskcheck model runs through, so that every model reports the same way.
//!
//! The models themselves are integration tests: `tests/loom_*.rs` (each file starts with
//! `#![cfg(loom)]`) and `tests/shuttle_*.rs` (`#![cfg(shuttle)]`). They check the real runtime
//! code: under `RUSTFLAGS="--cfg loom"` or `"--cfg shuttle"` the runtime's sync facade swaps
//! std's primitives for the checker's.
//!
//! Each model is one call into this crate (the loom calls exist under `--cfg loom`, the
//! shuttle calls under `--cfg shuttle`):
//!
//! | call | checks |
//! |---|---|
//! | `loom_model` | a correct kernel passes every loom execution up to the preemption bound |
//! | `loom_expect_failure` | a bug model is caught by loom, with the expected message |
//! | `shuttle_random`, `shuttle_pct`, `shuttle_dfs` | a correct scenario passes every schedule tried |
//! | `shuttle_replay` | one recorded schedule again: how a shuttle failure is debugged |
//! | `shuttle_expect_failure` | a bug model is caught by shuttle; returns the message and schedule |
//!
//! Each call counts the executions the checker ran, times them, prints one line
//!
//! ```text
//! loom    pass    loom_task::completion_races_registration                       48 schedules      7 ms
//! shuttle caught  shuttle_deadlock::blocking_on_the_ui_thread [pct]               3 schedules      1 ms
//!         deadlock! blocked tasks: [main-thread (task 0), ...]
//! ```
//!
//! and appends the same facts as a JSON line to the file named by `TASKCHECK_REPORT`, which
//! is how `cargo run --release -p taskcheck-models --bin suite` builds its summary table
//! (see [`report`]).
//!
//! Bug models are how the suite proves it can fail: each of the four bug classes (deadlock
//! on a captured single-thread context, lost fire-and-forget error, value-task misuse,
//! exception timing) is committed on purpose and must be *caught*; a bug model that passes
//! fails the suite, because it means the property it breaks is not being checked.
//!
//! A loom model:
//!
//! ```text
//! #![cfg(loom)]
//! use taskcheck_models::loom_model;
//!
//! #[test]
//! fn completion_races_registration() {
//!     loom_model("loom_task::completion_races_registration", || {
//!         // build a task, race a completer thread against an awaiter, assert the outcome
//!     });
//! }
//! ```

pub mod fixtures;
#[cfg(loom)]
mod loom_harness;
pub mod report;
#[cfg(shuttle)]
mod shuttle_harness;

#[cfg(loom)]
pub use loom_harness::{loom_expect_failure, loom_model};
#[cfg(shuttle)]
pub use shuttle_harness::{
    schedule_from_failure, shuttle_dfs, shuttle_expect_failure, shuttle_pct, shuttle_random,
    shuttle_replay, Strategy,
};

/// The text of a panic payload: `panic!` produces a `&str` or a `String`.
#[cfg(any(loom, shuttle))]
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(a panic whose payload is not a string)".to_owned()
    }
}

/// The first `count` lines of `text`, each cut to a readable width, for one-line summaries.
#[cfg(any(loom, shuttle))]
fn first_lines(text: &str, count: usize) -> String {
    const WIDTH: usize = 480;
    text.lines()
        .take(count)
        .map(|line| match line.char_indices().nth(WIDTH) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Milliseconds, for the report.
#[cfg(any(loom, shuttle))]
fn millis(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
