//! `ValueTask<T>`: a single-await result that costs nothing when it is already there.
//!
//! A value task holds one of three things:
//!
//! - a ready outcome, inline (no allocation): the synchronous fast path;
//! - a [`Task<T>`];
//! - a reusable [`ValueTaskSource`] plus the token of one operation on it (with the pooled
//!   sources of [`ValueTaskSourcePool`], no allocation in steady state).
//!
//! It is neither `Clone` nor `Copy`, and `.await` consumes it, so awaiting one twice does
//! not compile — stronger than .NET, which can only throw. Code that needs to await a
//! result more than once converts it first, once, with [`ValueTask::as_task`] or
//! [`ValueTask::preserve`]. Misusing a source through its raw API is a typed
//! [`ValueTaskSourceError`] (surfacing as a fault of the await), never another operation's
//! result.
//!
//! [`ValueTaskSourcePool`]: crate::ValueTaskSourcePool

use std::fmt;
use std::future::IntoFuture;

use crate::awaiter::{
    Awaitable, Awaiter, ConfigureAwaitOptions, ConfiguredAwait, Continuation, Dependency,
};
use crate::error::{Fault, TaskError};
use crate::raw_task::RawTask;
use crate::sync::Arc;
use crate::task::{Task, TaskStatus};
use crate::task_core::{TaskCore, Waiter};
use crate::value_task_pool::PooledValueTaskSource;
use crate::value_task_source::{SourceErrorKind, ValueTaskSource, ValueTaskSourceError};

/// A single-await result (.NET's `ValueTask<TResult>`); see the module docs.
#[must_use = "a ValueTask does nothing unless awaited (or converted with as_task)"]
pub struct ValueTask<T, S: ValueTaskSource<T> = PooledValueTaskSource<T>> {
    repr: Repr<T, S>,
}

// A value task never pins what it holds (values, tasks and sources are only moved or
// borrowed), so it is `Unpin` whatever `T` and `S` are.
impl<T, S: ValueTaskSource<T>> Unpin for ValueTask<T, S> {}

enum Repr<T, S: ValueTaskSource<T>> {
    Ready(Option<Result<T, TaskError>>),
    Task(TaskRef<T>),
    Source {
        source: S,
        token: u64,
        consumed: bool,
    },
}

/// A task inside a value task, with the one operation that needs `T: Clone` (reading
/// a shared outcome) captured when the value task was made, so awaiting needs no bound.
struct TaskRef<T> {
    core: Arc<TaskCore<T>>,
    producer: Option<Arc<RawTask>>,
    read: fn(&TaskCore<T>) -> Option<Result<T, TaskError>>,
    key: Option<u64>,
}

/// A `TaskRef` holds a handle of its task (unobserved.rs rule 2), taken by `into_parts`.
impl<T> Drop for TaskRef<T> {
    fn drop(&mut self) {
        self.core.release_handle();
    }
}

impl<T, S: ValueTaskSource<T>> ValueTask<T, S> {
    /// A value task that already has `value` (no allocation).
    pub fn from_result(value: T) -> Self {
        ValueTask {
            repr: Repr::Ready(Some(Ok(value))),
        }
    }

    /// A value task that already failed with `error`.
    pub fn from_error(error: TaskError) -> Self {
        ValueTask {
            repr: Repr::Ready(Some(Err(error))),
        }
    }

    /// A value task over operation `token` of `source`.
    pub fn from_source(source: S, token: u64) -> Self {
        ValueTask {
            repr: Repr::Source {
                source,
                token,
                consumed: false,
            },
        }
    }

    /// A value task over `task`.
    pub fn from_task(task: Task<T>) -> Self
    where
        T: Clone,
    {
        let read: fn(&TaskCore<T>) -> Option<Result<T, TaskError>> =
            |core| core.with_outcome_observing(|outcome| outcome.cloned());
        let (core, producer) = task.into_parts();
        ValueTask {
            repr: Repr::Task(TaskRef {
                core,
                producer,
                read,
                key: None,
            }),
        }
    }

    /// The status now (a stale or misused source reads as faulted).
    pub fn status(&self) -> TaskStatus {
        match &self.repr {
            Repr::Ready(Some(Ok(_))) => TaskStatus::Succeeded,
            Repr::Ready(Some(Err(error))) => error.status(),
            Repr::Ready(None) => TaskStatus::Faulted,
            Repr::Task(task) => task.core.status(),
            Repr::Source { source, token, .. } => {
                source.status(*token).unwrap_or(TaskStatus::Faulted)
            }
        }
    }

    /// Whether it has completed.
    pub fn is_completed(&self) -> bool {
        self.status() != TaskStatus::Pending
    }
}

impl<T, S> ValueTask<T, S>
where
    T: Clone + Send + 'static,
    S: ValueTaskSource<T> + Send + 'static,
{
    /// Converts to a multi-await [`Task`] (once; the value task is consumed). A ready
    /// value or a task converts without running anything; a source is awaited by a small
    /// task that captures no context.
    #[track_caller]
    pub fn as_task(self) -> Task<T> {
        let mut this = self;
        match std::mem::replace(&mut this.repr, Repr::Ready(None)) {
            Repr::Ready(Some(Ok(value))) => Task::from_result(value),
            Repr::Ready(Some(Err(error))) => Task::from_error(error),
            Repr::Ready(None) => Task::from_error(already_awaited()),
            Repr::Task(mut task) => {
                if let Some(key) = task.key.take() {
                    task.core.unregister(key);
                }
                Task::from_parts(task.core.clone(), task.producer.clone())
            }
            source @ Repr::Source { .. } => {
                let value_task = ValueTask { repr: source };
                crate::start(async move { value_task.configure_await(false).await })
            }
        }
    }

    /// A value task that may be awaited more than once by converting it to a task first
    /// (C#'s `Preserve`). Ready values and tasks are returned as they are.
    #[track_caller]
    pub fn preserve(self) -> ValueTask<T, S> {
        if matches!(self.repr, Repr::Source { .. }) {
            ValueTask::from_task(self.as_task())
        } else {
            self
        }
    }
}

fn already_awaited() -> TaskError {
    TaskError::from_faults(vec![Fault::from(
        "this ValueTask's result was already taken; a ValueTask may be awaited once",
    )])
}

impl<T, S: ValueTaskSource<T>> Drop for ValueTask<T, S> {
    fn drop(&mut self) {
        match &mut self.repr {
            Repr::Source {
                source,
                token,
                consumed: false,
            } => source.on_abandoned(*token),
            Repr::Task(task) => {
                if let Some(key) = task.key.take() {
                    task.core.unregister(key);
                }
            }
            _ => {}
        }
    }
}

impl<T, S: ValueTaskSource<T>> fmt::Debug for ValueTask<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.repr {
            Repr::Ready(_) => "ready",
            Repr::Task(_) => "task",
            Repr::Source { .. } => "source",
        };
        f.debug_struct("ValueTask")
            .field("holds", &kind)
            .field("status", &self.status())
            .finish()
    }
}

/// The awaiter of a [`ValueTask`].
pub struct ValueTaskAwaiter<T, S: ValueTaskSource<T>> {
    value_task: ValueTask<T, S>,
    refused: Option<ValueTaskSourceError>,
}

impl<T, S: ValueTaskSource<T>> Awaiter for ValueTaskAwaiter<T, S> {
    type Output = Result<T, TaskError>;

    fn is_completed(&self) -> bool {
        self.refused.is_some() || self.value_task.is_completed()
    }

    fn on_completed(&mut self, continuation: Continuation) {
        match &mut self.value_task.repr {
            Repr::Ready(_) => continuation.resume(),
            Repr::Task(task) => match task.core.register(Waiter::Resume(continuation)) {
                Ok(key) => task.key = Some(key),
                Err(Waiter::Resume(continuation)) => continuation.resume(),
                Err(Waiter::Callback(_)) => unreachable!("register gives back what it was given"),
            },
            Repr::Source { source, token, .. } => {
                if let Err(refused) = source.on_completed(*token, continuation) {
                    self.refused = Some(refused.error);
                    refused.continuation.resume();
                }
            }
        }
    }

    fn get_result(&mut self) -> Result<T, TaskError> {
        if let Some(error) = self.refused.take() {
            return Err(TaskError::from_error(error));
        }
        match &mut self.value_task.repr {
            Repr::Ready(outcome) => outcome.take().unwrap_or_else(|| Err(already_awaited())),
            Repr::Task(task) => {
                task.key = None;
                (task.read)(&task.core)
                    .unwrap_or_else(|| Err(TaskError::from_error(not_completed())))
            }
            Repr::Source {
                source,
                token,
                consumed,
            } => {
                let outcome = source.get_result(*token);
                // Asked too early, the handle still owns the operation (and must give it
                // back if dropped); otherwise it is done with it.
                *consumed =
                    !matches!(&outcome, Err(e) if e.kind() == SourceErrorKind::NotCompleted);
                outcome.unwrap_or_else(|error| Err(TaskError::from_error(error)))
            }
        }
    }

    fn dependency(&self) -> Dependency {
        match &self.value_task.repr {
            Repr::Task(task) => Dependency(task.producer.clone()),
            _ => Dependency::none(),
        }
    }
}

fn not_completed() -> ValueTaskSourceError {
    ValueTaskSourceError::new(SourceErrorKind::NotCompleted)
}

impl<T, S: ValueTaskSource<T>> fmt::Debug for ValueTaskAwaiter<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueTaskAwaiter")
            .field("value_task", &self.value_task)
            .finish()
    }
}

impl<T, S: ValueTaskSource<T>> Awaitable for ValueTask<T, S> {
    type Awaiter = ValueTaskAwaiter<T, S>;

    fn get_awaiter(self) -> ValueTaskAwaiter<T, S> {
        ValueTaskAwaiter {
            value_task: self,
            refused: None,
        }
    }
}

/// `.await` consumes the value task and resumes on the captured context.
impl<T, S: ValueTaskSource<T>> IntoFuture for ValueTask<T, S> {
    type Output = Result<T, TaskError>;
    type IntoFuture = ConfiguredAwait<ValueTaskAwaiter<T, S>>;

    fn into_future(self) -> Self::IntoFuture {
        ConfiguredAwait::new(self.get_awaiter(), ConfigureAwaitOptions::default())
    }
}
