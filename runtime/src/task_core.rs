//! The completion core shared by every handle to one task: its outcome and its waiters.
//!
//! # Rules
//!
//! 1. The outcome is written once, under the lock, by the single winner of
//!    [`TaskCore::try_complete`]. A loser sees the outcome already set *under the same lock*,
//!    so when it returns the task is observably complete (DESIGN: "a loser returns only once
//!    the task is observably complete").
//! 2. A waiter is registered under the lock only while the outcome is unset; otherwise it
//!    is handed back and the caller resumes it itself. So every waiter registered is taken
//!    by exactly one completion, and none is lost.
//! 3. The winner takes all waiters out under the lock and runs them after unlocking, so
//!    waiters never run under a task lock, in registration order: internal callbacks (wake
//!    blocked waits) run as they come. If the first continuation can run inline on the completing
//!    thread (it is on the context that continuation captured, or it captured nothing),
//!    every other continuation is queued in registration order and the first runs inline
//!    last (.NET runs the synchronous continuation after queuing the asynchronous ones).
//!    Otherwise — or with `RUN_CONTINUATIONS_ASYNCHRONOUSLY` — all are queued in
//!    registration order. Either way, continuations start in registration order.
//! 4. Unregistering (a dropped awaiter) removes its waiter under the lock; a waiter already
//!    taken by a completion is simply not found.
//! 5. Handles and observation (see `unobserved.rs`): the core counts its handles (`Task`
//!    values, awaits in flight, a completion source) and whether its error was observed.
//!    "Report the unobserved fault" is decided under the lock, by whichever comes last of
//!    {the last handle dropped, the end of the completion (after its waiters ran)}, and
//!    marks it reported: so it happens exactly once, and never for an error that was
//!    observed first — also not by a waiter of the completion itself.

use std::panic::Location;

use crate::awaiter::Continuation;
use crate::error::TaskError;
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Mutex};
use crate::task::{TaskId, TaskStatus};
use crate::unobserved::{self, Hooks};

/// Something waiting for a task to complete.
pub(crate) enum Waiter {
    /// An `.await` suspended on the task.
    Resume(Continuation),
    /// A runtime-internal callback (waking a blocked wait); short, never blocks.
    Callback(Box<dyn FnOnce() + Send + 'static>),
}

pub(crate) struct TaskCore<T> {
    pub(crate) id: TaskId,
    pub(crate) location: &'static Location<'static>,
    run_continuations_asynchronously: bool,
    state: Mutex<CoreState<T>>,
}

struct CoreState<T> {
    outcome: Option<Result<T, TaskError>>,
    waiters: Vec<(u64, Waiter)>,
    next_key: u64,
    /// Rule 5.
    handles: usize,
    observed: bool,
    reported: bool,
    /// The completion is running its waiters: a handle released meanwhile leaves the
    /// report decision to the completion's final check, after the waiters (an internal
    /// one may observe the error).
    completing: bool,
    /// The hooks of the context the task was spawned onto (`None`: the global hook).
    hooks: Option<Arc<Hooks>>,
}

impl<T> TaskCore<T> {
    pub(crate) fn new(
        location: &'static Location<'static>,
        run_continuations_asynchronously: bool,
    ) -> Self {
        TaskCore {
            id: TaskId::next(),
            location,
            run_continuations_asynchronously,
            state: Mutex::new(CoreState {
                outcome: None,
                waiters: Vec::new(),
                next_key: 0,
                handles: 0,
                observed: false,
                reported: false,
                completing: false,
                hooks: None,
            }),
        }
    }

    pub(crate) fn completed(
        outcome: Result<T, TaskError>,
        location: &'static Location<'static>,
    ) -> Self {
        let core = TaskCore::new(location, false);
        core.state.lock().outcome = Some(outcome);
        core
    }

    pub(crate) fn status(&self) -> TaskStatus {
        match &self.state.lock().outcome {
            None => TaskStatus::Pending,
            Some(Ok(_)) => TaskStatus::Succeeded,
            Some(Err(error)) => error.status(),
        }
    }

    pub(crate) fn is_completed(&self) -> bool {
        self.state.lock().outcome.is_some()
    }

    /// Runs `f` on the outcome (`None` while pending).
    pub(crate) fn with_outcome<R>(&self, f: impl FnOnce(Option<&Result<T, TaskError>>) -> R) -> R {
        f(self.state.lock().outcome.as_ref())
    }

    /// Like [`with_outcome`](Self::with_outcome), and marks an error as observed (rule 5).
    pub(crate) fn with_outcome_observing<R>(
        &self,
        f: impl FnOnce(Option<&Result<T, TaskError>>) -> R,
    ) -> R {
        let mut state = self.state.lock();
        if matches!(state.outcome, Some(Err(_))) {
            state.observed = true;
        }
        f(state.outcome.as_ref())
    }

    /// Marks the error (if any, now or later) as observed.
    pub(crate) fn mark_observed(&self) {
        self.state.lock().observed = true;
    }

    /// Which context's hooks report this task's unobserved fault.
    pub(crate) fn set_hooks(&self, hooks: Option<Arc<Hooks>>) {
        self.state.lock().hooks = hooks;
    }

    /// How many continuations and callbacks are registered (for leak checks).
    pub(crate) fn waiter_count(&self) -> usize {
        self.state.lock().waiters.len()
    }

    /// How many handles exist now.
    pub(crate) fn handle_count(&self) -> usize {
        self.state.lock().handles
    }

    /// A new handle (a `Task` value or an await in flight).
    pub(crate) fn acquire_handle(&self) {
        self.state.lock().handles += 1;
    }

    /// A handle went away; the last one reports an unobserved fault (rule 5).
    pub(crate) fn release_handle(&self) {
        let report = {
            let mut state = self.state.lock();
            state.handles = state.handles.saturating_sub(1);
            self.take_unobserved(&mut state)
        };
        self.report(report);
    }

    /// The fault to report, if this is the moment (rule 5): no handles, faulted, never
    /// observed, not yet reported.
    fn take_unobserved(&self, state: &mut CoreState<T>) -> Option<(TaskError, Option<Arc<Hooks>>)> {
        // The deliberate bug forgets both guards: the "already reported" flag, and the
        // hand-off that leaves the decision to a completion running its waiters.
        let racy = knobs::on(Knob::UnobservedDoubleReport);
        let reported = state.reported && !racy;
        let completing = state.completing && !racy;
        if state.handles != 0 || state.observed || reported || completing {
            return None;
        }
        match &state.outcome {
            Some(Err(error)) if error.is_faulted() => {
                state.reported = true;
                Some((error.clone(), state.hooks.clone()))
            }
            _ => None,
        }
    }

    fn report(&self, report: Option<(TaskError, Option<Arc<Hooks>>)>) {
        if let Some((error, hooks)) = report {
            unobserved::report_unobserved(hooks.as_ref(), self.id, self.location, error);
        }
    }

    /// Registers `waiter` (rule 2): its key, or the waiter back if the task is complete.
    pub(crate) fn register(&self, waiter: Waiter) -> Result<u64, Waiter> {
        if knobs::on(Knob::RacyRegister) && self.is_completed() {
            return Err(waiter);
        }
        let mut state = self.state.lock();
        if !knobs::on(Knob::RacyRegister) && state.outcome.is_some() {
            return Err(waiter);
        }
        let key = state.next_key;
        state.next_key += 1;
        state.waiters.push((key, waiter));
        Ok(key)
    }

    /// Registers an internal `callback` (rule 2), or runs it now if the task is complete;
    /// the key if it was registered (for [`unregister`](Self::unregister)).
    pub(crate) fn on_complete(&self, callback: Box<dyn FnOnce() + Send + 'static>) -> Option<u64> {
        match self.register(Waiter::Callback(callback)) {
            Ok(key) => Some(key),
            Err(waiter) => {
                if let Waiter::Callback(callback) = waiter {
                    callback();
                }
                None
            }
        }
    }

    /// Removes a registered waiter (rule 4); false if a completion already took it.
    pub(crate) fn unregister(&self, key: u64) -> bool {
        let removed = {
            let mut state = self.state.lock();
            let position = state.waiters.iter().position(|(k, _)| *k == key);
            position.map(|index| state.waiters.remove(index))
        };
        // Dropped unlocked: a combinator's callback owns a handle of this very task, and
        // releasing it takes this lock.
        removed.is_some()
    }

    /// Completes the task (rule 1), or hands the outcome back if it was already complete.
    pub(crate) fn try_complete(
        &self,
        outcome: Result<T, TaskError>,
    ) -> Result<(), Result<T, TaskError>> {
        if knobs::on(Knob::RacyComplete) {
            if self.is_completed() {
                return Err(outcome);
            }
            // The deliberate bug: another completer may slip in here.
            sync::spin_loop();
        }
        let waiters = {
            let mut state = self.state.lock();
            if !knobs::on(Knob::RacyComplete) && state.outcome.is_some() {
                return Err(outcome);
            }
            state.outcome = Some(outcome);
            state.completing = true;
            std::mem::take(&mut state.waiters)
        };
        self.run_waiters(waiters);
        // After the waiters: an internal one (when_all, wait_async) may have observed it.
        let report = {
            let mut state = self.state.lock();
            state.completing = false;
            self.take_unobserved(&mut state)
        };
        self.report(report);
        Ok(())
    }

    /// Rule 3.
    fn run_waiters(&self, waiters: Vec<(u64, Waiter)>) {
        // Decide first whether the first continuation may run inline, then walk the list
        // once (no second list: completing a task allocates nothing).
        let inline_first = !self.run_continuations_asynchronously
            && waiters
                .iter()
                .find_map(|(_, waiter)| match waiter {
                    Waiter::Resume(continuation) => Some(continuation),
                    Waiter::Callback(_) => None,
                })
                .is_some_and(Continuation::would_run_inline_here);
        let mut first = None;
        for (_, waiter) in waiters {
            match waiter {
                Waiter::Callback(callback) => callback(),
                Waiter::Resume(continuation) if inline_first && first.is_none() => {
                    first = Some(continuation);
                }
                Waiter::Resume(continuation) => continuation.dispatch(false),
            }
        }
        if let Some(first) = first {
            first.dispatch(true);
        }
    }
}
