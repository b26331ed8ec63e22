//! Blocking waits (`Task::wait`, C#'s `.Result` / `.Wait()`) and the proof that one would
//! deadlock.
//!
//! # The deadlock
//!
//! A thread that owns a single-thread context C blocks waiting for task X. If X can only
//! complete after some job queued on C runs, the wait never ends: C's only thread is the
//! one waiting. This is the classic .NET deadlock of `.Result` on a UI thread over an
//! `async` method whose awaits captured the UI context.
//!
//! # When it is certain ([`WaitMode::FailFast`])
//!
//! Follow X's dependency chain: X is completed by spawned task R₀; while R₀ is suspended on
//! spawned task R₁ it records that link, and so on. The deadlock is certain exactly when
//! some Rᵢ along the chain — each of R₀..Rᵢ₋₁ suspended on the next — is *queued on C*:
//! nothing but C's blocked owner can run Rᵢ, and nothing else can complete the chain.
//! Then the wait returns [`WaitError::WouldDeadlock`]. Every post to C wakes the waiting
//! thread to look again (`SingleShared::block`), as does X's completion; a chain that is
//! running elsewhere, waiting on something external, or not made of spawned tasks is never
//! reported (no false alarms — such a wait may hang only where .NET's would too).
//!
//! On a pool worker, a wait runs the pool's queued work until the task completes (see
//! `thread_pool.rs`). Elsewhere (a plain thread, a dedicated context's non-owner), a wait
//! just blocks until the task completes.
//!
//! [`WaitMode::FailFast`]: crate::WaitMode::FailFast

use std::error::Error;
use std::fmt;

use crate::context::Context;
use crate::error::TaskError;
use crate::raw_task::{RawTask, Run};
use crate::single_thread::{SingleShared, WaitMode};
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Condvar, Mutex};
use crate::task_core::{TaskCore, Waiter};

/// How far the deadlock proof follows a dependency chain before giving up (no report).
const MAX_CHAIN: usize = 64;

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

/// Blocks until `core` completes, or proves the wait would deadlock (module docs).
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
    let owned_context = Context::current()
        .and_then(|context| context.as_single().cloned())
        .filter(|single| single.is_owned_by_current_thread());
    let pool_worker = Context::current().and_then(|context| {
        let pool = context.as_pool()?.clone();
        sync::worker_index(pool.id.0).map(|index| (pool, index))
    });
    let result = match (owned_context, pool_worker) {
        (None, Some((pool, index))) => {
            pool.help_until(index, &signal, &|| core.is_completed());
            Ok(())
        }
        (None, None) => {
            while !core.is_completed() {
                signal.wait();
            }
            Ok(())
        }
        (Some(single), _) => {
            let _blocked = SingleShared::block(&single, signal.clone());
            loop {
                if core.is_completed() {
                    break Ok(());
                }
                if single.wait_mode == WaitMode::FailFast {
                    if let Some(report) = prove_deadlock(&single, core, producer) {
                        break Err(report);
                    }
                }
                signal.wait();
            }
        }
    };
    core.unregister(key);
    result
}

/// Follows the dependency chain from `producer` looking for a task queued on `single`.
fn prove_deadlock<T>(
    single: &SingleShared,
    core: &TaskCore<T>,
    producer: Option<&Arc<RawTask>>,
) -> Option<WouldDeadlock> {
    let mut current = producer?.clone();
    let mut chain = Vec::new();
    for _ in 0..MAX_CHAIN {
        let (run, awaiting) = current.blocking_view();
        chain.push(format!("task {}", current.id));
        match run {
            Run::Scheduled(Some(queued_on))
                if queued_on == single.id || knobs::on(Knob::OverEagerDeadlockProof) =>
            {
                return Some(WouldDeadlock {
                    context: format!("single-thread context '{}' ({})", single.name, single.id),
                    thread: sync::current_thread_name(),
                    awaited: format!("task {} (created at {})", core.id, core.location),
                    stuck: current.to_string(),
                    chain,
                });
            }
            Run::Idle => current = awaiting?,
            _ => return None,
        }
    }
    None
}
