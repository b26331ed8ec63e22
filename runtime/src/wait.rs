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
//! complete the graph. Then the wait returns [`WaitError::WouldDeadlock`]. Every post to C
//! wakes the waiting thread to look again (`SingleShared::block`), as does X's completion.
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

use crate::context::{Context, ContextId};
use crate::error::TaskError;
use crate::raw_task::{RawTask, Run};
use crate::single_thread::{SingleShared, WaitMode};
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Condvar, Mutex};
use crate::task_core::{TaskCore, Waiter};
use crate::thread_pool::PoolShared;

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
    // The context this thread runs, if it may inline from it: a pool it works for, or a
    // single-thread context it owns. Posts to it wake this wait to look again.
    let current = Context::current();
    let pool = current
        .as_ref()
        .and_then(Context::as_pool)
        .filter(|pool| pool.is_worked_by_current_thread());
    let single = current
        .as_ref()
        .and_then(Context::as_single)
        .filter(|single| single.is_owned_by_current_thread());
    let _pool_watch = pool.map(|pool| PoolShared::watch(pool, signal.clone()));
    let _single_watch = single.map(|single| SingleShared::block(single, signal.clone()));
    let result = loop {
        if core.is_completed() {
            break Ok(());
        }
        if let (Some(producer), Some(context)) = (producer, &current) {
            if pool.is_some() || single.is_some() {
                let started_too = pool.is_some();
                if let Some(task) = find_inlinable(producer, context.id(), started_too) {
                    RawTask::run_scheduled(&task);
                    continue;
                }
            }
            if let Some(single) = single.filter(|single| single.wait_mode == WaitMode::FailFast) {
                if let Some(report) = prove_deadlock(single, core, producer) {
                    break Err(report);
                }
            }
        }
        signal.wait();
    };
    core.unregister(key);
    result
}

/// A task in `start`'s dependency graph queued on `context` that a wait there may inline
/// (any, or only one never started).
fn find_inlinable(
    start: &Arc<RawTask>,
    context: ContextId,
    started_too: bool,
) -> Option<Arc<RawTask>> {
    if knobs::on(Knob::NoInlineInWait) {
        return None;
    }
    let mut visits = 0;
    let mut pending = vec![start.clone()];
    while let Some(task) = pending.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            return None;
        }
        let view = task.blocking_view();
        match view.run {
            Run::Scheduled(Some(queued_on))
                if queued_on == context && (started_too || !view.started) =>
            {
                return Some(task);
            }
            Run::Idle => pending.extend(view.awaiting),
            _ => {}
        }
    }
    None
}

/// Proves the wait on `core` (completed by `producer`) can never end (module docs).
fn prove_deadlock<T>(
    single: &SingleShared,
    core: &TaskCore<T>,
    producer: &Arc<RawTask>,
) -> Option<WouldDeadlock> {
    let mut visits = 0;
    let (mut chain, stuck) = stuck_on(producer, single.id, &mut visits)?;
    chain.reverse();
    Some(WouldDeadlock {
        context: format!("single-thread context '{}' ({})", single.name, single.id),
        thread: sync::current_thread_name(),
        awaited: format!("task {} (created at {})", core.id, core.location),
        stuck: stuck.to_string(),
        chain,
    })
}

/// If `task` is stuck on `context`: the chain from the stuck task back to `task` (reversed),
/// and the stuck task.
fn stuck_on(
    task: &Arc<RawTask>,
    context: ContextId,
    visits: &mut usize,
) -> Option<(Vec<String>, Arc<RawTask>)> {
    *visits += 1;
    if *visits > MAX_VISITS {
        return None;
    }
    let view = task.blocking_view();
    let mut found = match view.run {
        Run::Scheduled(Some(queued_on))
            if queued_on == context || knobs::on(Knob::OverEagerDeadlockProof) =>
        {
            (Vec::new(), task.clone())
        }
        Run::Idle if !view.awaits_unknown && !view.awaiting.is_empty() => {
            let mut first = None;
            for dependency in &view.awaiting {
                let stuck = stuck_on(dependency, context, visits)?;
                first.get_or_insert(stuck);
            }
            first?
        }
        _ => return None,
    };
    found.0.push(format!("task {}", task.id));
    Some(found)
}
