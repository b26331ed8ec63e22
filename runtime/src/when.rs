//! Combinators: [`when_all`], [`when_any`], [`when_each`] (.NET's `Task.WhenAll`,
//! `Task.WhenAny`, `Task.WhenEach`).
//!
//! # Rules
//!
//! 1. **`when_all`** waits for every input, never short-circuiting. Any input faulted →
//!    Faulted with the errors of every faulted input, in input order, one level flattened
//!    (a faulted input's own list of errors is spliced in). Else any canceled → Canceled,
//!    with the first canceled input's cancellation (and its token).
//!    Else the results in input order. An empty input gives a completed task at once. The
//!    inputs' errors count as observed (they move into the `when_all` task). An input given
//!    twice counts twice.
//! 2. **`when_any`** with no input is an error at the call ([`WhenAnyError::Empty`]).
//!    Otherwise its task always succeeds with the winning *task*, whatever that task's
//!    outcome, and does not observe it: await the winner to get its outcome. Among inputs
//!    already complete at the call, the first in input order wins; otherwise the first to
//!    complete. The losers are untouched (not canceled, not observed); the `when_any`
//!    removes its continuations from them as soon as it has a winner, so nothing leaks.
//! 3. **`when_each`** is a [`Stream`] of the inputs as they complete: those already complete
//!    at the call first, in input order, then in completion order. It registers on every
//!    input at the call (eagerly). It is a value consumed by enumeration, so it can be
//!    enumerated once (the compiler rejects a second enumeration — .NET throws at run
//!    time). If its token is canceled, the next item is a cancellation carrying the token,
//!    and the stream ends; dropping it removes its continuations from pending inputs.
//! 4. Continuations of the combinators' own tasks follow the usual rules: the first may run
//!    inline on the thread that completes the last (or winning) input if it is on the
//!    captured context.
//!
//! A blocking `wait` on a combinator's task cannot see through it to the inputs' producers:
//! its deadlock proof treats it like a completion source's task (see `wait.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll, Waker};

use futures_core::Stream;

use crate::cancellation::{CancellationToken, CancellationTokenRegistration};
use crate::error::TaskError;
use crate::sync::knobs::{self, Knob};
use crate::sync::{self, Arc, Mutex};
use crate::task::Task;
use crate::task_core::TaskCore;

// ---------------------------------------------------------------------------------------
// when_all

struct WhenAll<T> {
    /// The inputs (handles: they keep unobserved errors accountable until they are
    /// observed here), taken by the last arrival.
    inputs: Mutex<Option<Vec<Task<T>>>>,
    remaining: Mutex<usize>,
    result: Arc<TaskCore<Vec<T>>>,
}

/// A task that completes when every input has (rule 1).
#[track_caller]
pub fn when_all<T, I>(tasks: I) -> Task<Vec<T>>
where
    I: IntoIterator<Item = Task<T>>,
    T: Clone + Send + 'static,
{
    let inputs: Vec<Task<T>> = tasks.into_iter().collect();
    let location = Location::caller();
    if inputs.is_empty() {
        return Task::completed_at(Vec::new(), location);
    }
    let cores: Vec<Arc<TaskCore<T>>> = inputs.iter().map(|task| task.core.clone()).collect();
    let result = Arc::new(TaskCore::new(location, false));
    let task = Task::from_parts(result.clone(), None);
    let state = Arc::new(WhenAll {
        inputs: Mutex::new(Some(inputs)),
        remaining: Mutex::new(cores.len()),
        result,
    });
    for core in &cores {
        let state = state.clone();
        core.on_complete(Box::new(move || state.arrive()));
    }
    task
}

impl<T: Clone> WhenAll<T> {
    /// One input completed; the last one completes the result.
    fn arrive(&self) {
        if knobs::on(Knob::WhenAllRacyCount) {
            // The deliberate bug: read, then write, under two lock acquisitions.
            let seen = *self.remaining.lock();
            sync::spin_loop();
            *self.remaining.lock() = seen - 1;
            if seen - 1 != 0 {
                return;
            }
        } else {
            let mut remaining = self.remaining.lock();
            *remaining -= 1;
            if *remaining != 0 {
                return;
            }
        }
        let Some(inputs) = self.inputs.lock().take() else {
            return;
        };
        let outcomes: Vec<Result<T, TaskError>> = inputs
            .iter()
            .map(|task| {
                task.core
                    .with_outcome_observing(|outcome| outcome.cloned())
                    .unwrap_or_else(|| Err(TaskError::canceled()))
            })
            .collect();
        let faulted = TaskError::aggregate(
            outcomes
                .iter()
                .filter_map(|outcome| outcome.as_ref().err())
                .filter(|error| error.is_faulted()),
        );
        // Canceled: the first canceled input's cancellation, with its token (as .NET's
        // WhenAll takes the first canceled task's exception).
        let first_canceled = outcomes
            .iter()
            .find_map(|outcome| outcome.as_ref().err())
            .cloned();
        let outcome = match (faulted, first_canceled) {
            (Some(error), _) | (None, Some(error)) => Err(error),
            (None, None) => Ok(outcomes.into_iter().filter_map(Result::ok).collect()),
        };
        let _ = self.result.try_complete(outcome);
        // The input handles go after the outcome is set; their errors are observed.
        drop(inputs);
    }
}

// ---------------------------------------------------------------------------------------
// when_any

/// `when_any` was given nothing to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenAnyError {
    /// No input task (.NET throws `ArgumentException` at the call).
    Empty,
}

impl fmt::Display for WhenAnyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhenAnyError::Empty => f.write_str(
                "when_any needs at least one task: with none, no task could ever win; check \
                 for an empty list before calling it",
            ),
        }
    }
}

impl std::error::Error for WhenAnyError {}

struct WhenAny<T> {
    state: Mutex<AnyState<T>>,
    result: Arc<TaskCore<Task<T>>>,
}

struct AnyState<T> {
    won: bool,
    /// The registered continuations, for removal once there is a winner.
    keys: Vec<(Arc<TaskCore<T>>, u64)>,
}

/// A task that succeeds with the first input to complete (rule 2).
#[track_caller]
pub fn when_any<T, I>(tasks: I) -> Result<Task<Task<T>>, WhenAnyError>
where
    I: IntoIterator<Item = Task<T>>,
    T: Send + 'static,
{
    let inputs: Vec<Task<T>> = tasks.into_iter().collect();
    let location = Location::caller();
    if inputs.is_empty() {
        return Err(WhenAnyError::Empty);
    }
    if let Some(done) = inputs.iter().find(|task| task.is_completed()) {
        return Ok(Task::completed_at(done.clone(), location));
    }
    let result = Arc::new(TaskCore::new(location, false));
    let task = Task::from_parts(result.clone(), None);
    let any = Arc::new(WhenAny {
        state: Mutex::new(AnyState {
            won: false,
            keys: Vec::new(),
        }),
        result,
    });
    for input in &inputs {
        let core = input.core.clone();
        let winner = Task::from_parts(core.clone(), input.producer.clone());
        let for_callback = any.clone();
        if let Some(key) = core.on_complete(Box::new(move || for_callback.win(winner))) {
            let mut state = any.state.lock();
            if state.won {
                drop(state);
                core.unregister(key);
            } else {
                state.keys.push((core, key));
            }
        }
        if any.state.lock().won {
            break;
        }
    }
    Ok(task)
}

impl<T> WhenAny<T> {
    fn win(&self, winner: Task<T>) {
        let keys = {
            let mut state = self.state.lock();
            if state.won {
                return;
            }
            state.won = true;
            std::mem::take(&mut state.keys)
        };
        let _ = self.result.try_complete(Ok(winner));
        if knobs::on(Knob::WhenAnyKeepLosers) {
            // The deliberate bug: the losers keep their continuations.
            drop(keys);
            return;
        }
        // Remove the continuations from the losers (the winner's was taken already).
        for (core, key) in keys {
            core.unregister(key);
        }
    }
}

// ---------------------------------------------------------------------------------------
// when_each

/// The stream of [`when_each`] (rule 3).
#[must_use = "streams do nothing unless polled"]
pub struct WhenEach<T> {
    shared: Arc<EachShared<T>>,
    token: CancellationToken,
    _registration: Option<CancellationTokenRegistration>,
    ended: bool,
}

struct EachShared<T> {
    state: Mutex<EachState<T>>,
}

struct EachState<T> {
    ready: VecDeque<Task<T>>,
    remaining: usize,
    canceled: bool,
    waker: Option<Waker>,
    /// Continuations on pending inputs, removed when the stream is dropped.
    keys: Vec<(Arc<TaskCore<T>>, u64)>,
}

/// A stream of the inputs in completion order (rule 3); `token` ends it with a
/// cancellation ([`CancellationToken::none`] for never).
pub fn when_each<T, I>(tasks: I, token: &CancellationToken) -> WhenEach<T>
where
    I: IntoIterator<Item = Task<T>>,
    T: Send + 'static,
{
    let inputs: Vec<Task<T>> = tasks.into_iter().collect();
    let (ready, pending): (Vec<Task<T>>, Vec<Task<T>>) =
        inputs.into_iter().partition(Task::is_completed);
    let shared = Arc::new(EachShared {
        state: Mutex::new(EachState {
            remaining: pending.len(),
            ready: ready.into(),
            canceled: false,
            waker: None,
            keys: Vec::new(),
        }),
    });
    for input in pending {
        let core = input.core.clone();
        let for_callback = shared.clone();
        let key = core.on_complete(Box::new(move || for_callback.arrive(input)));
        if let Some(key) = key {
            shared.state.lock().keys.push((core, key));
        }
    }
    let registration = {
        let shared = shared.clone();
        token.register(move || shared.cancel())
    };
    WhenEach {
        shared,
        token: token.clone(),
        _registration: Some(registration),
        ended: false,
    }
}

impl<T> EachShared<T> {
    fn arrive(&self, task: Task<T>) {
        let waker = if knobs::on(Knob::WhenEachLostWake) {
            // The deliberate bug: the waker is taken before the input is queued.
            let waker = self.state.lock().waker.take();
            sync::spin_loop();
            let mut state = self.state.lock();
            state.remaining -= 1;
            state.ready.push_back(task);
            waker
        } else {
            let mut state = self.state.lock();
            state.remaining -= 1;
            state.ready.push_back(task);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn cancel(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.canceled = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Stream for WhenEach<T> {
    type Item = Result<Task<T>, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut state = self.shared.state.lock();
        if state.canceled {
            drop(state);
            self.ended = true;
            return Poll::Ready(Some(Err(TaskError::canceled_by(&self.token))));
        }
        if let Some(task) = state.ready.pop_front() {
            return Poll::Ready(Some(Ok(task)));
        }
        if state.remaining == 0 {
            drop(state);
            self.ended = true;
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.ended {
            return (0, Some(0));
        }
        let state = self.shared.state.lock();
        let left = state.ready.len() + state.remaining;
        (0, Some(left + 1))
    }
}

impl<T> Drop for WhenEach<T> {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut self.shared.state.lock().keys);
        for (core, key) in keys {
            core.unregister(key);
        }
    }
}

impl<T> fmt::Debug for WhenEach<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("WhenEach")
            .field("ready", &state.ready.len())
            .field("pending", &state.remaining)
            .field("canceled", &state.canceled)
            .finish()
    }
}
