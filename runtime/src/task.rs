//! `Task<T>`: a cheap, clonable, multi-await handle to an asynchronous operation's outcome.
//!
//! Any number of clones may await a task, concurrently or later; each gets the same
//! outcome (hence `T: Clone` for awaiting). A task is created by spawning a future (lazily
//! onto a context with [`Context::spawn`](crate::Context::spawn), eagerly with
//! [`start`](crate::start)), by a [`TaskCompletionSource`](crate::TaskCompletionSource), or
//! already complete ([`Task::from_result`]).
//!
//! Awaiting a task (`task.await`) resumes on the context captured at the suspension;
//! [`Task::configure_await`]`(false)` captures nothing. [`Task::wait`] blocks the calling
//! thread instead and refuses, with [`WaitError::WouldDeadlock`], a wait that can never end.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll};
use std::time::Duration;

use crate::awaiter::{
    Awaitable, Awaiter, ConfigureAwaitOptions, ConfiguredAwait, Continuation, Dependency,
};
use crate::cancellation::CancellationToken;
use crate::error::{message, ForeignCancellation, SpawnError, TaskError, TimeoutError};
use crate::raw_task::RawTask;
use crate::sync::{self, Arc};
use crate::task_cache;
use crate::task_core::{TaskCore, Waiter};
use crate::time::{Clock, TimerRace};
use crate::wait::{self, WaitError};

/// A task's identity, for messages and comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    pub(crate) fn next() -> Self {
        TaskId(sync::next_id())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a task is in its life. .NET's `Created` / `WaitingForActivation` / `Running` are
/// all `Pending` here; `RanToCompletion` is `Succeeded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Not complete yet.
    Pending,
    /// Completed with a value.
    Succeeded,
    /// Completed with one or more errors (panics included). Faulted wins over canceled.
    Faulted,
    /// Completed by cancellation.
    Canceled,
}

/// A handle to an asynchronous operation's outcome (.NET's `Task<TResult>`).
#[must_use = "a task runs whether or not it is awaited; drop the handle explicitly to detach it"]
pub struct Task<T> {
    pub(crate) core: Arc<TaskCore<T>>,
    /// The spawned task that completes this one, when there is one (for deadlock proofs).
    pub(crate) producer: Option<Arc<RawTask>>,
    /// The await in progress when this handle is polled as a future.
    awaiting: Option<ConfiguredAwait<TaskAwaiter<T>>>,
}

impl<T> Task<T> {
    pub(crate) fn from_parts(core: Arc<TaskCore<T>>, producer: Option<Arc<RawTask>>) -> Self {
        core.acquire_handle();
        Task {
            core,
            producer,
            awaiting: None,
        }
    }

    /// The parts, holding one handle of the task (unobserved.rs rule 2): the caller
    /// releases it with `TaskCore::release_handle`.
    pub(crate) fn into_parts(self) -> (Arc<TaskCore<T>>, Option<Arc<RawTask>>) {
        self.core.acquire_handle();
        (self.core.clone(), self.producer.clone())
    }

    /// How many continuations are registered on this task now (awaits in flight, and the
    /// combinators waiting for it). For leak checks in tests and models.
    #[doc(hidden)]
    pub fn registered_continuations(&self) -> usize {
        self.core.waiter_count()
    }

    /// Lets the task run on without a handle (fire-and-forget that stays accountable): if
    /// it faults and nobody observed the error, the error is reported to the
    /// unobserved-error hook when it completes (see [`set_unobserved_error_hook`]). The
    /// same as dropping the handle, said out loud.
    ///
    /// [`set_unobserved_error_hook`]: crate::set_unobserved_error_hook
    pub fn detach(self) {
        drop(self);
    }

    /// A task that already succeeded with `value`.
    ///
    /// For `()`, `bool` and integers in −1..=8 this is a shared cached task: no allocation
    /// (see `task_cache.rs`).
    #[track_caller]
    pub fn from_result(value: T) -> Self
    where
        T: 'static,
    {
        match task_cache::cached(&value) {
            Some(task) => task,
            None => Self::completed_at(value, Location::caller()),
        }
    }

    pub(crate) fn completed_at(value: T, location: &'static Location<'static>) -> Self {
        Self::from_parts(Arc::new(TaskCore::completed(Ok(value), location)), None)
    }

    /// A task that already failed with `error` (faulted or canceled).
    #[track_caller]
    pub fn from_error(error: TaskError) -> Self {
        Self::from_error_at(error, Location::caller())
    }

    pub(crate) fn from_error_at(error: TaskError, location: &'static Location<'static>) -> Self {
        Self::from_parts(Arc::new(TaskCore::completed(Err(error), location)), None)
    }

    /// A task that is already canceled.
    #[track_caller]
    pub fn canceled() -> Self {
        Self::from_error_at(TaskError::canceled(), Location::caller())
    }

    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.core.id
    }

    /// Its status now. Does not block.
    pub fn status(&self) -> TaskStatus {
        self.core.status()
    }

    /// Whether it has completed, in any way.
    pub fn is_completed(&self) -> bool {
        self.core.is_completed()
    }

    /// Whether it completed with a value.
    pub fn is_completed_successfully(&self) -> bool {
        self.status() == TaskStatus::Succeeded
    }

    /// Whether it faulted.
    pub fn is_faulted(&self) -> bool {
        self.status() == TaskStatus::Faulted
    }

    /// Whether it was canceled.
    pub fn is_canceled(&self) -> bool {
        self.status() == TaskStatus::Canceled
    }

    /// Awaits this task resuming on the captured context (`true`) or capturing nothing
    /// (`false`), as C#'s `ConfigureAwait(bool)`.
    pub fn configure_await(
        self,
        continue_on_captured_context: bool,
    ) -> ConfiguredAwait<TaskAwaiter<T>>
    where
        T: Clone,
    {
        Awaitable::configure_await(self, continue_on_captured_context)
    }

    /// Awaits this task with .NET 8's `ConfigureAwaitOptions`.
    pub fn configure_await_with(
        self,
        options: ConfigureAwaitOptions,
    ) -> ConfiguredAwait<TaskAwaiter<T>>
    where
        T: Clone,
    {
        Awaitable::configure_await_with(self, options)
    }
}

impl<T: Clone> Task<T> {
    /// The outcome if the task has completed, without blocking.
    ///
    /// Reading an error observes it: it will not be reported as unobserved.
    pub fn outcome(&self) -> Option<Result<T, TaskError>> {
        self.core.with_outcome_observing(|outcome| outcome.cloned())
    }

    /// Blocks the calling thread until the task completes (C#'s `.Result` / `.Wait()`).
    ///
    /// On a [`SingleThreadContext`](crate::SingleThreadContext)'s own thread, a wait whose
    /// task needs a continuation queued to that same context can never end. By default
    /// (`WaitMode::FailFast`) such a wait returns [`WaitError::WouldDeadlock`] as soon as
    /// the deadlock is certain, naming the context, the thread, the awaited task and the
    /// stuck continuation. A wait that needs nothing from the context works.
    pub fn wait(&self) -> Result<T, WaitError> {
        wait::wait_for(&self.core, self.producer.as_ref())?;
        self.outcome()
            .unwrap_or_else(|| {
                let bug = format!(
                    "taskcheck bug: wait on task {} returned before it completed; please report it",
                    self.core.id
                );
                Err(TaskError::from_faults(vec![bug.into()]))
            })
            .map_err(WaitError::Task)
    }
}

impl<T: Send + 'static> Task<T> {
    /// Runs `future` on the default thread pool (C#'s `Task.Run`).
    ///
    /// Model builds (`--cfg loom` / `--cfg shuttle`) have no default pool: there the task
    /// is faulted with a [`SpawnError`]; spawn onto an explicit [`ThreadPool`](crate::ThreadPool).
    #[track_caller]
    pub fn run<F>(future: F) -> Task<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
    {
        match sync::default_pool() {
            Some(pool) => pool.spawn(future),
            None => Task::from_error(TaskError::from_error(SpawnError { context: None })),
        }
    }
}

impl<T: Send + 'static> Task<T> {
    /// Runs `future` on the default thread pool with a cancellation token (C#'s
    /// `Task.Run(func, token)`).
    ///
    /// If `token` is canceled before the body starts, the body never runs and the task
    /// ends Canceled. A body that ends with a cancellation carrying `token` (while `token`
    /// is canceled) ends Canceled; any other cancellation — without a token, or from
    /// another token — faults the task, as .NET does for `Task.Run` with a token. The token
    /// does not stop a running body: the body decides (cancellation is cooperative); nor does
    /// it remove a queued task from its pool: a task canceled while queued ends Canceled when
    /// a worker picks it up, without running its body.
    ///
    /// This is .NET's rule for `Task.Run(Action, token)`. Its `Task.Run(Func<Task>, token)`
    /// overload is laxer (any cancellation from the inner task ends the proxy Canceled);
    /// taskcheck keeps the stricter rule so that a cancellation the caller did not ask for
    /// cannot pass for one it did. The fault is a
    /// [`ForeignCancellation`](crate::ForeignCancellation) carrying the body's error.
    #[track_caller]
    pub fn run_with_token<F>(future: F, token: &CancellationToken) -> Task<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
    {
        Task::run(with_token(future, token.clone()))
    }
}

/// The body of a task started with a token (see [`Task::run_with_token`]).
pub(crate) async fn with_token<F, T>(future: F, token: CancellationToken) -> Result<T, TaskError>
where
    F: Future<Output = Result<T, TaskError>>,
{
    token.throw_if_cancellation_requested()?;
    match future.await {
        Err(error) if error.is_canceled() => {
            let ours =
                error.cancellation_token() == Some(&token) && token.is_cancellation_requested();
            if ours {
                Err(error)
            } else {
                let task = sync::with_current_task(|task| task.map(|task| task.id));
                Err(TaskError::from_error(ForeignCancellation { task, error }))
            }
        }
        outcome => outcome,
    }
}

impl<T: Clone + Send + 'static> Task<T> {
    /// A task with this task's outcome, unless `timeout` elapses first on the system clock
    /// (it then faults with a [`TimeoutError`]) or `token` is canceled first (it then ends
    /// Canceled, carrying `token`) — .NET's `WaitAsync(timeout, token)`. `None` waits
    /// without a time limit. This task is untouched either way: a timeout or a cancellation
    /// only stops the waiting, not the work.
    ///
    /// A blocking [`wait`](Self::wait) on the returned task cannot see through it to this
    /// task's producer, so its deadlock proof does not apply there (as for a completion
    /// source's task): on a single-thread context's own thread, await it instead.
    #[track_caller]
    pub fn wait_async(&self, timeout: Option<Duration>, token: &CancellationToken) -> Task<T> {
        self.wait_async_on(&Clock::system(), timeout, token)
    }

    /// [`wait_async`](Self::wait_async) with the timeout measured on `clock`.
    ///
    /// Already complete, or nothing could end the wait early (no timeout, a token that can
    /// never be canceled): this task itself. `token` already canceled: a canceled task. A
    /// zero timeout on a pending task: a task faulted with [`TimeoutError`] at once. A
    /// timeout beyond the clock's range never elapses. Whatever finishes first releases
    /// the timer, the token registration and the continuation on this task.
    #[track_caller]
    pub fn wait_async_on(
        &self,
        clock: &Clock,
        timeout: Option<Duration>,
        token: &CancellationToken,
    ) -> Task<T> {
        if self.is_completed() || (timeout.is_none() && !token.can_be_canceled()) {
            return self.clone();
        }
        if token.is_cancellation_requested() {
            return Task::from_error(TaskError::canceled_by(token));
        }
        let timed_out = |after| {
            TaskError::from_error(TimeoutError {
                task: self.core.id,
                after,
            })
        };
        if timeout == Some(Duration::ZERO) {
            return Task::from_error(timed_out(Duration::ZERO));
        }
        let core = Arc::new(TaskCore::new(Location::caller(), true));
        let result = Task::from_parts(core.clone(), None);
        let race = TimerRace::new(clock.clone());
        if let Some(after) = timeout {
            let core = core.clone();
            let race_for_timer = race.clone();
            let error = timed_out(after);
            let timer = clock.schedule(
                after,
                Box::new(move || {
                    if core.try_complete(Err(error)).is_ok() {
                        race_for_timer.finish();
                    }
                }),
            );
            race.set_timer(timer);
        }
        let registration = {
            let core = core.clone();
            let race = race.clone();
            let canceled = TaskError::canceled_by(token);
            token.register(move || {
                if core.try_complete(Err(canceled)).is_ok() {
                    race.finish();
                }
            })
        };
        race.set_registration(registration);
        let copy = {
            let source = self.core.clone();
            let race = race.clone();
            Box::new(move || {
                // Passing the error on observes it (unobserved.rs rule 1).
                let outcome = source.with_outcome_observing(|outcome| outcome.cloned());
                if let Some(outcome) = outcome {
                    if core.try_complete(outcome).is_ok() {
                        race.finish();
                    }
                }
            })
        };
        if let Some(key) = self.core.on_complete(copy) {
            let source = self.core.clone();
            race.set_cleanup(Box::new(move || {
                source.unregister(key);
            }));
        }
        result
    }
}

impl Task<()> {
    /// A task that already succeeded (C#'s `Task.CompletedTask`).
    #[track_caller]
    pub fn completed() -> Self {
        Task::from_result(())
    }
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task::from_parts(self.core.clone(), self.producer.clone())
    }
}

/// The last handle of a faulted task whose error nobody observed reports it (see
/// `unobserved.rs`).
impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        // An await in flight is a handle of its own: end it first.
        self.awaiting = None;
        self.core.release_handle();
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.core.id)
            .field("status", &self.status())
            .field("created_at", &self.core.location)
            .finish()
    }
}

/// A plain `.await` resumes on the captured context.
impl<T: Clone> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let awaiting = match &mut this.awaiting {
            Some(awaiting) => awaiting,
            slot @ None => slot.insert(ConfiguredAwait::new(
                TaskAwaiter::new(this.core.clone(), this.producer.clone()),
                ConfigureAwaitOptions::default(),
            )),
        };
        let poll = Pin::new(awaiting).poll(cx);
        if poll.is_ready() {
            this.awaiting = None;
        }
        poll
    }
}

impl<T: Clone> Awaitable for Task<T> {
    type Awaiter = TaskAwaiter<T>;

    fn get_awaiter(self) -> TaskAwaiter<T> {
        TaskAwaiter::new(self.core.clone(), self.producer.clone())
    }
}

/// The awaiter of a [`Task`] (C#'s `TaskAwaiter<TResult>`).
///
/// Dropping it while suspended withdraws its continuation, so an abandoned await leaks no
/// waker.
pub struct TaskAwaiter<T> {
    core: Arc<TaskCore<T>>,
    producer: Option<Arc<RawTask>>,
    key: Option<u64>,
}

impl<T> TaskAwaiter<T> {
    fn new(core: Arc<TaskCore<T>>, producer: Option<Arc<RawTask>>) -> Self {
        core.acquire_handle();
        TaskAwaiter {
            core,
            producer,
            key: None,
        }
    }
}

impl<T: Clone> Awaiter for TaskAwaiter<T> {
    type Output = Result<T, TaskError>;

    fn is_completed(&self) -> bool {
        self.core.is_completed()
    }

    fn on_completed(&mut self, continuation: Continuation) {
        match self.core.register(Waiter::Resume(continuation)) {
            Ok(key) => self.key = Some(key),
            // Completed meanwhile: resume now, through the scheduler.
            Err(Waiter::Resume(continuation)) => continuation.resume(),
            Err(Waiter::Callback(_)) => unreachable!("register gives back what it was given"),
        }
    }

    fn get_result(&mut self) -> Result<T, TaskError> {
        self.key = None;
        self.core.with_outcome_observing(|outcome| match outcome {
            Some(outcome) => outcome.clone(),
            None => Err(TaskError::from_faults(vec![message(
                "TaskAwaiter::get_result was called before the task completed; call it only \
                 after is_completed() returns true or the continuation resumed",
            )])),
        })
    }

    fn dependency(&self) -> Dependency {
        Dependency(self.producer.clone())
    }
}

impl<T> Drop for TaskAwaiter<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.core.unregister(key);
        }
        self.core.release_handle();
    }
}

impl<T> fmt::Debug for TaskAwaiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskAwaiter")
            .field("task", &self.core.id)
            .finish_non_exhaustive()
    }
}
