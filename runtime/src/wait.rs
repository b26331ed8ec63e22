//! Blocking waits (`Task::wait`, C#'s `.Result` / `.Wait()`): inlining what the wait needs,
//! and the proof that a wait would deadlock.
//!
//! # The dependency graph
//!
//! Task X is completed by the spawned task R₀ that runs its body. While R₀ is suspended,
//! it lists the spawned tasks its pending awaits wait for, and whether some await waits
//! for anything else (`raw_task` rule 4). Following these links from R₀ gives what X's
//! completion depends on.
//!
//! # Inlining
//!
//! A wait on a thread that runs a context C first looks for a task in that graph that is
//! queued on C and runs it inline, on the waiting thread (.NET's task inlining):
//!
//! - on a pool worker, any such task: with a fixed number of workers, sync-over-async on
//!   the pool would otherwise starve it of the very work it waits for;
//! - on a single-thread context's owner, only a task that has never started (.NET inlines
//!   a task that has not started; a continuation posted to the context is not a task it
//!   can inline, and that is the classic deadlock below).
//!
//! Only tasks the wait depends on are inlined, never unrelated queued work, which could
//! block on something the buried waiting frame is yet to produce.
//!
//! # The deadlock
//!
//! A thread that owns a single-thread context C blocks waiting for task X. If X can only
//! complete after a continuation queued on C runs, the wait never ends: C's only thread is
//! the one waiting. This is the classic .NET deadlock of `.Result` on a UI thread over an
//! `async` method whose awaits captured the UI context.
//!
//! # When it is certain ([`WaitMode::FailFast`])
//!
//! A task is *stuck* if it is queued on C, or if it is suspended, waits for nothing but
//! spawned tasks, and every one of those is stuck. The deadlock is certain exactly when R₀
//! is stuck: nothing but C's blocked owner can run the queued tasks, and nothing else can
//! complete the graph. Then the wait returns [`WaitError::WouldDeadlock`]. Every change of
//! state of a task in the graph wakes the waiting thread to look again, as does X's
//! completion.
//! A graph that is running elsewhere, or waits on anything but spawned tasks, is never
//! reported (no false alarms — such a wait may hang only where .NET's would too). Awaits
//! outside the awaiter contract leave no link, so the proof cannot see them: a body that
//! races a plain Rust future against a captured await may be reported though the plain
//! future could still complete it.
//!
//! Elsewhere (a plain thread, a dedicated context's non-owner), a wait just blocks until
//! the task completes.
//!
//! [`WaitMode::FailFast`]: crate::WaitMode::FailFast

use std::error::Error;
use std::fmt;

use crate::context::Context;
use crate::error::TaskError;
use crate::raw_task::{BlockingView, RawTask, Run};
use crate::single_thread::{SingleShared, WaitMode};
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Condvar, Mutex};
use crate::task_core::{TaskCore, Waiter};

/// How many tasks a look at the dependency graph visits before giving up (no report, no
/// inlining).
const MAX_VISITS: usize = 256;

/// Why a blocking wait did not return a value.
#[derive(Debug, Clone)]
pub enum WaitError {
    /// The task completed without a value (faulted or canceled).
    Task(TaskError),
    /// The wait could never end; see [`WouldDeadlock`].
    WouldDeadlock(WouldDeadlock),
}

impl WaitError {
    /// Whether this is the deadlock report.
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, WaitError::WouldDeadlock(_))
    }

    /// The task's error, if the task completed with one.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            WaitError::Task(error) => Some(error),
            WaitError::WouldDeadlock(_) => None,
        }
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Task(error) => fmt::Display::fmt(error, f),
            WaitError::WouldDeadlock(report) => fmt::Display::fmt(report, f),
        }
    }
}

impl Error for WaitError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            WaitError::Task(error) => error.errors().next().map(|e| e as &(dyn Error + 'static)),
            WaitError::WouldDeadlock(report) => Some(report),
        }
    }
}

impl From<WouldDeadlock> for WaitError {
    fn from(report: WouldDeadlock) -> Self {
        WaitError::WouldDeadlock(report)
    }
}

/// A blocking wait that could never end, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldDeadlock {
    context: String,
    thread: String,
    awaited: String,
    stuck: String,
    chain: Vec<String>,
}

impl WouldDeadlock {
    /// The single-thread context whose only thread is blocked.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The blocked thread.
    pub fn thread(&self) -> &str {
        &self.thread
    }

    /// The task the thread waits for.
    pub fn awaited(&self) -> &str {
        &self.awaited
    }

    /// The task whose continuation is stuck in the context's queue.
    pub fn stuck(&self) -> &str {
        &self.stuck
    }

    /// The dependency chain from the awaited task to the stuck one.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }
}

impl fmt::Display for WouldDeadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blocking wait would deadlock: thread '{}' is the only thread that runs {}, and \
             it is blocked waiting for {}; that cannot complete until {} runs, and its \
             continuation is queued on {} behind this very wait (dependency chain: {}). \
             Await the task instead of blocking on it, or use configure_await(false) in the \
             awaited code so its continuations do not need this context",
            self.thread,
            self.context,
            self.awaited,
            self.stuck,
            self.context,
            self.chain.join(" -> "),
        )
    }
}

impl Error for WouldDeadlock {}

/// A one-shot-per-wake signal a blocked thread sleeps on.
pub(crate) struct WaitSignal {
    fired: Mutex<bool>,
    cond: Condvar,
}

impl WaitSignal {
    pub(crate) fn new() -> Self {
        WaitSignal {
            fired: Mutex::new(false),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn notify(&self) {
        *self.fired.lock() = true;
        self.cond.notify_all();
    }

    /// Sleeps until notified (consuming the notification).
    pub(crate) fn wait(&self) {
        let mut fired = self.fired.lock();
        while !*fired {
            fired = self.cond.wait(fired);
        }
        *fired = false;
    }
}

/// Blocks until `core` completes, inlining what it needs, or proves the wait would
/// deadlock (module docs).
pub(crate) fn wait_for<T>(
    core: &Arc<TaskCore<T>>,
    producer: Option<&Arc<RawTask>>,
) -> Result<(), WouldDeadlock> {
    if core.is_completed() {
        return Ok(());
    }
    let signal = Arc::new(WaitSignal::new());
    let on_complete = signal.clone();
    let Ok(key) = core.register(Waiter::Callback(Box::new(move || on_complete.notify()))) else {
        return Ok(());
    };
    // The tasks the wait depends on wake it as they change state (`raw_task` rule 7): a task
    // queued, suspended or finished is all that can make one inlinable or stuck.
    let mut watched = Vec::new();
    let result = loop {
        if core.is_completed() {
            break Ok(());
        }
        if let Some(producer) = producer {
            if let Some(task) = find_inlinable(producer, &signal, &mut watched) {
                let _ = RawTask::run_scheduled(&task);
                continue;
            }
            if let Some(report) = prove_deadlock(core, producer, &signal, &mut watched) {
                break Err(report);
            }
        }
        signal.wait();
    };
    core.unregister(key);
    for task in &watched {
        task.unwatch(&signal);
    }
    result
}

/// How the waiting thread relates to the context a task is queued on.
enum Relation {
    /// A pool this thread works for: a wait here may run any of its queued tasks.
    Pool,
    /// A single-thread context this thread owns: only this thread can run its queue.
    Owned(Arc<SingleShared>),
    /// Somebody else's: the task will run without this thread.
    Other,
}

fn relation(queued_on: Option<&Context>) -> Relation {
    let Some(context) = queued_on else {
        return Relation::Other;
    };
    if context
        .as_pool()
        .is_some_and(|pool| pool.is_worked_by_current_thread())
    {
        return Relation::Pool;
    }
    match context.as_single() {
        Some(single) if single.is_owned_by_current_thread() => Relation::Owned(single.clone()),
        _ => Relation::Other,
    }
}

/// Looks at `task` for a wait: registers the wait's `signal` with it (once) and returns
/// what it sees.
fn visit(
    task: &Arc<RawTask>,
    signal: &Arc<WaitSignal>,
    watched: &mut Vec<Arc<RawTask>>,
) -> BlockingView {
    if !watched.iter().any(|seen| Arc::ptr_eq(seen, task)) {
        watched.push(task.clone());
    }
    task.watch(signal)
}

/// A task in `start`'s dependency graph that the waiting thread may run inline: queued on
/// a pool it works for, or never started and queued on a context it owns.
fn find_inlinable(
    start: &Arc<RawTask>,
    signal: &Arc<WaitSignal>,
    watched: &mut Vec<Arc<RawTask>>,
) -> Option<Arc<RawTask>> {
    let mut visits = 0;
    let mut pending = vec![start.clone()];
    while let Some(task) = pending.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            return None;
        }
        let view = visit(&task, signal, watched);
        match view.run {
            Run::Scheduled(_) => match relation(view.queued_on.as_ref()) {
                _ if knobs::on(Knob::NoInlineInWait) => {}
                Relation::Pool => return Some(task),
                Relation::Owned(_) if !view.started => return Some(task),
                _ => {}
            },
            Run::Idle => pending.extend(view.awaiting),
            _ => {}
        }
    }
    None
}

/// Proves the wait on `core` (completed by `producer`) can never end (module docs).
fn prove_deadlock<T>(
    core: &TaskCore<T>,
    producer: &Arc<RawTask>,
    signal: &Arc<WaitSignal>,
    watched: &mut Vec<Arc<RawTask>>,
) -> Option<WouldDeadlock> {
    let mut visits = 0;
    let (mut chain, stuck, single) = stuck_on(producer, signal, watched, &mut visits)?;
    chain.reverse();
    Some(WouldDeadlock {
        context: format!("single-thread context '{}' ({})", single.name, single.id),
        thread: sync::current_thread_name(),
        awaited: format!("task {} (created at {})", core.id, core.location),
        stuck: stuck.to_string(),
        chain,
    })
}

/// A stuck task: the chain from it back to the task looked at (reversed), the task, and
/// the context it is stuck on.
type Stuck = (Vec<String>, Arc<RawTask>, Arc<SingleShared>);

/// Whether `task` is stuck: queued on a fail-fast context this thread owns (and is blocked
/// on), or suspended on nothing but stuck tasks.
fn stuck_on(
    task: &Arc<RawTask>,
    signal: &Arc<WaitSignal>,
    watched: &mut Vec<Arc<RawTask>>,
    visits: &mut usize,
) -> Option<Stuck> {
    *visits += 1;
    if *visits > MAX_VISITS {
        return None;
    }
    let view = visit(task, signal, watched);
    let mut found = match view.run {
        Run::Scheduled(_) => match relation(view.queued_on.as_ref()) {
            Relation::Owned(single) if single.wait_mode == WaitMode::FailFast => {
                (Vec::new(), task.clone(), single)
            }
            // The deliberate bug: a task queued anywhere counts as stuck.
            _ if knobs::on(Knob::OverEagerDeadlockProof) => {
                let single = Context::current()?.as_single()?.clone();
                (Vec::new(), task.clone(), single)
            }
            _ => return None,
        },
        Run::Idle if !view.awaits_unknown && !view.awaiting.is_empty() => {
            let mut first = None;
            for dependency in &view.awaiting {
                let stuck = stuck_on(dependency, signal, watched, visits)?;
                first.get_or_insert(stuck);
            }
            first?
        }
        _ => return None,
    };
    found.0.push(format!("task {}", task.id));
    Some(found)
}
