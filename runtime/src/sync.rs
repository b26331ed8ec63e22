//! The sync facade: the one module of the runtime that names a synchronisation primitive.
//!
//! Every atomic, mutex, condvar, cross-thread `Arc`, thread spawn and thread-local the
//! runtime uses comes from here, in one of three arms chosen by a compiler flag:
//!
//! | flag              | primitives                          | work-stealing queues            |
//! |-------------------|-------------------------------------|---------------------------------|
//! | (none)            | `std`                               | `crossbeam-deque`               |
//! | `--cfg loom`      | `loom` (exhaustive interleavings)   | a mutex-protected stand-in      |
//! | `--cfg shuttle`   | `shuttle` (random / PCT / DFS)      | the same stand-in               |
//!
//! So the models in `models/` check **the runtime's own code**, not a copy of it. Flags, not
//! Cargo features, switch the arms: a feature unifies across a workspace build and would put
//! checker primitives into ordinary tests. CI greps that no other file in `runtime/src` names
//! `std::sync`, `std::thread`, `UnsafeCell` or `thread_local!`.
//!
//! Rules for this file:
//!
//! 1. The wrappers ([`Mutex`], [`Condvar`]) erase poisoning: a panic inside a task is caught
//!    and turned into a fault before any runtime lock could be poisoned by it, and a
//!    poisoned runtime lock would otherwise take every later user down with it.
//! 2. Crossbeam is not instrumented by loom or shuttle, so under either checker it is
//!    replaced by [`stand_in`], which has the same interface and is checked like the rest.
//! 3. The runtime's thread-locals (current context, current task, inline-run permission,
//!    the pool worker's local queue) are declared here: loom and shuttle run all their model
//!    threads on one OS thread, so a plain `std::thread_local!` would be shared between them.
//! 4. Task and context ids come from a plain std counter in every arm. They are labels for
//!    messages, not synchronisation, and loom forbids its atomics in statics.

use std::cell::{Cell, RefCell};

#[cfg(all(loom, shuttle))]
compile_error!("build with at most one of `--cfg loom` and `--cfg shuttle`");

#[cfg(loom)]
mod primitive {
    pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex as RawMutex, MutexGuard};
    pub(crate) use loom::thread::{self, JoinHandle, ThreadId};
    pub(crate) use loom::thread_local;
}

#[cfg(shuttle)]
mod primitive {
    pub(crate) use shuttle::sync::atomic::{AtomicBool, Ordering};
    pub(crate) use shuttle::sync::{Arc, Condvar, Mutex as RawMutex, MutexGuard};
    pub(crate) use shuttle::thread::{self, JoinHandle, ThreadId};
    pub(crate) use shuttle::thread_local;
}

#[cfg(not(any(loom, shuttle)))]
mod primitive {
    pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
    pub(crate) use std::sync::{Arc, Condvar, Mutex as RawMutex, MutexGuard};
    pub(crate) use std::thread::{self, JoinHandle, ThreadId};
    pub(crate) use std::thread_local;
}

pub(crate) use primitive::{Arc, AtomicBool, JoinHandle, MutexGuard, Ordering, ThreadId};

use crate::context::{Context, Job};
use crate::raw_task::RawTask;
use crate::unobserved::{UnhandledKind, UnhandledTaskError};

/// A mutex whose `lock` cannot fail (rule 1).
pub(crate) struct Mutex<T>(primitive::RawMutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(primitive::RawMutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A condition variable over [`Mutex`] guards (rule 1).
pub(crate) struct Condvar(primitive::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(primitive::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits at most `timeout` (the system clock's timer thread; production builds only:
    /// neither checker models time, so model builds have no timed waits).
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        match self.0.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Spawns a named runtime thread (a pool worker or a dedicated single-thread context).
pub(crate) fn spawn_thread<F>(name: String, f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    primitive::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("the OS refused to start a runtime thread")
}

/// The calling thread's id.
pub(crate) fn current_thread_id() -> ThreadId {
    primitive::thread::current().id()
}

/// The calling thread's name, or its id when it has none, for error messages.
pub(crate) fn current_thread_name() -> String {
    let thread = primitive::thread::current();
    match thread.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", thread.id()),
    }
}

/// Backs off in a retry loop; the checkers need a yield point here or they never finish.
pub(crate) fn spin_loop() {
    #[cfg(any(loom, shuttle))]
    primitive::thread::yield_now();
    #[cfg(not(any(loom, shuttle)))]
    std::hint::spin_loop();
}

/// The id of the thread behind `handle`.
pub(crate) fn thread_id_of(handle: &JoinHandle<()>) -> ThreadId {
    handle.thread().id()
}

/// Hands out ids for tasks and contexts (rule 4).
pub(crate) fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// Work-stealing queues (rule 2).

#[cfg(not(any(loom, shuttle)))]
pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

/// For the completed-task cache's statics (production builds only; see `task_cache.rs`).
#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::sync::OnceLock;

#[cfg(any(loom, shuttle))]
pub(crate) use stand_in::{Injector, Steal, Stealer, Worker};

/// A mutex-protected stand-in for `crossbeam-deque` with the subset of its interface the
/// pool uses. The checkers cannot see inside crossbeam; they can see inside this.
#[cfg(any(loom, shuttle))]
mod stand_in {
    use super::{Arc, Mutex};
    use std::collections::VecDeque;

    /// Mirrors `crossbeam_deque::Steal` (the stand-in never returns `Retry`, but callers
    /// must handle it exactly as with crossbeam).
    #[allow(dead_code, reason = "Retry exists to keep the interface identical")]
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        Retry,
    }

    pub(crate) struct Injector<T>(Mutex<VecDeque<T>>);

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector(Mutex::new(VecDeque::new()))
        }
        pub(crate) fn push(&self, value: T) {
            self.0.lock().push_back(value);
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }
        pub(crate) fn steal_batch_and_pop(&self, _dest: &Worker<T>) -> Steal<T> {
            match self.0.lock().pop_front() {
                Some(value) => Steal::Success(value),
                None => Steal::Empty,
            }
        }
    }

    pub(crate) struct Worker<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Self {
            Worker(Arc::new(Mutex::new(VecDeque::new())))
        }
        pub(crate) fn push(&self, value: T) {
            self.0.lock().push_back(value);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().pop_front()
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer(self.0.clone())
        }
    }

    pub(crate) struct Stealer<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Stealer<T> {
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.0.lock().pop_back() {
                Some(value) => Steal::Success(value),
                None => Steal::Empty,
            }
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Thread-locals (rule 3).

/// A pool worker's own queue, reachable from the jobs it runs so their posts stay local.
pub(crate) struct WorkerSlot {
    pub(crate) pool_id: u64,
    pub(crate) index: usize,
    pub(crate) queue: Worker<Job>,
}

// loom's and shuttle's `thread_local!` take no `const { }` initialisers.
#[allow(clippy::missing_const_for_thread_local)]
mod locals {
    use super::*;
    primitive::thread_local! {
        pub(super) static CURRENT_CONTEXT: RefCell<Option<Context>> = RefCell::new(None);
        pub(super) static CURRENT_TASK: RefCell<Option<Arc<RawTask>>> = RefCell::new(None);
        pub(super) static INLINE_PERMIT: Cell<bool> = Cell::new(false);
        pub(super) static INLINE_DEPTH: Cell<usize> = Cell::new(0);
        pub(super) static WORKER: RefCell<Option<WorkerSlot>> = RefCell::new(None);
    }
}
use locals::{CURRENT_CONTEXT, CURRENT_TASK, INLINE_DEPTH, INLINE_PERMIT, WORKER};

/// Replaces the calling thread's current context, returning the previous one.
pub(crate) fn swap_current_context(context: Option<Context>) -> Option<Context> {
    CURRENT_CONTEXT.with(|slot| slot.replace(context))
}

/// The calling thread's current context (ambient, like `SynchronizationContext.Current`).
pub(crate) fn current_context() -> Option<Context> {
    CURRENT_CONTEXT.with(|slot| slot.borrow().clone())
}

/// Replaces the task being polled on this thread, returning the previous one.
pub(crate) fn swap_current_task(task: Option<Arc<RawTask>>) -> Option<Arc<RawTask>> {
    CURRENT_TASK.with(|slot| slot.replace(task))
}

/// Runs `f` with the task being polled on this thread, if any.
pub(crate) fn with_current_task<R>(f: impl FnOnce(Option<&Arc<RawTask>>) -> R) -> R {
    CURRENT_TASK.with(|slot| f(slot.borrow().as_ref()))
}

/// Grants (or withdraws) permission for the next task wake on this thread to run inline.
pub(crate) fn set_inline_permit(allowed: bool) -> bool {
    INLINE_PERMIT.with(|permit| permit.replace(allowed))
}

/// Takes the inline permission, if granted (a wake consumes it).
pub(crate) fn take_inline_permit() -> bool {
    INLINE_PERMIT.with(|permit| permit.replace(false))
}

/// Adjusts the depth of nested inline continuation runs on this thread; returns the new depth.
pub(crate) fn inline_depth_add(delta: isize) -> usize {
    INLINE_DEPTH.with(|depth| {
        let next = depth.get().saturating_add_signed(delta);
        depth.set(next);
        next
    })
}

/// Installs (or removes) the pool worker's local queue for this thread.
pub(crate) fn set_worker_slot(slot: Option<WorkerSlot>) -> Option<WorkerSlot> {
    WORKER.with(|cell| cell.replace(slot))
}

/// Pushes `job` onto this thread's worker queue if this thread is a worker of `pool_id`;
/// gives the job back otherwise.
pub(crate) fn push_local(pool_id: u64, job: Job) -> Result<(), Job> {
    WORKER.with(|cell| match cell.borrow().as_ref() {
        Some(slot) if slot.pool_id == pool_id => {
            slot.queue.push(job);
            Ok(())
        }
        _ => Err(job),
    })
}

/// Runs `f` on this thread's worker queue (only pool workers call it).
pub(crate) fn with_worker_queue<R>(f: impl FnOnce(&Worker<Job>) -> R) -> R {
    WORKER.with(|cell| {
        let slot = cell.borrow();
        let slot = slot
            .as_ref()
            .expect("with_worker_queue is only called on pool workers");
        f(&slot.queue)
    })
}

/// Pops from this thread's worker queue.
pub(crate) fn pop_local() -> Option<Job> {
    WORKER.with(|cell| cell.borrow().as_ref().and_then(|slot| slot.queue.pop()))
}

/// This thread's worker index if it is a worker of pool `pool_id`.
pub(crate) fn worker_index(pool_id: u64) -> Option<usize> {
    WORKER.with(|cell| {
        cell.borrow()
            .as_ref()
            .filter(|slot| slot.pool_id == pool_id)
            .map(|slot| slot.index)
    })
}

// ---------------------------------------------------------------------------------------
// The process-wide default pool (`Task::run`, `configure_await(false)` resumptions).

/// The default thread pool, started on first use. Model builds have none: a model creates
/// its pools explicitly, and work that would go to the default pool runs inline instead
/// (loom and shuttle cannot keep a pool alive across their executions).
#[cfg(not(any(loom, shuttle)))]
pub(crate) fn default_pool() -> Option<Context> {
    static POOL: std::sync::OnceLock<crate::ThreadPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        crate::ThreadPool::with_name("taskcheck-pool", workers)
    });
    Some(pool.context())
}

#[cfg(any(loom, shuttle))]
pub(crate) fn default_pool() -> Option<Context> {
    None
}

// ---------------------------------------------------------------------------------------
// The process-wide unobserved-error hook and async-void handler (unobserved.rs rule 3).
// Model builds keep them per OS thread (where loom and shuttle run all of a model's
// threads), so models running in parallel do not see each other's hooks.

/// A process-wide hook as stored (not a facade `Arc`: it outlives every model execution).
pub(crate) type GlobalHook = Box<dyn Fn(&UnhandledTaskError) + Send + Sync + 'static>;

#[cfg(not(any(loom, shuttle)))]
type GlobalHooks = [Option<std::sync::Arc<GlobalHook>>; 2];
#[cfg(not(any(loom, shuttle)))]
static GLOBAL_HOOKS: std::sync::RwLock<GlobalHooks> = std::sync::RwLock::new([None, None]);

#[cfg(any(loom, shuttle))]
std::thread_local! {
    static GLOBAL_HOOKS: RefCell<[Option<std::rc::Rc<GlobalHook>>; 2]> =
        const { RefCell::new([None, None]) };
}

fn hook_index(kind: UnhandledKind) -> usize {
    match kind {
        UnhandledKind::Unobserved => 0,
        UnhandledKind::AsyncVoid => 1,
    }
}

/// Runs `f` with the process-wide hook of `kind` (`None` if unset), outside any lock.
pub(crate) fn with_global_hook<R>(
    kind: UnhandledKind,
    f: impl FnOnce(Option<&GlobalHook>) -> R,
) -> R {
    #[cfg(not(any(loom, shuttle)))]
    let hook = GLOBAL_HOOKS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)[hook_index(kind)]
    .clone();
    #[cfg(any(loom, shuttle))]
    let hook = GLOBAL_HOOKS.with(|hooks| hooks.borrow()[hook_index(kind)].clone());
    f(hook.as_deref())
}

/// Sets (or clears) the process-wide hook of `kind`.
pub(crate) fn set_global_hook(kind: UnhandledKind, hook: Option<GlobalHook>) {
    #[cfg(not(any(loom, shuttle)))]
    {
        let mut hooks = GLOBAL_HOOKS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hooks[hook_index(kind)] = hook.map(std::sync::Arc::new);
    }
    #[cfg(any(loom, shuttle))]
    GLOBAL_HOOKS.with(|hooks| hooks.borrow_mut()[hook_index(kind)] = hook.map(std::rc::Rc::new));
}

// ---------------------------------------------------------------------------------------
// Test knobs: deliberate bugs, for proving that the models catch them.

/// Deliberate bugs a model can switch on, to show that the property it checks can fail.
///
/// Model builds only (`--cfg loom` / `--cfg shuttle`); in production builds every knob is a
/// constant `false` and compiles away. A knob is set for the calling OS thread, which is
/// where loom and shuttle run all of a model's threads, so tests running in parallel do not
/// see each other's knobs.
#[cfg(any(loom, shuttle))]
#[doc(hidden)]
pub mod knobs {
    use std::cell::Cell;

    /// One deliberate bug.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u32)]
    pub enum Knob {
        /// `TaskCore::register` checks for completion outside the lock that registers, so
        /// a completion between the two loses the waiter (a lost wakeup).
        RacyRegister = 1,
        /// `TaskCore::try_complete` checks and sets the outcome under two separate locks,
        /// so two racing completers can both win.
        RacyComplete = 2,
        /// A wake while the task is being polled is dropped instead of remembered.
        ForgetWakeWhileRunning = 4,
        /// Awaits ignore `configure_await`/capture and always resume anywhere.
        IgnoreCapture = 8,
        /// A blocked wait is not woken to look again when a task it depends on changes
        /// state, so a deadlock that becomes certain after the wait began is never reported
        /// (and a task that becomes inlinable is never run).
        SkipBlockedWake = 16,
        /// A post to the pool does not wake a sleeping worker.
        PoolSkipWake = 32,
        /// Pool workers exit at shutdown without draining their queues.
        PoolSkipDrain = 64,
        /// A value-task source's `get_result` does not check the token.
        SkipTokenCheck = 128,
        /// A pooled source is released before its version is bumped (ABA: a stale token
        /// matches the next rental).
        ReleaseBeforeReset = 256,
        /// Renting a pooled source checks and takes it in two steps (double rent).
        RacyRent = 512,
        /// The deadlock proof counts a task queued on *any* context as stuck, so a wait
        /// that needs nothing from the blocked context is reported (a false alarm).
        OverEagerDeadlockProof = 1024,
        /// A blocked wait never runs inline the queued tasks it depends on.
        NoInlineInWait = 2048,
        /// `register` on a cancellation token decides "already canceled?" before taking the
        /// source's lock, so a cancel in between neither runs the callback inline nor finds
        /// it in the list: the callback never runs and `unregister` says it was removed
        /// only if asked (a lost callback; linked sources built on it are never canceled).
        CancelRacyRegister = 4096,
        /// Dropping a registration does not wait for its callback running on another
        /// thread, so the callback may still be running after the drop returned.
        CancelSkipDropWait = 8192,
        /// `cancel` checks and marks "cancellation started" under two separate lock
        /// acquisitions, so two racing cancels both run callbacks, on two threads.
        CancelRacyTransition = 16384,
        /// The `cancelled()` future registers its wake-up callback before storing its
        /// waker, and does not look at the flag again: a cancel in between is never seen.
        CancelledLateWaker = 32768,
        /// `cancel` runs the callbacks first registered first (FIFO), not LIFO.
        CancelFifo = 65536,
        /// `cancel` raises "cancellation requested" only after the callbacks ran.
        CancelFlagLate = 131072,
        /// `cancel` leaves a running callback's entry in the list until it has finished,
        /// so an `unregister` meanwhile "removes" it and returns `true` although the
        /// callback ran.
        CancelRemoveAfterRun = 262144,
        /// `when_any` leaves its continuations on the losing inputs (a leak of wakers).
        WhenAnyKeepLosers = 524288,
        /// `when_all` counts arrivals with a read and a write under separate locks, so two
        /// inputs completing together can both miss (or both see) the last arrival.
        WhenAllRacyCount = 1048576,
        /// `when_each` takes the consumer's waker before queueing the completed input, in
        /// a separate lock: a poll in between parks with nothing left to wake it.
        WhenEachLostWake = 2097152,
        /// The unobserved-error check forgets whether it already reported, and does not
        /// leave the decision to a completion that is running its waiters, so the last
        /// handle's drop and the completion can both report the same fault.
        UnobservedDoubleReport = 4194304,
    }

    // A plain OS thread-local on purpose: see the type's docs.
    std::thread_local! {
        static KNOBS: Cell<u32> = const { Cell::new(0) };
    }

    /// Runs `f` with `knob` switched on for this OS thread.
    pub fn with_knob<R>(knob: Knob, f: impl FnOnce() -> R) -> R {
        let previous = KNOBS.with(|k| k.replace(k.get() | knob as u32));
        let result = f();
        KNOBS.with(|k| k.set(previous));
        result
    }

    /// Whether `knob` is on.
    pub(crate) fn on(knob: Knob) -> bool {
        KNOBS.with(|k| k.get() & knob as u32 != 0)
    }
}

/// Production builds: no knobs.
#[cfg(not(any(loom, shuttle)))]
pub(crate) mod knobs {
    #[derive(Clone, Copy)]
    pub(crate) enum Knob {
        RacyRegister,
        RacyComplete,
        ForgetWakeWhileRunning,
        IgnoreCapture,
        SkipBlockedWake,
        PoolSkipWake,
        PoolSkipDrain,
        SkipTokenCheck,
        ReleaseBeforeReset,
        RacyRent,
        OverEagerDeadlockProof,
        NoInlineInWait,
        CancelRacyRegister,
        CancelSkipDropWait,
        CancelRacyTransition,
        CancelledLateWaker,
        CancelFifo,
        CancelFlagLate,
        CancelRemoveAfterRun,
        WhenAnyKeepLosers,
        WhenAllRacyCount,
        WhenEachLostWake,
        UnobservedDoubleReport,
    }

    #[inline(always)]
    pub(crate) fn on(_knob: Knob) -> bool {
        false
    }
}
