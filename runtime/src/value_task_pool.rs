//! A bounded, thread-safe pool of reusable value-task sources: the allocation-free path
//! for operations that usually complete asynchronously.
//!
//! An operation that can complete synchronously returns `ValueTask::from_result` and never
//! touches the pool. One that must suspend *rents* a source at that point
//! ([`ValueTaskSourcePool::rent`]), hands its [`ValueTask`] to the consumer, and completes
//! it through the [`ValueTaskProducer`]. The consumer's `get_result` (the end of its
//! `.await`) returns the source to the pool with a new version.
//!
//! # Rules
//!
//! 1. A slot is rented by winning a compare-exchange of its `rented` flag from false to
//!    true, so no slot is rented twice. A thread tries its *home* slot first (chosen from
//!    its thread id, as .NET keeps a per-thread slot), then the others in order. When every
//!    slot is out, `rent` allocates a source that is not pooled: the pool bounds what it
//!    keeps, never what it serves.
//! 2. A slot is returned exactly once per rental, after its result was taken (or, if the
//!    consumer dropped its value task, once the operation completes): the version is
//!    bumped first, then `rented` is released. A token from an earlier rental is therefore
//!    stale by the time anyone else can rent the slot, which defeats ABA.
//! 3. An operation has one consumer: the producer hands out its value task once; asking
//!    again gives a value task already faulted with
//!    [`SourceErrorKind::ConsumerAlreadyHandedOut`](crate::SourceErrorKind::ConsumerAlreadyHandedOut).
//!    So whoever drops the one consumer handle really abandoned the operation.
//! 4. A producer is bound to its rental's token: completing after the slot moved on is a
//!    [`SourceErrorKind::StaleToken`](crate::SourceErrorKind::StaleToken) error. A producer
//!    dropped without completing faults its operation as abandoned.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::error::TaskError;
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, AtomicBool, Mutex, Ordering};
use crate::task::TaskStatus;
use crate::value_task::ValueTask;
use crate::value_task_source::{
    ManualResetValueTaskSourceCore, Refused, SourceErrorKind, ValueTaskSource, ValueTaskSourceError,
};
use crate::Continuation;

/// A bounded pool of reusable value-task sources.
pub struct ValueTaskSourcePool<T> {
    slots: Arc<Vec<Arc<Slot<T>>>>,
}

pub(crate) struct Slot<T> {
    rented: AtomicBool,
    pooled: bool,
    /// The consumer dropped its value task before taking the result.
    abandoned: Mutex<bool>,
    core: ManualResetValueTaskSourceCore<T>,
}

impl<T> ValueTaskSourcePool<T> {
    /// A pool keeping `capacity` sources, allocated now (none later while `capacity`
    /// operations or fewer are in flight).
    pub fn new(capacity: usize) -> Self {
        let slots = (0..capacity).map(|_| Arc::new(Slot::new(true))).collect();
        ValueTaskSourcePool {
            slots: Arc::new(slots),
        }
    }

    /// How many sources the pool keeps.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many of its sources are rented now.
    pub fn rented(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.rented.load(Ordering::Acquire))
            .count()
    }

    /// Rents a source for one operation (rule 1).
    pub fn rent(&self) -> ValueTaskProducer<T> {
        let count = self.slots.len();
        if count > 0 {
            let home = BuildHasherDefault::<DefaultHasher>::default()
                .hash_one(sync::current_thread_id()) as usize;
            for offset in 0..count {
                let slot = &self.slots[(home + offset) % count];
                if slot.try_rent() {
                    return ValueTaskProducer::new(slot.clone());
                }
            }
        }
        let overflow = Arc::new(Slot::new(false));
        overflow.rented.store(true, Ordering::Release);
        ValueTaskProducer::new(overflow)
    }
}

impl<T> Clone for ValueTaskSourcePool<T> {
    fn clone(&self) -> Self {
        ValueTaskSourcePool {
            slots: self.slots.clone(),
        }
    }
}

impl<T> fmt::Debug for ValueTaskSourcePool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueTaskSourcePool")
            .field("capacity", &self.capacity())
            .field("rented", &self.rented())
            .finish()
    }
}

impl<T> Slot<T> {
    fn new(pooled: bool) -> Self {
        Slot {
            rented: AtomicBool::new(false),
            pooled,
            abandoned: Mutex::new(false),
            core: ManualResetValueTaskSourceCore::new(),
        }
    }

    /// Rule 2: bump the version, then release the slot.
    fn give_back(&self) {
        *self.abandoned.lock() = false;
        if knobs::on(Knob::ReleaseBeforeReset) {
            self.rented.store(false, Ordering::Release);
            sync::spin_loop();
            self.core.reset();
            return;
        }
        self.core.reset();
        // Release the slot: the reset above happens-before the next rent.
        self.rented.store(false, Ordering::Release);
    }

    /// Rule 1: take the slot if nobody has it.
    fn try_rent(&self) -> bool {
        if knobs::on(Knob::RacyRent) {
            if self.rented.load(Ordering::Acquire) {
                return false;
            }
            sync::spin_loop();
            self.rented.store(true, Ordering::Release);
            return true;
        }
        self.rented
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The producer side of one rented operation: completes it once.
#[must_use = "a producer dropped without completing faults its operation as abandoned"]
pub struct ValueTaskProducer<T> {
    slot: Arc<Slot<T>>,
    token: u64,
    done: bool,
    handed_out: Cell<bool>,
}

impl<T> ValueTaskProducer<T> {
    fn new(slot: Arc<Slot<T>>) -> Self {
        let token = slot.core.version();
        ValueTaskProducer {
            slot,
            token,
            done: false,
            handed_out: Cell::new(false),
        }
    }

    /// The operation's token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The consumer's value task for this operation (rule 3: the first call hands it out;
    /// later calls give a value task faulted with `ConsumerAlreadyHandedOut`).
    pub fn value_task(&self) -> ValueTask<T> {
        if self.handed_out.replace(true) {
            let error = ValueTaskSourceError::new(SourceErrorKind::ConsumerAlreadyHandedOut);
            return ValueTask::from_error(TaskError::from_error(error));
        }
        ValueTask::from_source(
            PooledValueTaskSource {
                slot: self.slot.clone(),
            },
            self.token,
        )
    }

    /// Completes the operation with `value`.
    pub fn set_result(self, value: T) -> Result<(), ValueTaskSourceError> {
        self.complete(Ok(value))
    }

    /// Completes the operation with `error`.
    pub fn set_exception(self, error: impl Into<TaskError>) -> Result<(), ValueTaskSourceError> {
        self.complete(Err(error.into()))
    }

    fn complete(mut self, outcome: Result<T, TaskError>) -> Result<(), ValueTaskSourceError> {
        self.done = true;
        self.slot.core.set_outcome_for(self.token, outcome)?;
        self.recycle_if_abandoned();
        Ok(())
    }

    /// Rule 2: a consumer that dropped its value task left the slot to us.
    fn recycle_if_abandoned(&self) {
        let abandoned = *self.slot.abandoned.lock();
        if abandoned && self.slot.core.is_completed_untaken() {
            // Take the result so it drops, then return the slot.
            if self.slot.core.get_result(self.token).is_ok() && self.slot.pooled {
                self.slot.give_back();
            }
        }
    }
}

impl<T> Drop for ValueTaskProducer<T> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let reason = "its ValueTaskProducer was dropped without completing it".to_owned();
            let outcome = Err(TaskError::abandoned(crate::TaskId::next(), reason));
            if self.slot.core.set_outcome_for(self.token, outcome).is_ok() {
                self.recycle_if_abandoned();
            }
        }
    }
}

impl<T> fmt::Debug for ValueTaskProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueTaskProducer")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// The consumer's handle to a pooled source; what a pooled [`ValueTask`] holds.
pub struct PooledValueTaskSource<T> {
    slot: Arc<Slot<T>>,
}

impl<T> ValueTaskSource<T> for PooledValueTaskSource<T> {
    fn status(&self, token: u64) -> Result<TaskStatus, ValueTaskSourceError> {
        self.slot.core.status(token)
    }

    fn on_completed(&self, token: u64, continuation: Continuation) -> Result<(), Refused> {
        self.slot.core.on_completed(token, continuation)
    }

    fn get_result(&self, token: u64) -> Result<Result<T, TaskError>, ValueTaskSourceError> {
        let outcome = self.slot.core.get_result(token)?;
        if self.slot.pooled {
            self.slot.give_back();
        }
        Ok(outcome)
    }

    fn on_abandoned(&self, token: u64) {
        let mut abandoned = self.slot.abandoned.lock();
        match self.slot.core.status(token) {
            // Completed: take the result now and return the slot.
            Ok(status) if status != TaskStatus::Pending => {
                drop(abandoned);
                let _ = self.get_result(token);
            }
            // Still running: the producer returns the slot when it completes.
            Ok(_) => *abandoned = true,
            Err(error) => debug_assert!(
                matches!(
                    error.kind(),
                    SourceErrorKind::StaleToken { .. } | SourceErrorKind::ResultAlreadyTaken
                ),
                "{error}"
            ),
        }
    }
}

impl<T> fmt::Debug for PooledValueTaskSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledValueTaskSource")
            .field("pooled", &self.slot.pooled)
            .finish_non_exhaustive()
    }
}
