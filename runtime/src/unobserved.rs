//! Where a task's error goes when nobody awaits it: unobserved-error reports and
//! `async void` (C#'s fire-and-forget methods).
//!
//! # Rules
//!
//! 1. **Observing** a faulted task's error is: awaiting it (an await with
//!    `suppress_throwing()` does not take the error, so it does not observe it), reading it
//!    ([`Task::outcome`](crate::Task::outcome)), a blocking [`Task::wait`](crate::Task::wait),
//!    feeding the task to [`when_all`](crate::when_all), or a
//!    [`wait_async`](crate::Task::wait_async) that passes it on. Status queries and winning
//!    a [`when_any`](crate::when_any) do not observe.
//! 2. **Handles.** Every `Task<T>` value and every in-flight await of one is a handle. When
//!    the last handle of a faulted task is dropped and its error was never observed, the
//!    error is reported to the unobserved-error hook **exactly once, at that drop** (.NET
//!    reports from a finalizer, whenever the GC runs). A task whose last handle is dropped
//!    while it is pending (detached, [`Task::detach`](crate::Task::detach)) keeps running
//!    and is reported, if it faults, when it completes. Canceled tasks are never reported.
//! 3. **Which hook.** A task spawned onto a context reports to that context's hook
//!    ([`Context::set_unobserved_error_hook`](crate::Context::set_unobserved_error_hook));
//!    a task with no context, or whose context has no hook, to the process-wide hook
//!    ([`set_unobserved_error_hook`]); with none set, the report is printed to stderr. In
//!    model builds the process-wide hooks are per OS thread, so parallel tests do not see
//!    each other's.
//! 4. **`async void`** ([`start_void`]): the future starts eagerly like [`start`](crate::start)
//!    and has no handle. If it faults, its error is posted to the error handler of the
//!    context that was current when it started
//!    ([`Context::set_error_handler`](crate::Context::set_error_handler)), running on that
//!    context as .NET posts the exception to the captured `SynchronizationContext`; with no
//!    captured context, or if the context is shut down, it goes to the process-wide
//!    handler ([`set_async_void_error_handler`]) on the completing thread (.NET rethrows it
//!    on the thread pool). If the context shuts down before running the posted report, the
//!    report goes to the process-wide handler. With none set, it is printed to stderr. A
//!    cancellation is reported too (.NET rethrows an `OperationCanceledException` escaping
//!    an `async void` method like any other exception). Such an error is never also
//!    reported as unobserved.
//! 5. A hook or handler that panics is contained: the panic and the report are printed to
//!    stderr, and the runtime carries on.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};

use crate::context::Context;
use crate::error::{panic_message, TaskError};
use crate::sync::{self, Arc, Mutex};
use crate::task::TaskId;

/// A context's hook or error handler (boxed: the checkers' `Arc` cannot hold a `dyn`).
pub(crate) type Hook = Arc<Box<dyn Fn(&UnhandledTaskError) + Send + Sync + 'static>>;

/// Boxes a user's hook for a context.
pub(crate) fn hook<F>(f: F) -> Hook
where
    F: Fn(&UnhandledTaskError) + Send + Sync + 'static,
{
    Arc::new(Box::new(f))
}

/// A context's hooks (rule 3, rule 4).
pub(crate) struct Hooks {
    unobserved: Mutex<Option<Hook>>,
    error_handler: Mutex<Option<Hook>>,
}

impl Hooks {
    pub(crate) fn new() -> Arc<Hooks> {
        Arc::new(Hooks {
            unobserved: Mutex::new(None),
            error_handler: Mutex::new(None),
        })
    }

    pub(crate) fn set_unobserved(&self, hook: Option<Hook>) {
        *self.unobserved.lock() = hook;
    }

    pub(crate) fn set_error_handler(&self, hook: Option<Hook>) {
        *self.error_handler.lock() = hook;
    }

    fn unobserved(&self) -> Option<Hook> {
        self.unobserved.lock().clone()
    }

    fn error_handler(&self) -> Option<Hook> {
        self.error_handler.lock().clone()
    }
}

/// Which of the two paths reported an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnhandledKind {
    /// The last handle of a faulted task was dropped and nobody observed its error.
    Unobserved,
    /// An [`start_void`] future faulted (C#'s `async void`).
    AsyncVoid,
}

/// A task error nobody handled, as given to a hook or an error handler.
#[derive(Clone)]
pub struct UnhandledTaskError {
    task: TaskId,
    spawned_at: &'static Location<'static>,
    error: TaskError,
    kind: UnhandledKind,
}

impl UnhandledTaskError {
    /// The task that faulted.
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// Where it was spawned (or its completion source created).
    pub fn spawned_at(&self) -> &'static Location<'static> {
        self.spawned_at
    }

    /// Its error.
    pub fn error(&self) -> &TaskError {
        &self.error
    }

    /// How it went unhandled.
    pub fn kind(&self) -> UnhandledKind {
        self.kind
    }
}

impl fmt::Debug for UnhandledTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnhandledTaskError")
            .field("task", &self.task)
            .field("spawned_at", &self.spawned_at)
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for UnhandledTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            UnhandledKind::Unobserved => write!(
                f,
                "task {} (spawned at {}) faulted and its last handle was dropped without \
                 anyone observing the error: {}; await the task, call wait() or outcome(), \
                 or pass it to when_all before dropping it",
                self.task, self.spawned_at, self.error
            ),
            UnhandledKind::AsyncVoid => write!(
                f,
                "fire-and-forget task {} (started at {}) faulted and has no handle to report \
                 to: {}; handle the error inside the future, or start it with `start` and \
                 keep the task",
                self.task, self.spawned_at, self.error
            ),
        }
    }
}

/// Sets the process-wide unobserved-error hook (rule 3), replacing the default (print to
/// stderr) or the previous hook.
pub fn set_unobserved_error_hook<F>(hook: F)
where
    F: Fn(&UnhandledTaskError) + Send + Sync + 'static,
{
    sync::set_global_hook(UnhandledKind::Unobserved, Some(Box::new(hook)));
}

/// Restores the default process-wide unobserved-error hook (print to stderr).
pub fn reset_unobserved_error_hook() {
    sync::set_global_hook(UnhandledKind::Unobserved, None);
}

/// Sets the process-wide handler of `async void` errors that have no captured context to
/// go to (rule 4), replacing the default (print to stderr) or the previous handler.
pub fn set_async_void_error_handler<F>(handler: F)
where
    F: Fn(&UnhandledTaskError) + Send + Sync + 'static,
{
    sync::set_global_hook(UnhandledKind::AsyncVoid, Some(Box::new(handler)));
}

/// Restores the default process-wide `async void` error handler (print to stderr).
pub fn reset_async_void_error_handler() {
    sync::set_global_hook(UnhandledKind::AsyncVoid, None);
}

/// Reports an unobserved fault (rule 2) to the task's context's hook or the global one.
pub(crate) fn report_unobserved(
    hooks: Option<&Arc<Hooks>>,
    task: TaskId,
    spawned_at: &'static Location<'static>,
    error: TaskError,
) {
    let report = UnhandledTaskError {
        task,
        spawned_at,
        error,
        kind: UnhandledKind::Unobserved,
    };
    deliver(hooks.and_then(|hooks| hooks.unobserved()), &report);
}

/// Gives `report` to `hook`, else to the process-wide hook of its kind, else prints it;
/// a panicking hook is contained (rule 5).
fn deliver(hook: Option<Hook>, report: &UnhandledTaskError) {
    let contained = |call: &dyn Fn()| {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(call)) {
            eprintln!(
                "taskcheck: an error hook panicked ({}) while handling: {report}",
                panic_message(&*payload)
            );
        }
    };
    match hook {
        Some(hook) => contained(&|| (**hook)(report)),
        None => sync::with_global_hook(report.kind, |global| match global {
            Some(global) => contained(&|| global(report)),
            None => eprintln!("taskcheck: {report}"),
        }),
    }
}

/// Starts `future` eagerly with no handle: C#'s `async void` (rule 4).
///
/// Effects before its first suspension happen before this returns, as with
/// [`start`](crate::start); an error or a panic never reaches the caller. Prefer
/// [`start`](crate::start) and keeping (or [detaching](crate::Task::detach)) the task: its
/// error then stays observable.
#[track_caller]
pub fn start_void<F>(future: F)
where
    F: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    let captured = Context::current();
    let task = crate::start(future);
    let core = task.core.clone();
    // Its error goes to a handler, never to the unobserved hook (rule 4).
    core.mark_observed();
    let (id, location) = (core.id, core.location);
    let deliver = move || {
        let Some(Err(error)) = core.with_outcome(|outcome| outcome.cloned()) else {
            return;
        };
        let report = UnhandledTaskError {
            task: id,
            spawned_at: location,
            error,
            kind: UnhandledKind::AsyncVoid,
        };
        deliver_async_void(captured, report);
    };
    task.core.on_complete(Box::new(deliver));
}

/// An `async void` report on its way to a context's handler. If the context drops the job
/// without running it (it shut down first), the report goes to the process-wide handler
/// instead of being lost (rule 4).
struct PostedReport {
    report: Option<UnhandledTaskError>,
    handler: Option<Hook>,
}

impl PostedReport {
    fn deliver(mut self) {
        if let Some(report) = self.report.take() {
            deliver(self.handler.take(), &report);
        }
    }
}

impl Drop for PostedReport {
    fn drop(&mut self) {
        if let Some(report) = self.report.take() {
            deliver(None, &report);
        }
    }
}

fn deliver_async_void(captured: Option<Context>, report: UnhandledTaskError) {
    match captured {
        Some(context) => {
            let posted = PostedReport {
                report: Some(report),
                handler: context.hooks().error_handler(),
            };
            // Refused (shut down): the closure is dropped, and with it the report goes to
            // the process-wide handler here.
            let _ = context.post(move || posted.deliver());
        }
        None => deliver(None, &report),
    }
}
