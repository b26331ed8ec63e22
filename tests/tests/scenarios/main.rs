//! The seed scenarios as executable documentation.
//!
//! Each module is one scenario from the seed articles on .NET's `Task`: its doc tells the
//! story (what .NET does, what taskcheck does about it) and its tests replay it step by
//! step, asserting exact counts — polls, wakes, jobs a context ran, threads involved — and
//! never using time to order events (the machine has two cores and is shared).
//!
//! | module | the pitfall or pattern |
//! |---|---|
//! | [`shared_task`] | one task, many awaiters; status; completing twice; racing completers |
//! | [`ui_deadlock`] | `.Result` on the UI thread over a captured `await`, and its fixes |
//! | [`task_run_layering`] | `Task.Run` around an async body changes nothing in the outcome |
//! | [`panics`] | a panic is a fault of its task; workers survive; eager-start timing |
//! | [`context_capture`] | where the code after an `await` runs, for tasks and custom awaitables |
//! | [`completion_source`] | abandoned sources; inline vs asynchronous continuations |
//! | [`shutdown`] | work refused or abandoned by a context that is gone; who may pump |
//! | [`patterns`] | the seed's patterns and traps, with exact costs: wrappers, serial awaits vs `when_all`, closures vs fns, `when_each` vs batches, hoisting, fire-and-forget, `async void` |
//! | [`cancellation`] | tokens ask, code decides; swallowed cancellations; `Task.Run` with a token; timeout versus cancellation |
//!
//! Run one scenario with `cargo test -p taskcheck-tests --test scenarios ui_deadlock`, and
//! add `-- --nocapture` to read the deadlock reports the tests print.

// The scenarios use the real std runtime (a default pool, real threads); model builds
// (`--cfg loom` / `--cfg shuttle`) have neither, and tokio-test does not build there.
#![cfg(not(any(loom, shuttle)))]

mod cancellation;
mod completion_source;
mod context_capture;
mod panics;
mod patterns;
mod shared_task;
mod shutdown;
mod task_run_layering;
mod ui_deadlock;
mod wait_inlining;
