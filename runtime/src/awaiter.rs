//! The awaiter contract (C#'s `GetAwaiter` / `IsCompleted` / `OnCompleted` / `GetResult`)
//! and `configure_await`.
//!
//! Any type that implements [`Awaitable`] can be awaited with the same context capture and
//! `configure_await` behaviour as [`Task`](crate::Task), which goes through this contract
//! itself. The runtime, not the awaiter, does the capturing: an awaiter only says whether it
//! is complete, accepts one [`Continuation`], and hands out its result.
//!
//! # The await protocol ([`ConfiguredAwait`])
//!
//! 1. If the awaiter is already complete, the result is returned at once: an awaitable that
//!    is already complete never suspends and never hops context (unless
//!    [`ConfigureAwaitOptions::FORCE_YIELDING`] asks it to).
//! 2. Otherwise the await *captures*: with `CONTINUE_ON_CAPTURED_CONTEXT` (the default) the
//!    calling thread's current context, else nothing. It tells the running task where to
//!    resume, then hands the awaiter a [`Continuation`] and returns `Pending`.
//! 3. When the operation completes, the awaiter calls [`Continuation::resume`]; the task is
//!    posted to the captured context (or, having captured nothing, to the default pool).
//! 4. On the next poll the awaiter is complete and the result is taken.
//!
//! An awaitable is turned into a future with [`Awaitable::configure_await`] (or
//! [`Awaitable::configure_await_with`]); a type can also implement `IntoFuture` by returning
//! `ConfiguredAwait::new(self.get_awaiter(), ConfigureAwaitOptions::default())`, so a
//! plain `.await` works on it.

use std::fmt;
use std::future::Future;
use std::ops::BitOr;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll, Waker};

use crate::context::{Context, Job};
use crate::raw_task::{RawTask, Resume, MAX_INLINE_DEPTH};
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc};
use crate::task::Task;

/// The awaiter side of the contract (C#'s `INotifyCompletion` awaiter).
///
/// The runtime calls `is_completed` first; if false, `on_completed` once with the
/// continuation to resume; after the continuation resumed (or whenever `is_completed`
/// returns true) `get_result` once.
pub trait Awaiter: Unpin {
    /// What `get_result` returns.
    type Output;

    /// Whether the operation has completed (C#'s `IsCompleted`).
    fn is_completed(&self) -> bool;

    /// Registers the continuation to resume when the operation completes (C#'s
    /// `OnCompleted`). The awaiter must call [`Continuation::resume`] exactly once: when it
    /// completes, or at once if it completed meanwhile.
    fn on_completed(&mut self, continuation: Continuation);

    /// The operation's result (C#'s `GetResult`); called once it is complete.
    fn get_result(&mut self) -> Self::Output;

    /// The spawned task whose completion this awaiter waits for, if any. A blocked wait
    /// follows it to prove a deadlock; the default, "none", is always safe.
    fn dependency(&self) -> Dependency {
        Dependency::none()
    }
}

/// A type that can be awaited through the awaiter contract (C#'s `GetAwaiter`).
pub trait Awaitable: Sized {
    /// The awaiter this awaitable hands out.
    type Awaiter: Awaiter;

    /// Starts an await (C#'s `GetAwaiter`).
    fn get_awaiter(self) -> Self::Awaiter;

    /// Awaits, resuming on the captured context (`true`, the default of a plain `.await`)
    /// or capturing nothing (`false`): C#'s `ConfigureAwait(bool)`.
    fn configure_await(self, continue_on_captured_context: bool) -> ConfiguredAwait<Self::Awaiter> {
        let options = if continue_on_captured_context {
            ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT
        } else {
            ConfigureAwaitOptions::NONE
        };
        ConfiguredAwait::new(self.get_awaiter(), options)
    }

    /// Awaits with .NET 8's `ConfigureAwaitOptions`.
    fn configure_await_with(
        self,
        options: ConfigureAwaitOptions,
    ) -> ConfiguredAwait<Self::Awaiter> {
        ConfiguredAwait::new(self.get_awaiter(), options)
    }
}

/// The task an awaiter depends on, for deadlock detection (see [`Awaiter::dependency`]).
#[derive(Clone, Default)]
pub struct Dependency(pub(crate) Option<Arc<RawTask>>);

impl Dependency {
    /// No known dependency.
    pub fn none() -> Self {
        Dependency(None)
    }

    /// The awaiter completes when `task` does.
    pub fn on<T>(task: &Task<T>) -> Self {
        Dependency(task.producer.clone())
    }
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(task) => write!(f, "Dependency({})", &**task),
            None => f.write_str("Dependency(none)"),
        }
    }
}

/// .NET 8's `ConfigureAwaitOptions`, as flags.
///
/// `SuppressThrowing` has no flag: in Rust an await never throws (it returns a `Result`).
/// Its use, "wait for completion and ignore the outcome", is
/// [`ConfiguredAwait::suppress_throwing`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConfigureAwaitOptions(u8);

impl ConfigureAwaitOptions {
    /// Capture nothing, never force a yield (C#'s `ConfigureAwait(false)`).
    pub const NONE: Self = ConfigureAwaitOptions(0);
    /// Resume on the context captured at the suspension (a plain `.await`).
    pub const CONTINUE_ON_CAPTURED_CONTEXT: Self = ConfigureAwaitOptions(1);
    /// Suspend and resume through the scheduler even when the awaitable is already
    /// complete (C#'s `ForceYielding`); never runs the continuation inline.
    pub const FORCE_YIELDING: Self = ConfigureAwaitOptions(2);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl Default for ConfigureAwaitOptions {
    fn default() -> Self {
        ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT
    }
}

impl BitOr for ConfigureAwaitOptions {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        ConfigureAwaitOptions(self.0 | other.0)
    }
}

impl fmt::Debug for ConfigureAwaitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(Self::CONTINUE_ON_CAPTURED_CONTEXT) {
            names.push("CONTINUE_ON_CAPTURED_CONTEXT");
        }
        if self.contains(Self::FORCE_YIELDING) {
            names.push("FORCE_YIELDING");
        }
        if names.is_empty() {
            names.push("NONE");
        }
        f.write_str(&names.join(" | "))
    }
}

/// What an awaiter resumes when its operation completes.
///
/// It carries the waker of the awaiting task and what the await captured.
pub struct Continuation {
    waker: Waker,
    /// The captured context. Used directly only when no spawned task is polling the
    /// await (a foreign executor); a spawned task keeps its resume target itself.
    capture: Option<Context>,
    in_task: bool,
}

impl Continuation {
    /// Resumes the awaiting code: it is queued to the captured context (or, having
    /// captured nothing, to the default pool). Never runs it on the calling thread, so an
    /// awaiter may call this while holding its own locks.
    pub fn resume(self) {
        self.dispatch(false);
    }

    /// Whether [`dispatch`](Self::dispatch) with inline permission would run the awaiting
    /// code on this thread now: the thread is on the context the await captured (or it
    /// captured nothing), and inline runs are not nested too deep.
    pub(crate) fn would_run_inline_here(&self) -> bool {
        let here = self.capture.as_ref().is_none_or(Context::is_current);
        here && sync::inline_depth_add(0) < MAX_INLINE_DEPTH
    }

    /// Resumes, running the awaiting task inline on this thread when `inline_allowed` and
    /// the thread already is on the context the await captured.
    pub(crate) fn dispatch(self, inline_allowed: bool) {
        if self.in_task {
            // The task knows its resume target; grant (or not) an inline run.
            sync::set_inline_permit(inline_allowed);
            self.waker.wake();
            sync::set_inline_permit(false);
            return;
        }
        match self.capture {
            Some(context) if !(inline_allowed && context.is_current()) => {
                if let Err(job) = context.post_job(Job::Wake(self.waker)) {
                    // The captured context is gone: wake here rather than never.
                    let _ = job.run();
                }
            }
            _ => self.waker.wake(),
        }
    }
}

impl fmt::Debug for Continuation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Continuation")
            .field("capture", &self.capture)
            .finish_non_exhaustive()
    }
}

/// Steps 1–2 of the await protocol; `Ready` once the awaiter is complete. `suspended` holds
/// where the await asked to resume, once it has suspended.
fn poll_completion<A: Awaiter>(
    awaiter: &mut A,
    options: ConfigureAwaitOptions,
    suspended: &mut Option<Resume>,
    cx: &mut PollContext<'_>,
) -> Poll<()> {
    let force_yield = options.contains(ConfigureAwaitOptions::FORCE_YIELDING);
    if awaiter.is_completed() && (suspended.is_some() || !force_yield) {
        return Poll::Ready(());
    }
    if let Some(resume) = suspended {
        // Polled again before completion (a spurious or shared wake): the continuation
        // stands; tell the task again what it is waiting for (raw_task rule 4).
        note_suspension(resume.clone(), awaiter);
        return Poll::Pending;
    }
    let capture = if options.contains(ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT)
        && !knobs::on(Knob::IgnoreCapture)
    {
        Context::current()
    } else {
        None
    };
    let resume = capture.clone().map_or(Resume::Anywhere, Resume::On);
    let in_task = note_suspension(resume.clone(), awaiter);
    let continuation = Continuation {
        waker: cx.waker().clone(),
        capture,
        in_task,
    };
    *suspended = Some(resume);
    if awaiter.is_completed() {
        // Only reachable with FORCE_YIELDING: yield through the scheduler.
        continuation.resume();
    } else {
        awaiter.on_completed(continuation);
    }
    Poll::Pending
}

/// Tells the spawned task being polled, if any, where to resume and what it waits for;
/// whether a spawned task is being polled.
fn note_suspension<A: Awaiter>(resume: Resume, awaiter: &A) -> bool {
    let dependency = awaiter.dependency().0;
    sync::with_current_task(|task| match task {
        Some(task) => {
            task.note_suspension(resume, dependency);
            true
        }
        None => false,
    })
}

/// A future awaiting an [`Awaiter`] with [`ConfigureAwaitOptions`].
#[must_use = "futures do nothing unless awaited"]
pub struct ConfiguredAwait<A> {
    awaiter: A,
    options: ConfigureAwaitOptions,
    suspended: Option<Resume>,
}

impl<A: Awaiter> ConfiguredAwait<A> {
    /// Awaits `awaiter` with `options`.
    pub fn new(awaiter: A, options: ConfigureAwaitOptions) -> Self {
        ConfiguredAwait {
            awaiter,
            options,
            suspended: None,
        }
    }

    /// Waits for completion and ignores the outcome (.NET 8's `SuppressThrowing`).
    pub fn suppress_throwing(self) -> SuppressThrowing<A> {
        SuppressThrowing(self)
    }
}

impl<A: Awaiter> Future for ConfiguredAwait<A> {
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<A::Output> {
        let this = self.get_mut();
        poll_completion(&mut this.awaiter, this.options, &mut this.suspended, cx)
            .map(|()| this.awaiter.get_result())
    }
}

impl<A> fmt::Debug for ConfiguredAwait<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredAwait")
            .field("options", &self.options)
            .field("suspended", &self.suspended.is_some())
            .finish_non_exhaustive()
    }
}

/// A future that waits for an awaiter to complete and ignores its outcome.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct SuppressThrowing<A>(ConfiguredAwait<A>);

impl<A: Awaiter> Future for SuppressThrowing<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()> {
        let inner = &mut self.get_mut().0;
        poll_completion(&mut inner.awaiter, inner.options, &mut inner.suspended, cx)
    }
}
