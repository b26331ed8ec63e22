//! The thread pool: N workers with work stealing (.NET's default `TaskScheduler`).
//!
//! Each worker owns a FIFO deque; work posted from a worker goes to its own deque, work
//! posted from outside goes to a shared injector, and an idle worker steals from the
//! others. In production the queues are `crossbeam-deque`; under loom and shuttle the
//! facade's stand-in (see `sync.rs`).
//!
//! # Sleeping without losing a wakeup
//!
//! 1. A poster pushes its job while holding the `sleep` lock, then wakes one sleeper if
//!    there is any.
//! 2. A worker that found no job takes the `sleep` lock and looks at every queue again
//!    before it sleeps. A job pushed before that look is seen; one pushed after it is
//!    pushed under the lock, after the worker is counted as a sleeper, so it is woken.
//!
//! # Shutdown rule
//!
//! [`ThreadPool::shutdown`] (also run on drop) refuses work from outside the pool from
//! then on; tasks refused are faulted as *abandoned*, so nobody awaiting them hangs. Work
//! already queued, and work the pool's own workers post while they drain (the
//! continuations of tasks already running there), still runs. Workers exit once every
//! queue is empty, and `shutdown` joins them (unless it is called from a worker).
//!
//! # Blocking on a worker
//!
//! A worker blocked in [`Task::wait`] runs inline the queued tasks that the awaited task
//! depends on (see `wait.rs`), so sync-over-async on the pool cannot starve it of the very
//! work it waits for. The wait watches those tasks, so it looks again as soon as one is
//! queued.
//!
//! A panic in a task becomes that task's fault; a worker thread never dies.

use std::fmt;
use std::future::Future;

use crate::context::{Context, ContextId, ContextKind, EnterGuard, Job};
use crate::error::{SpawnError, TaskError};
use crate::sync::knobs::{self, Knob};
use crate::sync::{
    self, Arc, Condvar, Injector, JoinHandle, Mutex, Steal, Stealer, Worker, WorkerSlot,
};
use crate::task::Task;
use crate::unobserved::Hooks;

/// A pool of worker threads with work stealing.
///
/// The owner of the workers: dropping it shuts the pool down (see the module docs). Hand
/// out [`ThreadPool::context`] to let other code post to it.
pub struct ThreadPool {
    shared: Arc<PoolShared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct PoolShared {
    pub(crate) id: ContextId,
    pub(crate) name: String,
    injector: Injector<Job>,
    stealers: Vec<Stealer<Job>>,
    sleep: Mutex<SleepState>,
    wake: Condvar,
    pub(crate) hooks: Arc<Hooks>,
}

struct SleepState {
    sleepers: usize,
    shutdown: bool,
}

impl ThreadPool {
    /// A pool of `workers` threads (at least one) named `taskcheck-pool-N`.
    pub fn new(workers: usize) -> Self {
        Self::with_name("taskcheck-pool", workers)
    }

    /// A pool whose threads are named `{name}-N`.
    pub fn with_name(name: &str, workers: usize) -> Self {
        let queues: Vec<Worker<Job>> = (0..workers.max(1)).map(|_| Worker::new_fifo()).collect();
        let shared = Arc::new(PoolShared {
            id: ContextId(sync::next_id()),
            name: name.to_owned(),
            injector: Injector::new(),
            stealers: queues.iter().map(Worker::stealer).collect(),
            sleep: Mutex::new(SleepState {
                sleepers: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            hooks: Hooks::new(),
        });
        let handles = queues
            .into_iter()
            .enumerate()
            .map(|(index, queue)| {
                let shared = shared.clone();
                sync::spawn_thread(format!("{name}-{index}"), move || {
                    PoolShared::work(shared, index, queue)
                })
            })
            .collect();
        ThreadPool {
            shared,
            workers: Mutex::new(handles),
        }
    }

    /// A handle to post or spawn onto this pool.
    pub fn context(&self) -> Context {
        Context {
            kind: ContextKind::Pool(self.shared.clone()),
        }
    }

    /// Spawns `future` onto the pool (lazily: its first poll is queued).
    ///
    /// After shutdown the task is already faulted with a [`SpawnError`].
    #[track_caller]
    pub fn spawn<F, T>(&self, future: F) -> Task<T>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        self.context().spawn(future)
    }

    /// Spawns `future`, or reports at once that the pool was shut down.
    #[track_caller]
    pub fn try_spawn<F, T>(&self, future: F) -> Result<Task<T>, SpawnError>
    where
        F: Future<Output = Result<T, TaskError>> + Send + 'static,
        T: Send + 'static,
    {
        self.context().try_spawn(future)
    }

    /// Shuts the pool down and waits for its workers to drain and exit (see the module
    /// docs). Idempotent. Called from one of the pool's own workers, it does not wait.
    pub fn shutdown(&self) {
        {
            let mut sleep = self.shared.sleep.lock();
            sleep.shutdown = true;
            self.shared.wake.notify_all();
        }
        if sync::worker_index(self.shared.id.0).is_some() {
            return;
        }
        let handles = std::mem::take(&mut *self.workers.lock());
        for handle in handles {
            // Workers catch every panic, so a join error cannot carry one of ours.
            let _ = handle.join();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("workers", &self.shared.stealers.len())
            .finish()
    }
}

impl PoolShared {
    /// Queues `job` (rule 1 of the module docs); gives it back after shutdown unless the
    /// caller is one of this pool's workers.
    pub(crate) fn post(&self, job: Job) -> Result<(), Job> {
        let sleep = self.sleep.lock();
        let job = match sync::push_local(self.id.0, job) {
            Ok(()) => None,
            Err(job) if sleep.shutdown => return Err(job),
            Err(job) => Some(job),
        };
        if let Some(job) = job {
            self.injector.push(job);
        }
        if sleep.sleepers > 0 && !knobs::on(Knob::PoolSkipWake) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A worker's loop.
    fn work(this: Arc<Self>, index: usize, queue: Worker<Job>) {
        let context = Context {
            kind: ContextKind::Pool(this.clone()),
        };
        let _current = EnterGuard::new(Some(context));
        sync::set_worker_slot(Some(WorkerSlot {
            pool_id: this.id.0,
            index,
            queue,
        }));
        loop {
            if let Some(job) = this.find_job(index) {
                let _ = job.run();
                continue;
            }
            // Rule 2: look again under the lock before sleeping.
            let mut sleep = this.sleep.lock();
            if this.has_work() && !(sleep.shutdown && knobs::on(Knob::PoolSkipDrain)) {
                continue;
            }
            if sleep.shutdown {
                break;
            }
            sleep.sleepers += 1;
            sleep = this.wake.wait(sleep);
            sleep.sleepers -= 1;
        }
        sync::set_worker_slot(None);
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_worked_by_current_thread(&self) -> bool {
        sync::worker_index(self.id.0).is_some()
    }

    fn find_job(&self, index: usize) -> Option<Job> {
        if let Some(job) = sync::pop_local() {
            return Some(job);
        }
        loop {
            let mut retry = false;
            let from_injector =
                sync::with_worker_queue(|queue| self.injector.steal_batch_and_pop(queue));
            match from_injector {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            // Steal from the others, starting after ourselves so victims spread.
            let count = self.stealers.len();
            for offset in 1..count {
                match self.stealers[(index + offset) % count].steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
            sync::spin_loop();
        }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|stealer| !stealer.is_empty())
    }
}
