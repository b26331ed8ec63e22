//! The single-thread context: one thread pumping a queue, like a UI thread's message loop
//! or a legacy request context (.NET's `WindowsFormsSynchronizationContext` and kin).
//!
//! A `SingleThreadContext` belongs to one thread, its *owner*: the thread that created it
//! with [`SingleThreadContext::new`], or a dedicated thread started by
//! [`SingleThreadContext::spawn_thread`]. Any thread may post or spawn onto it; only the
//! owner runs its queue ([`run_until_idle`](SingleThreadContext::run_until_idle),
//! [`block_on`](SingleThreadContext::block_on), [`enter`](SingleThreadContext::enter));
//! another thread that tries gets a [`PumpError`].
//!
//! Because exactly one thread runs the queue, a blocking wait on the owner for a task that
//! needs a job queued here can never end: that is the classic .NET deadlock, which
//! [`Task::wait`](crate::Task::wait) reports as [`WaitError::WouldDeadlock`] under
//! [`WaitMode::FailFast`] (the default), and which [`WaitMode::Faithful`] reproduces.
//!
//! # Shutdown rule
//!
//! [`SingleThreadContext::shutdown`] (also run on drop) refuses new work. A dedicated
//! thread then drains its queue, still accepting its own posts (the continuations of the
//! tasks it drains), exits once the queue is empty, and `shutdown` joins it. A context owned by a
//! caller's thread is not pumped any more, so whatever is still queued is abandoned: those
//! tasks fault as abandoned instead of hanging.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::future::Future;

use crate::context::{Context, ContextId, ContextKind, EnterGuard, Job};
use crate::error::{SpawnError, TaskError};
use crate::sync::{self, Arc, Condvar, JoinHandle, Mutex, ThreadId};
use crate::task::Task;
use crate::task_core::Waiter;
use crate::unobserved::Hooks;
use crate::wait::WaitError;

/// What a blocking wait does on a single-thread context's own thread when it would
/// deadlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitMode {
    /// Return [`WaitError::WouldDeadlock`] as soon as the deadlock is certain.
    #[default]
    FailFast,
    /// Block exactly as .NET does (forever). For bug models and demonstrations.
    Faithful,
}

/// A context whose work runs on one thread, in posting order.
pub struct SingleThreadContext {
    shared: Arc<SingleShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Configures a [`SingleThreadContext`].
#[derive(Debug, Clone)]
pub struct SingleThreadContextBuilder {
    name: String,
    wait_mode: WaitMode,
}

pub(crate) struct SingleShared {
    pub(crate) id: ContextId,
    pub(crate) name: String,
    pub(crate) wait_mode: WaitMode,
    /// Pumped by its own thread until shutdown (not by a caller's thread).
    dedicated: bool,
    state: Mutex<SingleState>,
    work: Condvar,
    pub(crate) hooks: Arc<Hooks>,
}

struct SingleState {
    queue: VecDeque<Job>,
    shutdown: bool,
    owner: Option<(ThreadId, String)>,
    /// The pump should look at its stop condition again (see [`SingleShared::kick`]).
    kicked: bool,
    /// The pump is asleep on `work`, waiting for a job or a kick.
    idle: bool,
}

impl SingleThreadContextBuilder {
    /// Names the context (and a dedicated thread).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Chooses what a deadlocking blocking wait does.
    pub fn wait_mode(mut self, mode: WaitMode) -> Self {
        self.wait_mode = mode;
        self
    }

    /// A context owned by the calling thread, which runs it with `run_until_idle`,
    /// `block_on` or `enter`.
    pub fn build(self) -> SingleThreadContext {
        let shared = self.shared(false);
        shared.state.lock().owner = Some((sync::current_thread_id(), sync::current_thread_name()));
        SingleThreadContext {
            shared,
            thread: Mutex::new(None),
        }
    }

    /// A context with a dedicated thread that pumps it until shutdown.
    pub fn spawn_thread(self) -> SingleThreadContext {
        let shared = self.shared(true);
        let pump = shared.clone();
        let handle = sync::spawn_thread(self.name.clone(), move || {
            SingleShared::pump(&pump, Some(&|| false));
        });
        // Set before any job can be posted: only this function has the context yet.
        shared.state.lock().owner = Some((sync::thread_id_of(&handle), self.name));
        SingleThreadContext {
            shared,
            thread: Mutex::new(Some(handle)),
        }
    }

    fn shared(&self, dedicated: bool) -> Arc<SingleShared> {
        Arc::new(SingleShared {
            id: ContextId(sync::next_id()),
            name: self.name.clone(),
            wait_mode: self.wait_mode,
            dedicated,
            state: Mutex::new(SingleState {
                queue: VecDeque::new(),
                shutdown: false,
                owner: None,
                kicked: false,
                idle: false,
            }),
            work: Condvar::new(),
            hooks: Hooks::new(),
        })
    }
}

impl SingleThreadContext {
    /// A context named `name`, owned by the calling thread, failing fast on deadlock.
    pub fn new(name: &str) -> Self {
        Self::builder().name(name).build()
    }

    /// A context named `name` with a dedicated thread.
    pub fn spawn_thread(name: &str) -> Self {
        Self::builder().name(name).spawn_thread()
    }

    /// A builder, to choose the [`WaitMode`].
    pub fn builder() -> SingleThreadContextBuilder {
        SingleThreadContextBuilder {
            name: "single-thread".to_owned(),
            wait_mode: WaitMode::default(),
        }
    }

    /// A handle to post or spawn onto this context.
    pub fn context(&self) -> Context {
        Context {
            kind: ContextKind::Single(self.shared.clone()),
        }
    }

    /// Posts `callback` to run on this context's thread.
    pub fn post(&self, callback: impl FnOnce() + Send + 'static) -> Result<(), SpawnError> {
        self.context().post(callback)
    }

    /// Spawns `future` onto this context (lazily: its first poll is queued).
    #[track_caller]
    pub fn spawn<F, T>(&self, future: F) -> Task<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        self.context().spawn(future)
    }

    /// On the owner thread: runs queued work until the queue is empty; how many jobs ran
    /// (a queued task that a wait already ran inline is skipped, not counted).
    pub fn run_until_idle(&self) -> Result<usize, PumpError> {
        self.shared.check_owner()?;
        Ok(SingleShared::pump(&self.shared, None))
    }

    /// Runs `f` on the owner thread with this context current, without pumping: work `f`
    /// spawns or posts here waits for the next `run_until_idle` or `block_on`.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> Result<R, PumpError> {
        self.shared.check_owner()?;
        let _current = EnterGuard::new(Some(self.context()));
        Ok(f())
    }

    /// Runs `future` as a task on this context and returns its outcome.
    ///
    /// On the owner thread this pumps the queue until the task completes (a message loop
    /// running until a window closes). On any other thread it spawns the task here and
    /// waits for it.
    #[track_caller]
    pub fn block_on<F, T>(&self, future: F) -> Result<T, WaitError>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Clone + Send + 'static,
    {
        let task = self.spawn(future);
        if self.shared.check_owner().is_ok() {
            let wake_pump = self.shared.clone();
            let wake = Waiter::Callback(Box::new(move || wake_pump.kick()));
            if task.core.register(wake).is_ok() {
                SingleShared::pump(&self.shared, Some(&|| task.is_completed()));
            }
        }
        task.wait()
    }

    /// Shuts the context down (see the module docs). Idempotent.
    pub fn shutdown(&self) {
        let abandoned = {
            let mut state = self.shared.state.lock();
            state.shutdown = true;
            self.shared.work.notify_all();
            let dedicated = self.thread.lock().is_some();
            if dedicated {
                VecDeque::new()
            } else {
                std::mem::take(&mut state.queue)
            }
        };
        let description = self.context().describe();
        for job in abandoned {
            job.abandon(&description);
        }
        if self.shared.check_owner().is_err() {
            if let Some(handle) = self.thread.lock().take() {
                // The pump catches every panic, so a join error cannot carry one of ours.
                let _ = handle.join();
            }
        }
    }
}

impl Drop for SingleThreadContext {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for SingleThreadContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleThreadContext")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("wait_mode", &self.shared.wait_mode)
            .finish()
    }
}

impl SingleShared {
    pub(crate) fn post(&self, job: Job) -> Result<(), Job> {
        let mut state = self.state.lock();
        // While a dedicated thread drains, it still accepts its own posts (continuations of
        // the tasks it is draining), as a pool's workers do.
        let draining_itself = self.dedicated
            && state
                .owner
                .as_ref()
                .is_some_and(|(owner, _)| *owner == sync::current_thread_id());
        if state.shutdown && !draining_itself {
            return Err(job);
        }
        state.queue.push_back(job);
        // Only a pump asleep on the condvar needs waking (it set `idle` under this lock);
        // a notify with no waiter still costs a system call.
        if state.idle {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Wakes a pump blocked for want of work to look at its stop condition again.
    fn kick(&self) {
        let mut state = self.state.lock();
        state.kicked = true;
        if state.idle {
            self.work.notify_all();
        }
    }

    /// Whether the calling thread owns (and so alone runs) this context.
    pub(crate) fn is_owned_by_current_thread(&self) -> bool {
        self.check_owner().is_ok()
    }

    fn check_owner(&self) -> Result<(), PumpError> {
        let state = self.state.lock();
        match &state.owner {
            Some((owner, _)) if *owner == sync::current_thread_id() => Ok(()),
            owner => Err(PumpError {
                context: format!("single-thread context '{}' ({})", self.name, self.id),
                owner: owner
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |(_, name)| name.clone()),
                caller: sync::current_thread_name(),
            }),
        }
    }

    /// Runs jobs on the calling thread (the owner) with this context current. With
    /// `until`, blocks when idle and stops once `until()` holds (or the context shut down
    /// and its queue is empty); without, stops when the queue is empty.
    fn pump(this: &Arc<Self>, until: Option<&dyn Fn() -> bool>) -> usize {
        let _current = EnterGuard::new(Some(Context {
            kind: ContextKind::Single(this.clone()),
        }));
        let mut ran = 0;
        loop {
            if until.is_some_and(|done| done()) {
                return ran;
            }
            let job = {
                let mut state = this.state.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break Some(job);
                    }
                    if std::mem::take(&mut state.kicked) {
                        break None;
                    }
                    if until.is_none() || state.shutdown {
                        return ran;
                    }
                    state.idle = true;
                    state = this.work.wait(state);
                    state.idle = false;
                }
            };
            if let Some(job) = job {
                if job.run() {
                    ran += 1;
                }
            }
        }
    }
}

/// A thread that does not own a single-thread context tried to run its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpError {
    context: String,
    owner: String,
    caller: String,
}

impl fmt::Display for PumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} belongs to thread '{}', so only that thread may run its queue, but thread \
             '{}' tried; post or spawn work onto the context from other threads instead",
            self.context, self.owner, self.caller
        )
    }
}

impl Error for PumpError {}
