//! Errors: a task's failed outcome ([`TaskError`]) and the typed errors of misuse.
//!
//! A task's outcome is `Result<T, TaskError>`. `TaskError` is either **faulted** (one or
//! more errors, panics included) or **canceled**. Like `anyhow::Error`, `TaskError` does not
//! itself implement [`std::error::Error`]: that is what lets `?` turn any error into a fault
//! (`impl<E: Error> From<E> for TaskError`). Convert it with `Box::<dyn Error>::from` when an
//! API needs a `dyn Error`.
//!
//! Every misuse error names what happened and what to do about it.

use std::any::Any;
use std::error::Error;
use std::fmt;

use crate::cancellation::CancellationToken;
use crate::sync::Arc;
use crate::task::{TaskId, TaskStatus};

/// One fault: any error, a caught panic, or an abandoned task.
pub(crate) type Fault = Box<dyn Error + Send + Sync + 'static>;

/// Why a task did not produce a value: it faulted or it was canceled.
///
/// Cheap to clone (faults are shared), so every awaiter of a task gets the same error.
#[derive(Clone)]
pub struct TaskError {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Faulted(Arc<Vec<Fault>>),
    /// The faults of several tasks, in order (`when_all`): one level flattened, sharing
    /// each task's fault list.
    Aggregate(Arc<Vec<Arc<Vec<Fault>>>>),
    /// Canceled, by the given token's cancellation when known (.NET's
    /// `OperationCanceledException.CancellationToken`).
    Canceled(Option<CancellationToken>),
}

impl TaskError {
    /// A fault carrying `error`.
    pub fn from_error<E: Error + Send + Sync + 'static>(error: E) -> Self {
        Self::from_faults(vec![Box::new(error)])
    }

    /// A fault carrying several errors (as .NET's `AggregateException` does), in order.
    ///
    /// An empty list is a programming error and is reported as a fault that says so.
    pub fn from_errors(errors: impl IntoIterator<Item = Fault>) -> Self {
        let mut faults: Vec<Fault> = errors.into_iter().collect();
        if faults.is_empty() {
            faults.push(message(
                "TaskError::from_errors was given no errors; pass at least one",
            ));
        }
        Self::from_faults(faults)
    }

    /// The outcome of a canceled task, without a token (.NET's parameterless
    /// `OperationCanceledException`).
    pub fn canceled() -> Self {
        TaskError {
            repr: Repr::Canceled(None),
        }
    }

    /// A cancellation that carries the token that asked for it, as
    /// [`CancellationToken::throw_if_cancellation_requested`] returns. A task started with
    /// a token ([`Task::run_with_token`](crate::Task::run_with_token)) ends Canceled only
    /// when its body's cancellation carries that token.
    pub fn canceled_by(token: &CancellationToken) -> Self {
        TaskError {
            repr: Repr::Canceled(Some(token.clone())),
        }
    }

    /// The token a cancellation carries (`None` for a fault or a cancellation without one).
    pub fn cancellation_token(&self) -> Option<&CancellationToken> {
        match &self.repr {
            Repr::Canceled(token) => token.as_ref(),
            Repr::Faulted(_) | Repr::Aggregate(_) => None,
        }
    }

    pub(crate) fn from_faults(faults: Vec<Fault>) -> Self {
        TaskError {
            repr: Repr::Faulted(Arc::new(faults)),
        }
    }

    /// A fault made from a caught panic's payload.
    pub(crate) fn from_panic(task: TaskId, payload: Box<dyn Any + Send>) -> Self {
        Self::from_error(PanicError {
            task,
            message: panic_message(&*payload),
        })
    }

    /// The fault of a task whose body was dropped before it finished.
    pub(crate) fn abandoned(task: TaskId, reason: String) -> Self {
        Self::from_error(AbandonedError { task, reason })
    }

    /// Whether the task faulted.
    pub fn is_faulted(&self) -> bool {
        matches!(self.repr, Repr::Faulted(_) | Repr::Aggregate(_))
    }

    /// Whether the task was canceled.
    pub fn is_canceled(&self) -> bool {
        matches!(self.repr, Repr::Canceled(_))
    }

    /// Whether the fault includes a [`TimeoutError`]: a `wait_async` with a timeout
    /// ran out of time (distinct from a cancellation).
    pub fn is_timeout(&self) -> bool {
        self.errors().any(|e| e.is::<TimeoutError>())
    }

    /// Whether the fault includes a panic caught in a task.
    pub fn is_panic(&self) -> bool {
        self.errors().any(|e| e.is::<PanicError>())
    }

    /// Whether the task was abandoned: its body was dropped before it finished, because the
    /// context it was queued to shut down, or its completion source was dropped unset.
    pub fn is_abandoned(&self) -> bool {
        self.errors().any(|e| e.is::<AbandonedError>())
    }

    /// The message of the first caught panic, if the fault includes one.
    pub fn panic_message(&self) -> Option<&str> {
        self.errors()
            .find_map(|e| e.downcast_ref::<PanicError>())
            .map(|p| p.message.as_str())
    }

    /// The fault's errors in order (none for a canceled task).
    pub fn errors(&self) -> impl Iterator<Item = &(dyn Error + Send + Sync + 'static)> + '_ {
        self.fault_lists()
            .flat_map(|faults| faults.iter())
            .map(|fault| &**fault)
    }

    /// The shared fault lists behind [`errors`](Self::errors).
    fn fault_lists(&self) -> impl Iterator<Item = &Arc<Vec<Fault>>> + '_ {
        let (single, several): (Option<&Arc<Vec<Fault>>>, &[Arc<Vec<Fault>>]) = match &self.repr {
            Repr::Faulted(faults) => (Some(faults), &[]),
            Repr::Aggregate(lists) => (None, lists),
            Repr::Canceled(_) => (None, &[]),
        };
        single.into_iter().chain(several)
    }

    /// The faults of `errors` (each a faulted task's error), in order, one level flattened:
    /// the outcome of a `when_all` whose inputs faulted. `None` if none of them faulted.
    pub(crate) fn aggregate<'a>(errors: impl IntoIterator<Item = &'a TaskError>) -> Option<Self> {
        let lists: Vec<Arc<Vec<Fault>>> = errors
            .into_iter()
            .flat_map(|error| error.fault_lists().cloned().collect::<Vec<_>>())
            .collect();
        (!lists.is_empty()).then(|| TaskError {
            repr: Repr::Aggregate(Arc::new(lists)),
        })
    }

    /// The first error, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.errors().next().and_then(|e| e.downcast_ref::<E>())
    }

    /// The status a task with this outcome has.
    pub fn status(&self) -> TaskStatus {
        match self.repr {
            Repr::Faulted(_) | Repr::Aggregate(_) => TaskStatus::Faulted,
            Repr::Canceled(_) => TaskStatus::Canceled,
        }
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        TaskError::from_error(error)
    }
}

impl From<TaskError> for Box<dyn Error + Send + Sync + 'static> {
    fn from(error: TaskError) -> Self {
        Box::new(TaskErrorAsError(error))
    }
}

/// Carries a [`TaskError`] where a `dyn Error` is needed.
struct TaskErrorAsError(TaskError);

impl fmt::Debug for TaskErrorAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TaskErrorAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for TaskErrorAsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.errors().next().map(|e| e as &(dyn Error + 'static))
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Faulted(_) | Repr::Aggregate(_) => f
                .debug_tuple("Faulted")
                .field(&self.errors().collect::<Vec<_>>())
                .finish(),
            Repr::Canceled(None) => f.write_str("Canceled"),
            Repr::Canceled(Some(token)) => f.debug_tuple("Canceled").field(token).finish(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Canceled(None) => f.write_str("the task was canceled"),
            Repr::Canceled(Some(token)) => write!(f, "the task was canceled by {token}"),
            Repr::Faulted(_) | Repr::Aggregate(_) => {
                f.write_str("the task faulted: ")?;
                for (i, fault) in self.errors().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{fault}")?;
                }
                Ok(())
            }
        }
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// A plain message as a fault.
pub(crate) fn message(text: &str) -> Fault {
    text.into()
}

/// A panic caught in a task's body.
#[derive(Debug)]
struct PanicError {
    task: TaskId,
    message: String,
}

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} panicked: {}", self.task, self.message)
    }
}

impl Error for PanicError {}

/// A task whose body was dropped before it finished.
#[derive(Debug)]
struct AbandonedError {
    task: TaskId,
    reason: String,
}

impl fmt::Display for AbandonedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} was abandoned: {}", self.task, self.reason)
    }
}

impl Error for AbandonedError {}

/// A completion source was asked to complete a task that is already complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionError {
    pub(crate) task: TaskId,
    pub(crate) status: TaskStatus,
}

impl CompletionError {
    /// The task that was already complete.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Its status when the completion was refused.
    pub fn status(&self) -> TaskStatus {
        self.status
    }
}

impl fmt::Display for CompletionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} is already complete ({:?}); a completion source completes its task once: \
             use the try_set_* methods where completers race",
            self.task, self.status
        )
    }
}

impl Error for CompletionError {}

/// A context refused work because it was shut down (or, for `Task::run` in a model build,
/// because there is no default pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    /// The context that refused, or `None` for the missing default pool of a model build.
    pub(crate) context: Option<String>,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(context) => write!(
                f,
                "cannot spawn onto {context}: it has been shut down; spawn onto a running \
                 pool or context, or keep this one alive until its work is queued"
            ),
            None => f.write_str(
                "cannot spawn onto the default pool: model builds (--cfg loom / --cfg \
                 shuttle) have none; spawn onto an explicit ThreadPool instead",
            ),
        }
    }
}

impl Error for SpawnError {}

/// A [`Task::wait_async`](crate::Task::wait_async) ran out of time before its task
/// completed (.NET's `TimeoutException` from `WaitAsync`). A timeout is a fault, not a
/// cancellation: the awaited task is untouched and may still complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutError {
    pub(crate) task: TaskId,
    pub(crate) after: std::time::Duration,
}

impl TimeoutError {
    /// The task that was still pending.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// The timeout that elapsed.
    pub fn after(&self) -> std::time::Duration {
        self.after
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} did not complete within {:?}; the timeout only stopped the waiting: await \
             the original task (not the wait_async result) for its outcome, or cancel the \
             operation's own token to stop it",
            self.task, self.after
        )
    }
}

impl Error for TimeoutError {}

/// A body started with a token ([`Task::run_with_token`](crate::Task::run_with_token))
/// ended with a cancellation that its token did not request, so the task faults instead of
/// ending Canceled (.NET's rule for `Task.Run(action, token)`). Find it with
/// `error.downcast_ref::<ForeignCancellation>()`.
#[derive(Debug)]
pub struct ForeignCancellation {
    pub(crate) task: Option<TaskId>,
    pub(crate) error: TaskError,
}

impl ForeignCancellation {
    /// The task that faulted.
    pub fn task(&self) -> Option<TaskId> {
        self.task
    }

    /// The cancellation the body ended with.
    pub fn cancellation(&self) -> &TaskError {
        &self.error
    }
}

impl fmt::Display for ForeignCancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(task) => write!(f, "task {task}")?,
            None => f.write_str("a task")?,
        }
        write!(
            f,
            " was started with a cancellation token, but its body ended with a \
             cancellation that token did not request ({}); return \
             `TaskError::canceled_by(&token)` for the task's own token to end it Canceled",
            self.error
        )
    }
}

impl Error for ForeignCancellation {}
