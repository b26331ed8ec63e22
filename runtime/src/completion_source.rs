//! `TaskCompletionSource<T>`: the producer side of a task completed by hand.
//!
//! Exactly one completion wins. `set_*` on a completed task is a [`CompletionError`];
//! `try_set_*` returns whether it won. A loser returns only once the task is observably
//! complete (the outcome is written under the lock it checks), so after any `try_set_*`
//! returns, `task.is_completed()` is true.
//!
//! Unlike .NET, a source dropped without completing its task faults the task as
//! *abandoned* (`TaskError::is_abandoned`): nothing awaiting it hangs. Share a source
//! between racing completers with an `Arc`.

use std::fmt;
use std::ops::BitOr;
use std::panic::Location;

use crate::error::{CompletionError, TaskError};
use crate::sync::Arc;
use crate::task::Task;
use crate::task_core::TaskCore;

/// Options for a completion source's task (.NET's `TaskCreationOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCreationOptions(u8);

impl TaskCreationOptions {
    /// No options: the first continuation may run inline on the completing thread.
    pub const NONE: Self = TaskCreationOptions(0);
    /// Queue every continuation, never running one inline on the completing thread
    /// (.NET's `RunContinuationsAsynchronously`). Use it when the completer holds locks
    /// or must not be delayed by the code awaiting the task.
    pub const RUN_CONTINUATIONS_ASYNCHRONOUSLY: Self = TaskCreationOptions(1);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TaskCreationOptions {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        TaskCreationOptions(self.0 | other.0)
    }
}

/// Completes a [`Task`] by hand (.NET's `TaskCompletionSource<TResult>`).
pub struct TaskCompletionSource<T> {
    core: Arc<TaskCore<T>>,
}

impl<T> TaskCompletionSource<T> {
    /// A source whose task is pending.
    #[track_caller]
    pub fn new() -> Self {
        Self::with_options_at(TaskCreationOptions::NONE, Location::caller())
    }

    /// A source with options.
    #[track_caller]
    pub fn with_options(options: TaskCreationOptions) -> Self {
        Self::with_options_at(options, Location::caller())
    }

    fn with_options_at(options: TaskCreationOptions, location: &'static Location<'static>) -> Self {
        let asynchronous = options.contains(TaskCreationOptions::RUN_CONTINUATIONS_ASYNCHRONOUSLY);
        let core = Arc::new(TaskCore::new(location, asynchronous));
        // The source is a handle of its task (unobserved.rs rule 2): while it lives, anyone
        // may still take the task and observe its outcome, as .NET's source keeps its task.
        core.acquire_handle();
        TaskCompletionSource { core }
    }

    /// The task this source completes.
    pub fn task(&self) -> Task<T> {
        Task::from_parts(self.core.clone(), None)
    }

    /// Completes the task with `value`.
    pub fn set_result(&self, value: T) -> Result<(), CompletionError> {
        self.set(Ok(value))
    }

    /// Faults the task with `error`. A canceled [`TaskError`] cancels it instead: in Rust
    /// the outcome's kind is explicit, not inferred from an exception type.
    pub fn set_exception(&self, error: impl Into<TaskError>) -> Result<(), CompletionError> {
        self.set(Err(error.into()))
    }

    /// Cancels the task.
    pub fn set_canceled(&self) -> Result<(), CompletionError> {
        self.set(Err(TaskError::canceled()))
    }

    /// Completes the task with `value` unless it is complete; whether this call won.
    pub fn try_set_result(&self, value: T) -> bool {
        self.core.try_complete(Ok(value)).is_ok()
    }

    /// Faults the task unless it is complete; whether this call won.
    pub fn try_set_exception(&self, error: impl Into<TaskError>) -> bool {
        self.core.try_complete(Err(error.into())).is_ok()
    }

    /// Cancels the task unless it is complete; whether this call won.
    pub fn try_set_canceled(&self) -> bool {
        self.core.try_complete(Err(TaskError::canceled())).is_ok()
    }

    fn set(&self, outcome: Result<T, TaskError>) -> Result<(), CompletionError> {
        self.core
            .try_complete(outcome)
            .map_err(|_| CompletionError {
                task: self.core.id,
                status: self.core.status(),
            })
    }
}

impl<T> Default for TaskCompletionSource<T> {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for TaskCompletionSource<T> {
    fn drop(&mut self) {
        // No other completer can race this: the source is the task's only completer and is
        // going away. A completed task costs nothing more here (no message is built).
        if !self.core.is_completed() {
            // Nobody can ever see the abandonment of a task only its source holds: not
            // reported.
            if self.core.handle_count() == 1 {
                self.core.mark_observed();
            }
            let reason = format!(
                "its TaskCompletionSource (created at {}) was dropped without completing it",
                self.core.location
            );
            let _ = self
                .core
                .try_complete(Err(TaskError::abandoned(self.core.id, reason)));
        }
        self.core.release_handle();
    }
}

impl<T> fmt::Debug for TaskCompletionSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCompletionSource")
            .field("task", &self.core.id)
            .field("status", &self.core.status())
            .finish()
    }
}
