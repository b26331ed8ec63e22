//! A spawned task's body and its scheduling state: who polls it, when, and where.
//!
//! A [`RawTask`] owns a spawned future (the task's *body*). Its [`Task`] handle shares only
//! the completion core; the body completes the core when it finishes.
//!
//! # States
//!
//! ```text
//!            wake (posted)                    dequeued by the context
//!   Idle ───────────────────► Scheduled(C) ──────────────────────────► Running
//!    ▲  │ wake with inline permit, on the resume context                 │  │
//!    │  └───────────────────────────────────────────────────────────────►│  │ body ready
//!    │                   poll returned Pending, not woken meanwhile      │  ▼
//!    └───────────────────────────────────────────────────────────────────┘ Done
//! ```
//!
//! 1. Only the thread that moved the task to `Running` polls the body. A wake while
//!    `Running` sets `notified`; when the poll returns `Pending` the task is then scheduled
//!    again, so no wakeup is lost.
//! 2. A wake in `Idle` schedules the task exactly once: it moves to `Scheduled` under the
//!    lock and posts one job. A wake in `Scheduled` or `Done` does nothing.
//! 3. Where the next poll runs is the *resume target*, set while the body runs: by default
//!    the context current at the poll (capture), or whatever the awaiter that suspended the
//!    body asked for (`configure_await(false)` asks for *anywhere*). A wake may run the body
//!    inline only when the completing side grants it (the first continuation of a task,
//!    see `task_core`) and the calling thread already is on the resume target.
//! 4. While the body is suspended, `awaiting` lists the spawned tasks its pending awaits
//!    wait for, and `awaits_unknown` says whether some pending await waits for something
//!    else (a completion source, a custom awaitable). Every poll starts both afresh, and
//!    every pending await notes itself again. A blocked wait follows these links to run
//!    what it waits for inline, or to prove a deadlock (see `wait.rs`). Awaits outside
//!    the awaiter contract (plain Rust futures) leave no link: the proof cannot see them.
//! 5. A body dropped before it finished faults its task as *abandoned*, so nothing awaiting
//!    it hangs: when its context refuses or drops it, or when the last reference to the
//!    raw task goes (the waker of everything it awaited was dropped, and every `Task`
//!    handle too — a handle keeps the raw task, for the deadlock proof, and loom has no
//!    `Weak` to avoid that).
//! 6. `started` is set by the first poll: a wait may inline a task that has never run,
//!    as .NET inlines a task that has not started, but never a queued continuation on a
//!    single-thread context.
//! 7. A blocked wait that depends on a task *watches* it: every change of `run` wakes the
//!    wait to look at the graph again (a task suspending on another thread can make a
//!    deadlock certain, or a task inlinable, without posting anything).

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::task::{Context as PollContext, Poll, RawWaker, RawWakerVTable, Waker};

use crate::context::{contain_panic, Context, ContextId, Job};
use crate::error::TaskError;
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Mutex};
use crate::task::{Task, TaskId};
use crate::task_core::TaskCore;
use crate::wait::WaitSignal;

/// How deep inline continuation runs may nest on one thread before they are queued instead.
pub(crate) const MAX_INLINE_DEPTH: usize = 16;

pub(crate) struct RawTask {
    pub(crate) id: TaskId,
    pub(crate) location: &'static Location<'static>,
    state: Mutex<RawState>,
    body: Mutex<Option<Pin<Box<dyn ErasedBody>>>>,
}

struct RawState {
    run: Run,
    resume: Resume,
    awaiting: Dependencies,
    awaits_unknown: bool,
    started: bool,
    /// The context this task is queued on while `Scheduled`.
    queued_on: Option<Context>,
    /// Blocked waits that depend on this task, woken by each change of `run` (rule 7).
    watchers: Vec<Arc<WaitSignal>>,
}

impl RawState {
    /// Moves to `Scheduled` on `context`.
    fn schedule(&mut self, context: Option<&Context>) {
        self.run = Run::Scheduled(context.map(Context::id));
        self.queued_on = context.cloned();
    }

    /// Moves to `run` (not `Scheduled`); returns the waits to wake once unlocked.
    fn set(&mut self, run: Run) -> Vec<Arc<WaitSignal>> {
        self.run = run;
        self.queued_on = None;
        self.watchers.clone()
    }
}

/// Wakes blocked waits watching a task whose state changed (rule 7).
fn notify(watchers: Vec<Arc<WaitSignal>>) {
    if knobs::on(Knob::SkipBlockedWake) {
        return;
    }
    for watcher in watchers {
        watcher.notify();
    }
}

/// The spawned tasks a suspended body waits for: one (the common case) without allocating.
#[derive(Default)]
struct Dependencies {
    first: Option<Arc<RawTask>>,
    more: Vec<Arc<RawTask>>,
}

impl Dependencies {
    fn push(&mut self, task: Arc<RawTask>) {
        if self.first.is_none() {
            self.first = Some(task);
        } else {
            self.more.push(task);
        }
    }

    fn clear(&mut self) {
        self.first = None;
        self.more.clear();
    }

    fn to_vec(&self) -> Vec<Arc<RawTask>> {
        self.first.iter().chain(&self.more).cloned().collect()
    }
}

/// What a blocked wait sees of a task (rules 4 and 6).
pub(crate) struct BlockingView {
    pub(crate) run: Run,
    pub(crate) awaiting: Vec<Arc<RawTask>>,
    pub(crate) awaits_unknown: bool,
    pub(crate) started: bool,
    pub(crate) queued_on: Option<Context>,
}

/// Where a task is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    Idle,
    /// Queued on a context (`None`: being run directly, for want of a default pool).
    Scheduled(Option<ContextId>),
    Running {
        notified: bool,
    },
    Done,
}

/// Where a suspended body's next poll should run.
#[derive(Clone, Debug)]
pub(crate) enum Resume {
    /// On this context (it was captured).
    On(Context),
    /// Anywhere: inline on the completing thread when allowed, else the default pool.
    Anywhere,
}

impl Resume {
    /// What `.await` captures by default: the current context, or anywhere if none.
    pub(crate) fn capture_current() -> Resume {
        sync::current_context().map_or(Resume::Anywhere, Resume::On)
    }

    fn is_here(&self) -> bool {
        match self {
            Resume::On(context) => context.is_current(),
            Resume::Anywhere => true,
        }
    }

    fn resolve(self) -> Option<Context> {
        match self {
            Resume::On(context) => Some(context),
            Resume::Anywhere => sync::default_pool(),
        }
    }
}

impl RawTask {
    /// Creates a task handle and the raw task that will run `future` and complete it.
    pub(crate) fn spawn_parts<F, T>(
        future: F,
        location: &'static Location<'static>,
        run_continuations_asynchronously: bool,
    ) -> (Task<T>, Arc<RawTask>)
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        let core = Arc::new(TaskCore::new(location, run_continuations_asynchronously));
        let raw = Arc::new(RawTask {
            id: core.id,
            location,
            state: Mutex::new(RawState {
                run: Run::Idle,
                resume: Resume::Anywhere,
                awaiting: Dependencies::default(),
                awaits_unknown: false,
                started: false,
                queued_on: None,
                watchers: Vec::new(),
            }),
            body: Mutex::new(Some(Box::pin(Body {
                future,
                core: core.clone(),
                finished: false,
            }))),
        });
        (Task::from_parts(core, Some(raw.clone())), raw)
    }

    /// Queues the first poll on `context`; false (and the task abandoned) if refused.
    pub(crate) fn schedule_first(this: &Arc<Self>, context: &Context) -> bool {
        {
            let mut state = this.state.lock();
            debug_assert_eq!(state.run, Run::Idle);
            state.schedule(Some(context));
        }
        match context.post_job(Job::Task(this.clone())) {
            Ok(()) => true,
            Err(job) => {
                job.abandon(&context.describe());
                false
            }
        }
    }

    /// Polls the body now, on the calling thread (an eager start).
    pub(crate) fn run_now(this: &Arc<Self>) {
        {
            let mut state = this.state.lock();
            if state.run != Run::Idle {
                return;
            }
            let _ = state.set(Run::Running { notified: false });
        }
        Self::poll_body(this);
    }

    /// Runs a queued poll (called by the context that dequeued this task).
    /// Whether it ran: a job whose task a wait already ran inline finds it no longer
    /// `Scheduled` and does nothing.
    pub(crate) fn run_scheduled(this: &Arc<Self>) -> bool {
        {
            let mut state = this.state.lock();
            if !matches!(state.run, Run::Scheduled(_)) {
                return false;
            }
            let _ = state.set(Run::Running { notified: false });
        }
        Self::poll_body(this);
        true
    }

    /// Polls the body until it is pending and not woken meanwhile, or finished (rule 1).
    fn poll_body(this: &Arc<Self>) {
        let waker = waker_for(this);
        let mut cx = PollContext::from_waker(&waker);
        {
            let mut state = this.state.lock();
            state.resume = Resume::capture_current();
            state.awaiting.clear();
            state.awaits_unknown = false;
            state.started = true;
        }
        let previous = sync::swap_current_task(Some(this.clone()));
        let finished = {
            let mut slot = this.body.lock();
            let pending = match slot.as_mut() {
                Some(body) => body.as_mut().poll(&mut cx).is_pending(),
                None => false,
            };
            if pending {
                None
            } else {
                Some(slot.take())
            }
        };
        sync::swap_current_task(previous);
        // Drop a finished body outside the lock: its destructors are user code, and a
        // panic in one must not take the thread down.
        let finished = match finished {
            Some(body) => {
                contain_panic("a finished task's destructor", || drop(body));
                true
            }
            None => false,
        };
        let mut state = this.state.lock();
        if finished {
            let watchers = state.set(Run::Done);
            state.awaiting.clear();
            drop(state);
            notify(watchers);
            return;
        }
        match state.run {
            Run::Running { notified: true } => {
                let context = state.resume.clone().resolve();
                state.schedule(context.as_ref());
                let watchers = state.watchers.clone();
                drop(state);
                // Queue first, then tell watching waits: they must find the job queued.
                Self::post_to(this, context);
                notify(watchers);
            }
            _ => {
                let watchers = state.set(Run::Idle);
                drop(state);
                notify(watchers);
            }
        }
    }

    /// Wakes the task (rules 2 and 3).
    fn wake(this: &Arc<Self>) {
        let inline = sync::take_inline_permit();
        let mut state = this.state.lock();
        match state.run {
            Run::Idle => {}
            Run::Running { .. } => {
                if !knobs::on(Knob::ForgetWakeWhileRunning) {
                    state.run = Run::Running { notified: true };
                }
                return;
            }
            Run::Scheduled(_) | Run::Done => return,
        }
        let resume = state.resume.clone();
        if inline && resume.is_here() && sync::inline_depth_add(0) < MAX_INLINE_DEPTH {
            let _ = state.set(Run::Running { notified: false });
            drop(state);
            sync::inline_depth_add(1);
            Self::poll_body(this);
            sync::inline_depth_add(-1);
        } else {
            let context = resume.resolve();
            state.schedule(context.as_ref());
            let watchers = state.watchers.clone();
            drop(state);
            // Queue first, then tell watching waits: they must find the job queued.
            Self::post_to(this, context);
            notify(watchers);
        }
    }

    fn post_to(this: &Arc<Self>, context: Option<Context>) {
        match context {
            Some(context) => {
                if let Err(job) = context.post_job(Job::Task(this.clone())) {
                    job.abandon(&context.describe());
                }
            }
            // Model builds have no default pool: run it here.
            None => {
                Self::run_scheduled(this);
            }
        }
    }

    /// Records one pending await of the body (rules 3 and 4); called by an awaiter from
    /// inside this task's poll.
    pub(crate) fn note_suspension(&self, resume: Resume, awaiting: Option<Arc<RawTask>>) {
        let mut state = self.state.lock();
        state.resume = resume;
        match awaiting {
            Some(task) => state.awaiting.push(task),
            None => state.awaits_unknown = true,
        }
    }

    /// What a blocked wait sees of this task.
    /// Registers `signal` to be woken by this task's state changes (rule 7), and returns
    /// what the wait sees of it now, under the same lock.
    pub(crate) fn watch(&self, signal: &Arc<WaitSignal>) -> BlockingView {
        let mut state = self.state.lock();
        if !state
            .watchers
            .iter()
            .any(|watcher| Arc::ptr_eq(watcher, signal))
        {
            state.watchers.push(signal.clone());
        }
        BlockingView {
            run: state.run,
            awaiting: state.awaiting.to_vec(),
            awaits_unknown: state.awaits_unknown,
            started: state.started,
            queued_on: state.queued_on.clone(),
        }
    }

    /// Withdraws a wait's `signal`.
    pub(crate) fn unwatch(&self, signal: &Arc<WaitSignal>) {
        self.state
            .lock()
            .watchers
            .retain(|watcher| !Arc::ptr_eq(watcher, signal));
    }

    /// Drops the body without finishing it (rule 5).
    pub(crate) fn abandon(&self, reason: String) {
        let watchers = {
            let mut state = self.state.lock();
            state.awaiting.clear();
            state.set(Run::Done)
        };
        notify(watchers);
        let body = self.body.lock().take();
        if let Some(mut body) = body {
            body.as_mut().abandon(reason);
            contain_panic("an abandoned task's destructor", || drop(body));
        }
    }
}

impl fmt::Display for RawTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} (spawned at {})", self.id, self.location)
    }
}

// The waker of a spawned task: a counted reference to the task itself, so making and
// cloning wakers never allocates. Its data pointer always comes from `Arc::into_raw` of an
// `Arc<RawTask>` and owns one strong count; every function below gives that count back
// exactly once (wake, drop) or leaves it untouched (clone adds one, wake_by_ref none).

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

fn waker_for(task: &Arc<RawTask>) -> Waker {
    let data = Arc::into_raw(task.clone()).cast::<()>();
    // SAFETY: `data` owns one strong count of an `Arc<RawTask>`, as the vtable expects.
    unsafe { Waker::from_raw(RawWaker::new(data, &WAKER_VTABLE)) }
}

/// Borrows the task behind a waker's data pointer for the duration of `f`.
///
/// # Safety
///
/// `data` must own a strong count of an `Arc<RawTask>` (it came from `waker_for` or
/// `waker_clone`) that stays alive during the call.
unsafe fn with_task<R>(data: *const (), f: impl FnOnce(&Arc<RawTask>) -> R) -> R {
    // SAFETY: per this function's contract; the count is handed back by `into_raw` below.
    let task = unsafe { Arc::from_raw(data.cast::<RawTask>()) };
    let result = f(&task);
    let _ = Arc::into_raw(task);
    result
}

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: the waker being cloned is alive, so `data` owns a count.
    let clone = unsafe { with_task(data, Arc::clone) };
    RawWaker::new(Arc::into_raw(clone).cast::<()>(), &WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: `wake` consumes the waker: take its count back and drop it after waking.
    let task = unsafe { Arc::from_raw(data.cast::<RawTask>()) };
    RawTask::wake(&task);
}

unsafe fn waker_wake_by_ref(data: *const ()) {
    // SAFETY: the waker is alive for the call.
    unsafe { with_task(data, RawTask::wake) };
}

unsafe fn waker_drop(data: *const ()) {
    // SAFETY: dropping the waker gives its count back.
    drop(unsafe { Arc::from_raw(data.cast::<RawTask>()) });
}

/// A body with its output type erased.
trait ErasedBody: Send {
    fn poll(self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()>;
    fn abandon(self: Pin<&mut Self>, reason: String);
}

/// The user's future plus the core it completes.
struct Body<F, T> {
    future: F,
    core: Arc<TaskCore<T>>,
    finished: bool,
}

impl<F, T> ErasedBody for Body<F, T>
where
    F: Future<Output = Result<T, TaskError>> + Send,
    T: Send,
{
    fn poll(self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: `Body` never moves it out, exposes it
        // only as `Pin<&mut F>`, and its `Drop` does not touch it. The other fields are
        // not pinned and are only accessed through `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        if this.finished {
            return Poll::Ready(());
        }
        // SAFETY: see above; `this.future` stays where the pinned `Body` put it.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(outcome)) => outcome,
            Err(payload) => Err(TaskError::from_panic(this.core.id, payload)),
        };
        this.finished = true;
        // The body is the task's only completer, so this cannot lose. Completing runs
        // waiters (wakers of other executors among them): contain their panics.
        let core = &this.core;
        contain_panic("a waiter of a completed task", || {
            let _ = core.try_complete(outcome);
        });
        Poll::Ready(())
    }

    fn abandon(self: Pin<&mut Self>, reason: String) {
        // SAFETY: only the unpinned `finished` and `core` fields are touched.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.finished {
            this.finished = true;
            let _ = this
                .core
                .try_complete(Err(TaskError::abandoned(this.core.id, reason)));
        }
    }
}

impl<F, T> Drop for Body<F, T> {
    fn drop(&mut self) {
        if !self.finished {
            let reason = "its body was dropped before it finished, because nothing could wake \
                          it any more (the waker of a future it awaited was dropped)";
            let _ = self
                .core
                .try_complete(Err(TaskError::abandoned(self.core.id, reason.to_owned())));
        }
    }
}
