//! Cooperative cancellation: [`CancellationTokenSource`], [`CancellationToken`],
//! [`CancellationTokenRegistration`] (.NET's types of the same names).
//!
//! A token *asks*; code decides. Nothing is stopped by a token on its own: an operation
//! polls [`CancellationToken::is_cancellation_requested`], returns
//! [`CancellationToken::throw_if_cancellation_requested`]'s error, awaits
//! [`CancellationToken::cancelled`], or registers a callback.
//!
//! # Rules
//!
//! 1. **Cancel runs the callbacks synchronously, on the calling thread, last registered
//!    first (LIFO).** "Cancellation requested" is already true when the first callback runs.
//!    A failing callback (a panic) does not stop the others: the failures are collected and
//!    returned together, in the order they happened, after every callback ran
//!    ([`CancelError::CallbacksFailed`]). [`CancellationTokenSource::cancel_throw_on_first`]
//!    stops at the first failure instead; the callbacks after it never run (and stay
//!    registered: their `unregister` returns `true`).
//! 2. **Cancel is idempotent.** Only the first call runs callbacks; a second or concurrent
//!    call returns `Ok(())` at once, without waiting for callbacks running elsewhere.
//! 3. **Registering on a canceled token runs the callback at once**, synchronously inside
//!    `register`, on the registering thread (a panic there propagates to the caller, as
//!    .NET's `Register` throws). Registering on a token that can never be canceled
//!    ([`CancellationToken::none`]) or on a disposed, uncanceled source stores nothing.
//! 4. **Unregister never waits** and returns whether it removed the callback: for a
//!    registration on a live source, exactly one of {`unregister` returned `true`, the
//!    callback ran} happens — unless a `try_reset` dropped the callback first (rule 9:
//!    then neither).
//! 5. **Dropping a registration** (or [`dispose`](CancellationTokenRegistration::dispose))
//!    unregisters it and, if its callback is running on another thread, waits until it has
//!    finished: once the drop returns, the callback is not running and never will. Called
//!    from inside a callback on the cancelling thread it returns at once (no self-deadlock).
//! 6. **Linked sources** ([`CancellationTokenSource::linked`]) register on each parent; a
//!    parent's cancel cancels the linked source synchronously, inside the parent's cancel, in
//!    the LIFO slot of that registration. A parent already canceled cancels the linked
//!    source at creation. Canceling the linked source does not touch its parents; disposing
//!    (or dropping) it unregisters from them.
//! 7. **Timers.** [`cancel_after`](CancellationTokenSource::cancel_after) runs on the
//!    source's [`Clock`]; re-arming moves the due time; it is a no-op once canceled. The
//!    cancel comes from the timer path, never inline, even for a zero delay; a source
//!    *created* with a zero delay is canceled synchronously. A delay beyond the clock's
//!    range never fires (the clock's rule 3). Failures of callbacks run by a timer have no
//!    caller to return to: they are printed to stderr.
//! 8. **Dispose** (also on drop of the source): stops the timer, unregisters a linked
//!    source from its parents. Afterwards `cancel`, `cancel_after` and `try_reset` return
//!    [`CancelError::Disposed`]; the token keeps reporting the state it had; registering on
//!    an uncanceled disposed source stores nothing (.NET's behaviour). Callbacks registered
//!    before stay registered (so rule 4 still holds for them: `unregister` returns `true`)
//!    but can no longer run, and their closures are dropped at the dispose (so what they
//!    own — a delay's task, a linked source — is released).
//! 9. **`try_reset`** returns a never-canceled source to its initial state for reuse: it
//!    stops the timer and drops every registered callback without running it (their
//!    `unregister` then returns `false`, as in .NET). It returns `false`, changing nothing,
//!    once cancellation has been requested or when a timer is already firing.
//!
//! Differences from .NET, all deliberate: a source is disposed when dropped; `token()`
//! works after dispose (the token answers from the final state) instead of throwing; a
//! registration unregisters when dropped (call [`CancellationTokenRegistration::detach`]
//! to keep the callback for the source's lifetime, which is .NET's default).

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as PollContext, Poll, Waker};
use std::time::Duration;

use crate::error::{panic_message, Fault};
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, AtomicBool, Condvar, Mutex, Ordering, ThreadId};
use crate::time::{Clock, TimerKey};

/// A callback as stored: it returns the failures it wants reported (a linked source's
/// callback returns its own callbacks' failures); a panic is caught around it.
type Callback = Box<dyn FnOnce() -> Vec<Fault> + Send + 'static>;

/// The shared state of one source, reached from its tokens and registrations.
struct SourceInner {
    id: u64,
    /// "Cancellation requested": raised (under the lock) before the first callback runs,
    /// read without the lock by `is_cancellation_requested`.
    requested: AtomicBool,
    clock: Clock,
    state: Mutex<State>,
    /// Signalled each time a callback finishes, for registrations dropped meanwhile.
    callback_done: Condvar,
}

struct State {
    /// Registered callbacks, oldest first; cancel pops from the end (LIFO). `None` is a
    /// callback dropped by dispose: still registered (so `unregister` returns `true`), but
    /// its closure is gone, which breaks reference cycles through it (rule 8).
    callbacks: Vec<(u64, Option<Callback>)>,
    next_id: u64,
    phase: Phase,
    disposed: bool,
    timer: Option<TimerKey>,
    /// A linked source's registrations on its parents.
    links: Vec<CancellationTokenRegistration>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    /// Cancel is running callbacks on `thread`; `executing` is the one running now.
    Notifying {
        thread: ThreadId,
        executing: Option<u64>,
    },
    /// Cancel has finished running callbacks.
    Notified,
}

/// Signals cancellation to the tokens it hands out (.NET's `CancellationTokenSource`).
///
/// Share it between threads with an `Arc` (all methods take `&self`). Dropping it
/// disposes it (rule 8 of the module docs).
pub struct CancellationTokenSource {
    inner: Arc<SourceInner>,
}

/// Whether cancellation was requested, and a way to be told (.NET's `CancellationToken`).
///
/// Cheap to clone; two tokens are equal when they come from the same source (all
/// [`none`](Self::none) tokens are equal).
#[derive(Clone, Default)]
pub struct CancellationToken {
    inner: Option<Arc<SourceInner>>,
}

/// A callback registered on a token (.NET's `CancellationTokenRegistration`).
///
/// Dropping it unregisters the callback and waits for it if it is running on another
/// thread (rule 5); [`detach`](Self::detach) keeps the callback registered instead.
#[must_use = "dropping a registration unregisters its callback; call .detach() to keep the \
              callback registered for the source's lifetime"]
pub struct CancellationTokenRegistration {
    /// `None` for an empty registration (nothing was stored, rule 3) or after detach.
    inner: Option<Arc<SourceInner>>,
    id: u64,
}

/// The error of an operation on a source.
#[derive(Debug)]
#[non_exhaustive]
pub enum CancelError {
    /// The source was disposed (or dropped) before the call.
    Disposed {
        /// The source's id (as shown by its `Debug` output and tokens).
        source: u64,
    },
    /// Cancellation happened, but callbacks failed; their failures in the order they ran
    /// (rule 1).
    CallbacksFailed {
        /// Each failure: a caught panic (with its message) or a linked source's failure.
        failures: Vec<Fault>,
    },
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::Disposed { source } => write!(
                f,
                "cancellation source #{source} was disposed; create a new source for a new \
                 operation (a source is disposed when dropped)"
            ),
            CancelError::CallbacksFailed { failures } => {
                write!(
                    f,
                    "cancellation was requested and every callback ran, but {} failed: ",
                    failures.len()
                )?;
                for (i, failure) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{failure}")?;
                }
                f.write_str(
                    " (a cancellation callback should not panic: catch the failure inside it)",
                )
            }
        }
    }
}

impl std::error::Error for CancelError {}

impl CancelError {
    /// The callbacks' failures (empty for `Disposed`).
    pub fn failures(&self) -> &[Fault] {
        match self {
            CancelError::CallbacksFailed { failures } => failures,
            CancelError::Disposed { .. } => &[],
        }
    }
}

/// A cancellation callback panicked.
#[derive(Debug)]
struct CallbackPanicked {
    source: u64,
    message: String,
}

impl fmt::Display for CallbackPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a callback of cancellation source #{} panicked: {}",
            self.source, self.message
        )
    }
}

impl std::error::Error for CallbackPanicked {}

impl CancellationTokenSource {
    /// A source that is not canceled, on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Clock::system())
    }

    /// A source whose `cancel_after` timers run on `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        CancellationTokenSource {
            inner: Arc::new(SourceInner {
                id: sync::next_id(),
                requested: AtomicBool::new(false),
                clock,
                state: Mutex::new(State {
                    callbacks: Vec::new(),
                    next_id: 1,
                    phase: Phase::Idle,
                    disposed: false,
                    timer: None,
                    links: Vec::new(),
                }),
                callback_done: Condvar::new(),
            }),
        }
    }

    /// A source that cancels itself after `delay` on `clock` (.NET's
    /// `new CancellationTokenSource(delay)`). A zero delay gives a source canceled already,
    /// synchronously (rule 7).
    pub fn with_delay(delay: Duration, clock: Clock) -> Self {
        let source = Self::with_clock(clock);
        if delay.is_zero() {
            source.inner.state.lock().phase = Phase::Notified;
            source.inner.requested.store(true, Ordering::Release);
        } else {
            let _ = source.cancel_after(delay);
        }
        source
    }

    /// A source canceled when any of `parents` is (.NET's `CreateLinkedTokenSource`),
    /// on the system clock. See rule 6. An empty list gives a source with no parent, like
    /// [`new`](Self::new) (.NET throws `ArgumentException` there; nothing is ambiguous about
    /// it in Rust, where the list cannot be null).
    pub fn linked(parents: &[CancellationToken]) -> Self {
        Self::linked_with_clock(parents, Clock::system())
    }

    /// [`linked`](Self::linked), with `cancel_after` timers on `clock`.
    pub fn linked_with_clock(parents: &[CancellationToken], clock: Clock) -> Self {
        let source = Self::with_clock(clock);
        for parent in parents {
            let child = source.inner.clone();
            let link: Callback = Box::new(move || match SourceInner::cancel(&child, false) {
                Err(CancelError::CallbacksFailed { failures }) => failures,
                // Disposed (the child was dropped meanwhile) or done: nothing to report.
                _ => Vec::new(),
            });
            match parent.try_store(link) {
                Ok(registration) => source.inner.state.lock().links.push(registration),
                // The parent was canceled already: cancel the child now. It has no
                // callbacks yet, so nothing can fail.
                Err(link) => drop(link()),
            }
        }
        source
    }

    /// A token of this source.
    pub fn token(&self) -> CancellationToken {
        CancellationToken {
            inner: Some(self.inner.clone()),
        }
    }

    /// Whether cancellation was requested.
    pub fn is_cancellation_requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// Requests cancellation: runs every callback, LIFO, on this thread, and returns their
    /// failures together (rules 1 and 2).
    pub fn cancel(&self) -> Result<(), CancelError> {
        SourceInner::cancel(&self.inner, false)
    }

    /// Like [`cancel`](Self::cancel), but stops at the first failing callback and returns
    /// it alone; the callbacks after it never run (.NET's `Cancel(throwOnFirstException:
    /// true)`).
    pub fn cancel_throw_on_first(&self) -> Result<(), CancelError> {
        SourceInner::cancel(&self.inner, true)
    }

    /// Cancels after `delay` on the source's clock, from the timer path (rule 7). Calling it
    /// again moves the due time; once cancellation was requested it does nothing.
    pub fn cancel_after(&self, delay: Duration) -> Result<(), CancelError> {
        let inner = &self.inner;
        let mut state = inner.state.lock();
        if state.disposed {
            return Err(inner.disposed());
        }
        if state.phase != Phase::Idle {
            return Ok(());
        }
        if let Some(old) = state.timer.take() {
            inner.clock.cancel_timer(old);
        }
        let target = inner.clone();
        state.timer = inner.clock.schedule(
            delay,
            Box::new(move || {
                if let Err(CancelError::CallbacksFailed { failures }) =
                    SourceInner::cancel(&target, false)
                {
                    let error = CancelError::CallbacksFailed { failures };
                    eprintln!("taskcheck: cancel_after on source #{}: {error}", target.id);
                }
            }),
        );
        Ok(())
    }

    /// Returns a never-canceled source to its initial state for a new operation (rule 9):
    /// `Ok(true)` if it did, `Ok(false)` if cancellation was requested or a timer is firing.
    pub fn try_reset(&self) -> Result<bool, CancelError> {
        let inner = &self.inner;
        let dropped = {
            let mut state = inner.state.lock();
            if state.disposed {
                return Err(inner.disposed());
            }
            if state.phase != Phase::Idle {
                return Ok(false);
            }
            if let Some(timer) = state.timer {
                if !inner.clock.cancel_timer(timer) {
                    return Ok(false);
                }
                state.timer = None;
            }
            std::mem::take(&mut state.callbacks)
        };
        // Callbacks may own registrations or tasks: drop them outside the lock.
        drop(dropped);
        Ok(true)
    }

    /// Disposes the source now (rule 8); dropping it does the same. Idempotent.
    pub fn dispose(&self) {
        let inner = &self.inner;
        let (timer, links, closures) = {
            let mut state = inner.state.lock();
            if state.disposed {
                return;
            }
            state.disposed = true;
            // The callbacks can no longer run (cancel now refuses), unless a cancel is
            // running them right now: drop their closures, keep their registrations.
            let closures: Vec<Callback> = if matches!(state.phase, Phase::Notifying { .. }) {
                Vec::new()
            } else {
                state
                    .callbacks
                    .iter_mut()
                    .filter_map(|(_, callback)| callback.take())
                    .collect()
            };
            (
                state.timer.take(),
                std::mem::take(&mut state.links),
                closures,
            )
        };
        // Closures may own registrations or tasks: dropped outside the lock.
        drop(closures);
        if let Some(timer) = timer {
            inner.clock.cancel_timer(timer);
        }
        // Unregisters from the parents, waiting for a parent's cancel that is running the
        // link's callback on another thread (rule 5).
        drop(links);
    }

    /// Whether the source was disposed.
    pub fn is_disposed(&self) -> bool {
        self.inner.state.lock().disposed
    }
}

impl Default for CancellationTokenSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for CancellationTokenSource {
    fn drop(&mut self) {
        self.dispose();
    }
}

impl fmt::Debug for CancellationTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl SourceInner {
    fn disposed(&self) -> CancelError {
        CancelError::Disposed { source: self.id }
    }

    /// Rules 1 and 2.
    fn cancel(this: &Arc<SourceInner>, throw_on_first: bool) -> Result<(), CancelError> {
        let timer = {
            let mut state = this.state.lock();
            if state.disposed {
                return Err(this.disposed());
            }
            if state.phase != Phase::Idle {
                return Ok(());
            }
            if knobs::on(Knob::CancelRacyTransition) {
                // The deliberate bug: decide and mark under two lock acquisitions.
                drop(state);
                sync::spin_loop();
                state = this.state.lock();
            }
            state.phase = Phase::Notifying {
                thread: sync::current_thread_id(),
                executing: None,
            };
            if !knobs::on(Knob::CancelFlagLate) {
                this.requested.store(true, Ordering::Release);
            }
            state.timer.take()
        };
        if let Some(timer) = timer {
            this.clock.cancel_timer(timer);
        }
        let mut failures = Vec::new();
        loop {
            let (id, callback) = {
                let mut state = this.state.lock();
                let next = if knobs::on(Knob::CancelFifo) {
                    (!state.callbacks.is_empty()).then(|| state.callbacks.remove(0))
                } else {
                    state.callbacks.pop()
                };
                let Some((id, callback)) = next else { break };
                // A closure dropped by a dispose during this cancel's first steps: skip it.
                let Some(callback) = callback else { continue };
                if knobs::on(Knob::CancelRemoveAfterRun) {
                    // The deliberate bug: a placeholder stays listed while the callback runs.
                    state.callbacks.push((id, Some(Box::new(Vec::new))));
                }
                if let Phase::Notifying { executing, .. } = &mut state.phase {
                    *executing = Some(id);
                }
                (id, callback)
            };
            let failed = match catch_unwind(AssertUnwindSafe(callback)) {
                Ok(failed) => failed,
                Err(payload) => vec![Box::new(CallbackPanicked {
                    source: this.id,
                    message: panic_message(&*payload),
                }) as Fault],
            };
            {
                let mut state = this.state.lock();
                if knobs::on(Knob::CancelRemoveAfterRun) {
                    state.callbacks.retain(|(listed, _)| *listed != id);
                }
                if let Phase::Notifying { executing, .. } = &mut state.phase {
                    if *executing == Some(id) {
                        *executing = None;
                    }
                }
            }
            this.callback_done.notify_all();
            let stop = throw_on_first && !failed.is_empty();
            failures.extend(failed);
            if stop {
                break;
            }
        }
        this.state.lock().phase = Phase::Notified;
        if knobs::on(Knob::CancelFlagLate) {
            this.requested.store(true, Ordering::Release);
        }
        this.callback_done.notify_all();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CancelError::CallbacksFailed { failures })
        }
    }
}

impl fmt::Debug for SourceInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationTokenSource")
            .field("id", &self.id)
            .field(
                "is_cancellation_requested",
                &self.requested.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

impl CancellationToken {
    /// A token that is never canceled (.NET's `CancellationToken.None`).
    pub fn none() -> Self {
        CancellationToken { inner: None }
    }

    /// Whether cancellation was requested.
    pub fn is_cancellation_requested(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.requested.load(Ordering::Acquire))
    }

    /// Whether this token can ever be canceled (`false` for [`none`](Self::none)).
    pub fn can_be_canceled(&self) -> bool {
        self.inner.is_some()
    }

    /// `Err` with a cancellation carrying this token once cancellation was requested
    /// (.NET's `ThrowIfCancellationRequested`); use it with `?` in a task's body, which then
    /// ends Canceled.
    pub fn throw_if_cancellation_requested(&self) -> Result<(), crate::TaskError> {
        if self.is_cancellation_requested() {
            Err(crate::TaskError::canceled_by(self))
        } else {
            Ok(())
        }
    }

    /// Registers `callback` to run when cancellation is requested (rules 1, 3, 4, 5).
    ///
    /// If cancellation was already requested, `callback` runs now, on this thread, and an
    /// empty registration is returned; a panic in it propagates to the caller.
    pub fn register<F>(&self, callback: F) -> CancellationTokenRegistration
    where
        F: FnOnce() + Send + 'static,
    {
        match self.try_store(Box::new(move || {
            callback();
            Vec::new()
        })) {
            Ok(registration) => registration,
            Err(callback) => {
                // Already canceled: run it here; a panic propagates to the caller.
                let _ = callback();
                CancellationTokenRegistration::empty()
            }
        }
    }

    /// Stores `callback` (rule 3), or hands it back when cancellation was requested, for
    /// the caller to run now.
    fn try_store(&self, callback: Callback) -> Result<CancellationTokenRegistration, Callback> {
        let Some(inner) = &self.inner else {
            return Ok(CancellationTokenRegistration::empty());
        };
        let racy = knobs::on(Knob::CancelRacyRegister);
        let requested_early = racy && inner.requested.load(Ordering::Acquire);
        if racy {
            // The deliberate bug: a cancel may run between the check and the store.
            sync::spin_loop();
        }
        let mut state = inner.state.lock();
        let requested = if racy {
            requested_early
        } else {
            state.phase != Phase::Idle
        };
        if requested {
            return Err(callback);
        }
        if state.disposed {
            drop(state);
            drop(callback);
            return Ok(CancellationTokenRegistration::empty());
        }
        let id = state.next_id;
        state.next_id += 1;
        state.callbacks.push((id, Some(callback)));
        Ok(CancellationTokenRegistration {
            inner: Some(inner.clone()),
            id,
        })
    }

    /// A future that completes once cancellation is requested; it never completes for a
    /// token that cannot be canceled. No wake-up is lost: the future stores its waker where
    /// its registered callback will find it, then looks at the flag again (the flag is
    /// raised before any callback runs).
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            token: self.clone(),
            waiting: None,
        }
    }

    fn source_id(&self) -> Option<u64> {
        self.inner.as_ref().map(|inner| inner.id)
    }
}

impl PartialEq for CancellationToken {
    fn eq(&self, other: &Self) -> bool {
        match (&self.inner, &other.inner) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for CancellationToken {}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("CancellationToken(none)"),
            Some(inner) => f
                .debug_struct("CancellationToken")
                .field("source", &inner.id)
                .field(
                    "is_cancellation_requested",
                    &self.is_cancellation_requested(),
                )
                .finish(),
        }
    }
}

impl fmt::Display for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source_id() {
            None => f.write_str("the none token"),
            Some(id) => write!(f, "the token of cancellation source #{id}"),
        }
    }
}

impl CancellationTokenRegistration {
    fn empty() -> Self {
        CancellationTokenRegistration { inner: None, id: 0 }
    }

    /// Removes the callback without waiting (rule 4): `true` if it was removed (it has not
    /// run and now never will), `false` if it ran, is running, was removed before, or
    /// nothing was registered.
    pub fn unregister(&self) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let removed = {
            let mut state = inner.state.lock();
            let position = state.callbacks.iter().position(|(id, _)| *id == self.id);
            position.map(|index| state.callbacks.remove(index))
        };
        // The callback may own handles whose drop takes locks: drop it unlocked.
        removed.is_some()
    }

    /// Unregisters and, if the callback is running on another thread, waits for it to
    /// finish (rule 5). Dropping the registration does the same.
    pub fn dispose(self) {
        drop(self);
    }

    /// Keeps the callback registered for the source's lifetime and gives up the handle
    /// (.NET's behaviour when a registration is never disposed).
    pub fn detach(mut self) {
        self.inner = None;
    }

    /// Whether a callback is stored under this registration (`false` for the empty
    /// registration of a callback that ran inline or was never stored).
    pub fn is_registered(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| {
            let state = inner.state.lock();
            state.callbacks.iter().any(|(id, _)| *id == self.id)
        })
    }

    /// The token this registration is on (the none token for an empty one).
    pub fn token(&self) -> CancellationToken {
        CancellationToken {
            inner: self.inner.clone(),
        }
    }

    fn wait_if_running(&self, inner: &SourceInner) {
        if knobs::on(Knob::CancelSkipDropWait) {
            return;
        }
        let me = sync::current_thread_id();
        let mut state = inner.state.lock();
        loop {
            match state.phase {
                Phase::Notifying {
                    thread,
                    executing: Some(running),
                } if running == self.id && thread != me => {
                    state = inner.callback_done.wait(state);
                }
                _ => return,
            }
        }
    }
}

impl Drop for CancellationTokenRegistration {
    fn drop(&mut self) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        if !self.unregister() {
            self.wait_if_running(&inner);
        }
    }
}

impl fmt::Debug for CancellationTokenRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationTokenRegistration")
            .field("source", &self.inner.as_ref().map(|inner| inner.id))
            .field("id", &self.id)
            .finish()
    }
}

/// The future of [`CancellationToken::cancelled`].
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    token: CancellationToken,
    /// The waker slot the registered callback wakes, and the registration.
    waiting: Option<(Arc<Mutex<Option<Waker>>>, CancellationTokenRegistration)>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.token.is_cancellation_requested() {
            this.waiting = None;
            return Poll::Ready(());
        }
        match &this.waiting {
            Some((slot, _)) => *slot.lock() = Some(cx.waker().clone()),
            None => {
                let late = knobs::on(Knob::CancelledLateWaker);
                let initial = if late { None } else { Some(cx.waker().clone()) };
                let slot = Arc::new(Mutex::new(initial));
                let for_callback = slot.clone();
                let registration = this.token.register(move || {
                    let waker = for_callback.lock().take();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                });
                if late {
                    // The deliberate bug: the waker arrives after the callback may have run,
                    // and the flag is not looked at again.
                    *slot.lock() = Some(cx.waker().clone());
                    this.waiting = Some((slot, registration));
                    return Poll::Pending;
                }
                this.waiting = Some((slot, registration));
            }
        }
        // The callback may have run between the first check and storing the waker.
        if this.token.is_cancellation_requested() {
            this.waiting = None;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}
