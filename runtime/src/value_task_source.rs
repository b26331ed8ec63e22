//! The value-task source contract (.NET's `IValueTaskSource<T>`) and its reusable core
//! (.NET's `ManualResetValueTaskSourceCore<T>`).
//!
//! A source backs many operations over its life, one at a time. Each operation is named by
//! a *token*, the source's version when the operation began; every call takes the token, so
//! a consumer holding an old one is refused with a typed error and never sees another
//! operation's result.
//!
//! # Rules of [`ManualResetValueTaskSourceCore`]
//!
//! 1. Every method checks the token and acts under one lock: a token is either current for
//!    the whole call or refused, never current for half of it (a reset racing a
//!    `get_result` cannot hand out the next operation's result).
//! 2. An operation completes once; a second completion is [`SourceErrorKind::AlreadyCompleted`].
//! 3. One continuation per operation; a second is refused
//!    ([`SourceErrorKind::ContinuationAlreadyRegistered`]) and handed back, so its awaiter is
//!    resumed and reads the error instead of hanging.
//! 4. A continuation registered after completion is queued (resumed through its scheduler),
//!    never run inline on the registering thread.
//! 5. The result is taken out once (`get_result` moves it); a second take is
//!    [`SourceErrorKind::ResultAlreadyTaken`].
//! 6. [`reset`](ManualResetValueTaskSourceCore::reset) bumps the version (wrapping; at a
//!    billion resets a second a `u64` wraps after 584 years, and only a consumer holding a
//!    token that old could be confused) and forgets the outcome and continuation.

use std::error::Error;
use std::fmt;

use crate::awaiter::Continuation;
use crate::error::TaskError;
use crate::sync::knobs::{self, Knob};
use crate::sync::{Arc, Mutex};
use crate::task::TaskStatus;

/// What a value-task source does (.NET's `IValueTaskSource<T>`). Every call names the
/// operation by its token.
pub trait ValueTaskSource<T> {
    /// The operation's status.
    fn status(&self, token: u64) -> Result<TaskStatus, ValueTaskSourceError>;

    /// Registers the continuation to resume when the operation completes. If refused, the
    /// continuation is handed back with the error so the caller can resume it.
    fn on_completed(&self, token: u64, continuation: Continuation) -> Result<(), Refused>;

    /// Takes the operation's outcome (once, after completion).
    fn get_result(&self, token: u64) -> Result<Result<T, TaskError>, ValueTaskSourceError>;

    /// The consumer dropped its value task without taking the result; a pooled source
    /// can recycle itself once the operation completes. The default does nothing.
    fn on_abandoned(&self, token: u64) {
        let _ = token;
    }
}

/// A shared source is a source: `Arc<ManualResetValueTaskSourceCore<T>>` (or any shared
/// source) can back value tasks directly, with the producer keeping its own `Arc`.
impl<T, S: ValueTaskSource<T> + ?Sized> ValueTaskSource<T> for Arc<S> {
    fn status(&self, token: u64) -> Result<TaskStatus, ValueTaskSourceError> {
        (**self).status(token)
    }

    fn on_completed(&self, token: u64, continuation: Continuation) -> Result<(), Refused> {
        (**self).on_completed(token, continuation)
    }

    fn get_result(&self, token: u64) -> Result<Result<T, TaskError>, ValueTaskSourceError> {
        (**self).get_result(token)
    }

    fn on_abandoned(&self, token: u64) {
        (**self).on_abandoned(token);
    }
}

/// A refused continuation registration: the error, and the continuation handed back.
#[derive(Debug)]
pub struct Refused {
    /// Why the registration was refused.
    pub error: ValueTaskSourceError,
    /// The continuation, not registered; resume it so its awaiter reads the error.
    pub continuation: Continuation,
}

/// A misuse of a value-task source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTaskSourceError {
    kind: SourceErrorKind,
}

/// The kinds of [`ValueTaskSourceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// The token names an operation other than the source's current one.
    StaleToken {
        /// The token used.
        token: u64,
        /// The source's current version.
        current: u64,
    },
    /// The result was asked for before the operation completed.
    NotCompleted,
    /// A second continuation was registered for one operation.
    ContinuationAlreadyRegistered,
    /// The operation was completed twice.
    AlreadyCompleted,
    /// The result was taken twice.
    ResultAlreadyTaken,
    /// A pooled operation's value task was asked for twice: an operation has one consumer.
    ConsumerAlreadyHandedOut,
}

impl ValueTaskSourceError {
    pub(crate) fn new(kind: SourceErrorKind) -> Self {
        ValueTaskSourceError { kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> SourceErrorKind {
        self.kind
    }
}

impl fmt::Display for ValueTaskSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SourceErrorKind::StaleToken { token, current } => write!(
                f,
                "value task token {token} is stale: the source was reset to version {current}; \
                 a ValueTask may be awaited once (call preserve() or as_task() to await a \
                 result more than once)"
            ),
            SourceErrorKind::NotCompleted => f.write_str(
                "the value task's result was requested before its operation completed; await \
                 it, or check its status first",
            ),
            SourceErrorKind::ContinuationAlreadyRegistered => f.write_str(
                "a second continuation was registered for one value task operation; a \
                 ValueTask may be awaited once (call preserve() or as_task() to share it)",
            ),
            SourceErrorKind::AlreadyCompleted => f.write_str(
                "the value task's operation was already completed; complete each operation \
                 once, and reset the source before reusing it",
            ),
            SourceErrorKind::ConsumerAlreadyHandedOut => f.write_str(
                "this pooled operation's ValueTask was already handed out; an operation has \
                 one consumer (call preserve() or as_task() on that ValueTask to share it)",
            ),
            SourceErrorKind::ResultAlreadyTaken => f.write_str(
                "the value task's result was already taken; a ValueTask may be awaited once \
                 (call preserve() or as_task() to await a result more than once)",
            ),
        }
    }
}

impl Error for ValueTaskSourceError {}

/// The reusable core of a value-task source (.NET's `ManualResetValueTaskSourceCore<T>`).
///
/// See the module docs for its rules.
pub struct ManualResetValueTaskSourceCore<T> {
    state: Mutex<CoreState<T>>,
    run_continuations_asynchronously: bool,
}

struct CoreState<T> {
    version: u64,
    outcome: Option<Result<T, TaskError>>,
    completed: bool,
    continuation: Option<Continuation>,
}

impl<T> ManualResetValueTaskSourceCore<T> {
    /// A core at version 0, whose continuation may run inline on the completing thread.
    pub fn new() -> Self {
        Self::with_options(false)
    }

    /// A core that, with `run_continuations_asynchronously`, always queues its
    /// continuation.
    pub fn with_options(run_continuations_asynchronously: bool) -> Self {
        ManualResetValueTaskSourceCore {
            state: Mutex::new(CoreState {
                version: 0,
                outcome: None,
                completed: false,
                continuation: None,
            }),
            run_continuations_asynchronously,
        }
    }

    /// The current version: the token of the current operation.
    pub fn version(&self) -> u64 {
        self.state.lock().version
    }

    /// Starts a new operation: bumps the version and forgets the old outcome (rule 6).
    /// Returns the new version.
    pub fn reset(&self) -> u64 {
        let mut state = self.state.lock();
        state.version = state.version.wrapping_add(1);
        state.outcome = None;
        state.completed = false;
        state.continuation = None;
        state.version
    }

    /// Completes the current operation with `value`.
    pub fn set_result(&self, value: T) -> Result<(), ValueTaskSourceError> {
        self.complete(None, Ok(value))
    }

    /// Completes the current operation with `error`.
    pub fn set_exception(&self, error: impl Into<TaskError>) -> Result<(), ValueTaskSourceError> {
        self.complete(None, Err(error.into()))
    }

    /// Completes operation `token` only if it is still the current one (rule 1): a
    /// producer bound to an operation cannot complete a later one.
    pub fn set_outcome_for(
        &self,
        token: u64,
        outcome: Result<T, TaskError>,
    ) -> Result<(), ValueTaskSourceError> {
        self.complete(Some(token), outcome)
    }

    fn complete(
        &self,
        token: Option<u64>,
        outcome: Result<T, TaskError>,
    ) -> Result<(), ValueTaskSourceError> {
        let continuation = {
            let mut state = self.state.lock();
            if let Some(token) = token {
                check_token(&state, token)?;
            }
            if state.completed {
                return Err(ValueTaskSourceError::new(SourceErrorKind::AlreadyCompleted));
            }
            state.completed = true;
            state.outcome = Some(outcome);
            state.continuation.take()
        };
        if let Some(continuation) = continuation {
            continuation.dispatch(!self.run_continuations_asynchronously);
        }
        Ok(())
    }

    /// Whether the current operation completed and nobody has taken its result.
    pub(crate) fn is_completed_untaken(&self) -> bool {
        let state = self.state.lock();
        state.completed && state.outcome.is_some()
    }
}

fn check_token<T>(state: &CoreState<T>, token: u64) -> Result<(), ValueTaskSourceError> {
    if token == state.version {
        Ok(())
    } else {
        Err(ValueTaskSourceError::new(SourceErrorKind::StaleToken {
            token,
            current: state.version,
        }))
    }
}

impl<T> ValueTaskSource<T> for ManualResetValueTaskSourceCore<T> {
    fn status(&self, token: u64) -> Result<TaskStatus, ValueTaskSourceError> {
        let state = self.state.lock();
        check_token(&state, token)?;
        Ok(match (&state.outcome, state.completed) {
            (_, false) => TaskStatus::Pending,
            (Some(Ok(_)), true) => TaskStatus::Succeeded,
            (Some(Err(error)), true) => error.status(),
            (None, true) => {
                return Err(ValueTaskSourceError::new(
                    SourceErrorKind::ResultAlreadyTaken,
                ))
            }
        })
    }

    fn on_completed(&self, token: u64, continuation: Continuation) -> Result<(), Refused> {
        let mut state = self.state.lock();
        let refused = match check_token(&state, token) {
            Err(error) => error,
            Ok(()) if state.continuation.is_some() => {
                ValueTaskSourceError::new(SourceErrorKind::ContinuationAlreadyRegistered)
            }
            Ok(()) if state.completed => {
                drop(state);
                // Rule 4: queued, never inline.
                continuation.resume();
                return Ok(());
            }
            Ok(()) => {
                state.continuation = Some(continuation);
                return Ok(());
            }
        };
        Err(Refused {
            error: refused,
            continuation,
        })
    }

    fn get_result(&self, token: u64) -> Result<Result<T, TaskError>, ValueTaskSourceError> {
        let mut state = self.state.lock();
        if !knobs::on(Knob::SkipTokenCheck) {
            check_token(&state, token)?;
        }
        if !state.completed {
            return Err(ValueTaskSourceError::new(SourceErrorKind::NotCompleted));
        }
        state.outcome.take().ok_or(ValueTaskSourceError::new(
            SourceErrorKind::ResultAlreadyTaken,
        ))
    }
}

impl<T> Default for ManualResetValueTaskSourceCore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for ManualResetValueTaskSourceCore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ManualResetValueTaskSourceCore")
            .field("version", &state.version)
            .field("completed", &state.completed)
            .finish_non_exhaustive()
    }
}
