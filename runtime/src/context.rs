//! Scheduling contexts (.NET's `SynchronizationContext`) and the ambient current context.
//!
//! A [`Context`] is a cheap handle to somewhere work can run: a [`ThreadPool`] (many
//! workers, work stealing) or a [`SingleThreadContext`] (one thread pumping a queue, like a
//! UI loop). Code running on a context sees it as [`Context::current`]; an `.await` that
//! suspends there captures it, and the rest of the task is posted back to it.
//!
//! What a context queues is a [`Job`]: either a spawned task's next poll, or a callback.
//! Tasks are queued as themselves (not as opaque closures) so a blocked wait can see *which*
//! task is stuck in which queue — that is how [`crate::WaitError::WouldDeadlock`] is proved.
//!
//! [`ThreadPool`]: crate::ThreadPool
//! [`SingleThreadContext`]: crate::SingleThreadContext

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::task::Waker;

use crate::error::{panic_message, SpawnError, TaskError};
use crate::raw_task::RawTask;
use crate::single_thread::SingleShared;
use crate::sync::{self, Arc};
use crate::task::Task;
use crate::thread_pool::PoolShared;
use crate::unobserved::{self, Hooks, UnhandledTaskError};

/// A handle to a scheduling context: a thread pool or a single-thread context.
///
/// Clones refer to the same context. Holding a handle does not keep the context's threads
/// running: its owner ([`crate::ThreadPool`] or [`crate::SingleThreadContext`]) does.
#[derive(Clone)]
pub struct Context {
    pub(crate) kind: ContextKind,
}

#[derive(Clone)]
pub(crate) enum ContextKind {
    Pool(Arc<PoolShared>),
    Single(Arc<SingleShared>),
}

/// A context's identity, for comparisons and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextId(pub(crate) u64);

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Work queued on a context.
pub(crate) enum Job {
    /// The next poll of a spawned task.
    Task(Arc<RawTask>),
    /// A posted callback.
    Callback(Box<dyn FnOnce() + Send + 'static>),
    /// A wake for an await polled by another executor, hopping to the context it
    /// captured. Dropped unrun, it still wakes: the await must learn its task completed.
    Wake(Waker),
}

impl Job {
    /// Runs the job on the calling thread. Panics in callbacks are caught: a worker thread
    /// never dies (task bodies catch their own panics and fault their task).
    /// Returns whether it did anything (a task job whose task already ran inline does not).
    pub(crate) fn run(self) -> bool {
        match self {
            Job::Task(task) => return RawTask::run_scheduled(&task),
            Job::Wake(waker) => contain_panic("another executor's waker", || waker.wake()),
            // A panicking posted callback has no task to fault: it is reported, where .NET's
            // thread pool would crash the process.
            Job::Callback(callback) => contain_panic("a posted callback", callback),
        }
        true
    }

    /// Drops the job without running it because `context` refused it: a task is faulted
    /// as abandoned, so whoever awaits it learns why instead of hanging.
    pub(crate) fn abandon(self, context: &str) {
        match self {
            Job::Task(task) => task.abandon(format!(
                "{context} was shut down before the task's next step could run; keep the \
                 context alive until the work it was given has finished"
            )),
            Job::Wake(waker) => contain_panic("another executor's waker", || waker.wake()),
            Job::Callback(_) => {}
        }
    }
}

/// Runs `f`, reporting a panic on stderr instead of unwinding into a runtime thread (a
/// worker or a pump never dies).
pub(crate) fn contain_panic(what: &str, f: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let message = panic_message(&*payload);
        eprintln!("taskcheck: {what} panicked ({message}); the runtime thread carries on");
    }
}

impl Context {
    /// The calling thread's current context, if it is running on one.
    pub fn current() -> Option<Context> {
        sync::current_context()
    }

    /// This context's id.
    pub fn id(&self) -> ContextId {
        match &self.kind {
            ContextKind::Pool(pool) => pool.id,
            ContextKind::Single(single) => single.id,
        }
    }

    /// This context's name (for messages).
    pub fn name(&self) -> &str {
        match &self.kind {
            ContextKind::Pool(pool) => &pool.name,
            ContextKind::Single(single) => &single.name,
        }
    }

    /// Whether this is the calling thread's current context.
    pub fn is_current(&self) -> bool {
        Context::current().is_some_and(|current| current.id() == self.id())
    }

    /// Posts `callback` to run on this context (`SynchronizationContext.Post`).
    ///
    /// Fails with [`SpawnError`] when the context has been shut down.
    pub fn post(&self, callback: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
        self.post_job(Job::Callback(Box::new(callback)))
            .map_err(|_| self.spawn_error())
    }

    /// Spawns `future` lazily: its first poll is queued on this context.
    ///
    /// A context that has been shut down refuses it: the returned task is already faulted
    /// with a [`SpawnError`] (use [`Context::try_spawn`] to get the error at the call).
    #[track_caller]
    pub fn spawn<F, T>(&self, future: F) -> Task<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        let location = Location::caller();
        self.try_spawn_at(future, location)
            .unwrap_or_else(|error| Task::from_error_at(TaskError::from_error(error), location))
    }

    /// Spawns `future` lazily, or reports at once that this context refuses work.
    #[track_caller]
    pub fn try_spawn<F, T>(&self, future: F) -> Result<Task<T>, SpawnError>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        self.try_spawn_at(future, Location::caller())
    }

    fn try_spawn_at<F, T>(
        &self,
        future: F,
        location: &'static Location<'static>,
    ) -> Result<Task<T>, SpawnError>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        let (task, raw) = RawTask::spawn_parts(future, location, false);
        task.core.set_hooks(Some(self.hooks().clone()));
        if RawTask::schedule_first(&raw, self) {
            Ok(task)
        } else {
            // The caller gets the error instead of the task: its abandonment is not an
            // unobserved fault.
            task.core.mark_observed();
            Err(self.spawn_error())
        }
    }

    /// Sets the hook that receives the unobserved faults of tasks spawned onto this context
    /// (the rules: [`set_unobserved_error_hook`](crate::set_unobserved_error_hook)). It runs
    /// on the thread that drops the last handle or completes the task.
    pub fn set_unobserved_error_hook<F>(&self, hook: F)
    where
        F: Fn(&UnhandledTaskError) + Send + Sync + 'static,
    {
        self.hooks().set_unobserved(Some(unobserved::hook(hook)));
    }

    /// Removes this context's unobserved-error hook: the process-wide one applies again.
    pub fn reset_unobserved_error_hook(&self) {
        self.hooks().set_unobserved(None);
    }

    /// Sets the handler of errors from [`start_void`](crate::start_void) futures started
    /// on this context (C#'s `async void` errors posted to the captured
    /// `SynchronizationContext`); it runs on this context.
    pub fn set_error_handler<F>(&self, handler: F)
    where
        F: Fn(&UnhandledTaskError) + Send + Sync + 'static,
    {
        self.hooks()
            .set_error_handler(Some(unobserved::hook(handler)));
    }

    /// Removes this context's error handler: the process-wide one applies again.
    pub fn reset_error_handler(&self) {
        self.hooks().set_error_handler(None);
    }

    pub(crate) fn hooks(&self) -> &Arc<Hooks> {
        match &self.kind {
            ContextKind::Pool(pool) => &pool.hooks,
            ContextKind::Single(single) => &single.hooks,
        }
    }

    /// Queues `job`; gives it back if the context refuses it.
    pub(crate) fn post_job(&self, job: Job) -> Result<(), Job> {
        match &self.kind {
            ContextKind::Pool(pool) => pool.post(job),
            ContextKind::Single(single) => single.post(job),
        }
    }

    pub(crate) fn spawn_error(&self) -> SpawnError {
        SpawnError {
            context: Some(self.describe()),
        }
    }

    /// "thread pool 'x' (#3)" / "single-thread context 'ui' (#4)".
    pub(crate) fn describe(&self) -> String {
        let kind = match self.kind {
            ContextKind::Pool(_) => "thread pool",
            ContextKind::Single(_) => "single-thread context",
        };
        format!("{kind} '{}' ({})", self.name(), self.id())
    }

    pub(crate) fn as_pool(&self) -> Option<&Arc<PoolShared>> {
        match &self.kind {
            ContextKind::Pool(pool) => Some(pool),
            ContextKind::Single(_) => None,
        }
    }

    pub(crate) fn as_single(&self) -> Option<&Arc<SingleShared>> {
        match &self.kind {
            ContextKind::Single(single) => Some(single),
            ContextKind::Pool(_) => None,
        }
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Makes `context` the calling thread's current context until dropped.
pub(crate) struct EnterGuard {
    previous: Option<Context>,
}

impl EnterGuard {
    pub(crate) fn new(context: Option<Context>) -> Self {
        EnterGuard {
            previous: sync::swap_current_context(context),
        }
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        sync::swap_current_context(self.previous.take());
    }
}
