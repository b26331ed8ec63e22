//! A sequential reference model of [`ManualResetValueTaskSourceCore`] and a driver that
//! compares the real core with it, operation by operation.
//!
//! # The model
//!
//! [`Model`] is the core's contract (rules 1–6 of `taskcheck`'s `value_task_source` module)
//! written as plainly as possible: a version, a [`Phase`] (pending, completed with an
//! outcome, or completed with the outcome taken), and the registered continuation, if any.
//! [`Model::apply`] runs one [`Op`] and returns the [`Step`] the real core must produce:
//! the op's [`Outcome`] (a value, a status, or the exact [`SourceErrorKind`]) and which
//! continuation, if any, is resumed during the op.
//!
//! The operations are the core's public API, with every token chosen relative to the
//! version at the time of the op ([`Token`]: current, previous, next, or any `u64`):
//!
//! | [`Op`] | core call |
//! |---|---|
//! | `Reset` | `reset()` |
//! | `SetResult { token: None, .. }` / `SetException { token: None, .. }` | `set_result` / `set_exception` (the source's owner completing) |
//! | `SetResult { token: Some(t), .. }` / `SetException { token: Some(t), .. }` | `set_outcome_for(t, ..)` (a pooled source's producer, bound to its rental's token) |
//! | `GetResult(t)` | `get_result(t)` (the consumer's end of its await) |
//! | `OnCompleted(t)` | `on_completed(t, continuation)` (the consumer's suspension) |
//! | `Status(t)` | `status(t)` |
//!
//! A pooled source ([`taskcheck::ValueTaskSourcePool`]) runs exactly this protocol on its
//! slot's core: the producer completes with `set_outcome_for(its token, ..)`, the consumer
//! registers with `on_completed`, takes the result with `get_result`, and the slot is
//! returned with `reset`.
//!
//! # Generating operations
//!
//! [`Op`] derives [`arbitrary::Arbitrary`] (for cargo-fuzz) and implements
//! [`proptest::arbitrary::Arbitrary`] through [`op_strategy`], which weights the
//! variants and biases tokens toward the current version and its neighbours.
//!
//! # The driver
//!
//! [`run_against_runtime`] applies the ops to a real `ManualResetValueTaskSourceCore<u32>`
//! and to a [`Model`], and returns the first [`Divergence`]. After every op it compares
//! the outcome, the core's version, which continuations were woken during the op, and which
//! continuation the core still holds.
//!
//! A [`Continuation`] can only be made by the runtime's await machinery, so the driver
//! makes one per `OnCompleted` honestly: it polls a
//! [`ConfiguredAwait`] (with [`ConfigureAwaitOptions::NONE`], so nothing is captured) over a
//! tiny [`Awaiter`] that is never complete and hands the continuation it is given to the
//! driver. The poll happens outside any task and context, so the continuation is a plain
//! waker: resuming or dispatching it wakes a counting waker on the calling thread at once,
//! and the driver can see exactly when each one is resumed and whether the core still holds
//! it (the waker's reference count). A refused registration hands the continuation back;
//! the driver resumes it at once, as `ValueTaskAwaiter` does, so the model counts it as
//! woken by that op.
//!
//! The driver never panics: a panic in the runtime is caught and reported as
//! [`DivergenceKind::RuntimePanicked`]. It never blocks: every core call is a short critical
//! section and the counting waker does nothing but count.
//!
//! [`Model::with_flaw`] makes a deliberately wrong model ([`Flaw`]), to show that the
//! comparison can fail (`tests/value_task_source.rs` checks that proptest catches each flaw
//! and shrinks it to one or two ops).

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use proptest::prelude::*;
use taskcheck::{
    Awaiter, ConfigureAwaitOptions, ConfiguredAwait, Continuation, ManualResetValueTaskSourceCore,
    SourceErrorKind, TaskCompletionSource, TaskError, TaskStatus, ValueTaskSource,
    ValueTaskSourceError,
};

use crate::harness::{self, CountingWaker, Wakers};
use crate::{Divergence, DivergenceKind};

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// A token, chosen relative to the source's version when the op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Token {
    /// The current version: the current operation's token.
    Current,
    /// The version before the current one (stale), wrapping below zero.
    Previous,
    /// The version after the current one (from the future), wrapping above `u64::MAX`.
    Next,
    /// Exactly this token.
    Raw(u64),
}

impl Token {
    /// The token this names when the source's version is `current`.
    pub fn resolve(self, current: u64) -> u64 {
        match self {
            Token::Current => current,
            Token::Previous => current.wrapping_sub(1),
            Token::Next => current.wrapping_add(1),
            Token::Raw(token) => token,
        }
    }
}

/// How an operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Failure {
    /// Faulted with [`InjectedFault`]`(n)`.
    Faulted(u8),
    /// Canceled ([`TaskError::canceled`]).
    Canceled,
    /// Faulted as abandoned ([`TaskError::is_abandoned`]), as the operation of a pooled
    /// producer dropped without completing is.
    Abandoned,
}

impl Failure {
    /// The runtime error this failure stands for.
    pub fn to_task_error(self) -> TaskError {
        match self {
            Failure::Faulted(n) => TaskError::from_error(InjectedFault(n)),
            Failure::Canceled => TaskError::canceled(),
            Failure::Abandoned => abandoned(),
        }
    }

    /// The failure a runtime error stands for, if it is one the ops make.
    pub fn from_task_error(error: &TaskError) -> Option<Failure> {
        if error.is_canceled() {
            Some(Failure::Canceled)
        } else if error.errors().count() != 1 {
            None
        } else if error.is_abandoned() {
            Some(Failure::Abandoned)
        } else {
            let fault = error.downcast_ref::<InjectedFault>()?;
            Some(Failure::Faulted(fault.0))
        }
    }

    /// The status of an operation that failed so.
    pub fn status(self) -> TaskStatus {
        match self {
            Failure::Faulted(_) | Failure::Abandoned => TaskStatus::Faulted,
            Failure::Canceled => TaskStatus::Canceled,
        }
    }
}

/// An abandoned-fault, made the one public way: a completion source dropped unset.
fn abandoned() -> TaskError {
    let source = TaskCompletionSource::<()>::new();
    let task = source.task();
    drop(source);
    match task.outcome() {
        Some(Err(error)) => error,
        // Not abandoned after all: the comparison with the model will say so.
        _ => TaskError::from_error(InjectedFault(u8::MAX)),
    }
}

/// The error `SetException` faults an operation with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault(pub u8);

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected fault {}", self.0)
    }
}

impl Error for InjectedFault {}

/// One call on a value-task source core (see the module docs for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Op {
    /// Start a new operation.
    Reset,
    /// Complete with `value`; with a token, only if it is current (`set_outcome_for`).
    SetResult {
        /// `None`: `set_result`; `Some`: `set_outcome_for(token, Ok(value))`.
        token: Option<Token>,
        /// The value.
        value: u32,
    },
    /// Complete with an error; with a token, only if it is current (`set_outcome_for`).
    SetException {
        /// `None`: `set_exception`; `Some`: `set_outcome_for(token, Err(..))`.
        token: Option<Token>,
        /// The error.
        failure: Failure,
    },
    /// Take the result.
    GetResult(Token),
    /// Register a fresh continuation.
    OnCompleted(Token),
    /// Read the status.
    Status(Token),
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// Where the current operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not completed.
    Pending,
    /// Completed; the outcome is still there.
    Completed(Result<u32, Failure>),
    /// Completed; the outcome was taken by `get_result`.
    Taken,
}

/// What one op returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `reset`: the new version.
    Reset(u64),
    /// `set_result` / `set_exception` / `set_outcome_for`.
    Set(Result<(), SourceErrorKind>),
    /// `get_result`: the operation's outcome, or why it was refused.
    GetResult(Result<Result<u32, Failure>, SourceErrorKind>),
    /// `on_completed`: accepted, or refused (and the continuation handed back).
    OnCompleted(Result<(), SourceErrorKind>),
    /// `status`.
    Status(Result<TaskStatus, SourceErrorKind>),
}

/// What one op must do: its outcome and the continuation it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The op's result.
    pub outcome: Outcome,
    /// The continuation resumed during the op, named by the index of the `OnCompleted` op
    /// that registered it: the registered one when the op completes the operation, or the
    /// op's own when `OnCompleted` finds the operation completed or is refused.
    pub woken: Option<usize>,
}

impl Step {
    fn new(outcome: Outcome) -> Self {
        Step {
            outcome,
            woken: None,
        }
    }
}

/// A deliberate mistake in the model, to show the property comparing it with the runtime
/// can fail (`Model::with_flaw`). A faithful model has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// Every token is treated as current (like the runtime's `SkipTokenCheck` knob, but
    /// for every call).
    AcceptStaleTokens,
    /// `Reset` keeps the registered continuation instead of dropping it.
    ResetKeepsContinuation,
}

/// The reference model of one `ManualResetValueTaskSourceCore` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    version: u64,
    phase: Phase,
    /// The registered continuation: the index of the op that registered it.
    continuation: Option<usize>,
    flaw: Option<Flaw>,
}

impl Model {
    /// A fresh core: version 0, pending, no continuation.
    pub fn new() -> Self {
        Model {
            version: 0,
            phase: Phase::Pending,
            continuation: None,
            flaw: None,
        }
    }

    /// A model with a deliberate mistake (see [`Flaw`]).
    pub fn with_flaw(flaw: Flaw) -> Self {
        Model {
            flaw: Some(flaw),
            ..Model::new()
        }
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the current operation is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The registered continuation (the index of the op that registered it).
    pub fn continuation(&self) -> Option<usize> {
        self.continuation
    }

    /// Runs `op`, the `index`-th op of its sequence, and returns what the core must do.
    pub fn apply(&mut self, index: usize, op: Op) -> Step {
        match op {
            Op::Reset => {
                self.version = self.version.wrapping_add(1);
                self.phase = Phase::Pending;
                if self.flaw != Some(Flaw::ResetKeepsContinuation) {
                    self.continuation = None;
                }
                Step::new(Outcome::Reset(self.version))
            }
            Op::SetResult { token, value } => self.complete(token, Ok(value)),
            Op::SetException { token, failure } => self.complete(token, Err(failure)),
            Op::GetResult(token) => Step::new(Outcome::GetResult(self.get_result(token))),
            Op::OnCompleted(token) => self.on_completed(index, token),
            Op::Status(token) => Step::new(Outcome::Status(self.status(token))),
        }
    }

    /// Rule 1: a token other than the version is refused.
    fn check(&self, token: Token) -> Result<(), SourceErrorKind> {
        let token = token.resolve(self.version);
        if token == self.version || self.flaw == Some(Flaw::AcceptStaleTokens) {
            Ok(())
        } else {
            Err(SourceErrorKind::StaleToken {
                token,
                current: self.version,
            })
        }
    }

    /// Rule 2: completes once, and resumes the registered continuation.
    pub(crate) fn complete(&mut self, token: Option<Token>, outcome: Result<u32, Failure>) -> Step {
        if let Some(token) = token {
            if let Err(error) = self.check(token) {
                return Step::new(Outcome::Set(Err(error)));
            }
        }
        if self.phase != Phase::Pending {
            return Step::new(Outcome::Set(Err(SourceErrorKind::AlreadyCompleted)));
        }
        self.phase = Phase::Completed(outcome);
        Step {
            outcome: Outcome::Set(Ok(())),
            woken: self.continuation.take(),
        }
    }

    /// Rules 3 and 4: one continuation; after completion it is resumed at once. A refused
    /// one is handed back (and resumed by its awaiter).
    pub(crate) fn on_completed(&mut self, index: usize, token: Token) -> Step {
        let result = if let Err(error) = self.check(token) {
            Err(error)
        } else if self.continuation.is_some() {
            Err(SourceErrorKind::ContinuationAlreadyRegistered)
        } else if self.phase != Phase::Pending {
            Ok(())
        } else {
            self.continuation = Some(index);
            return Step::new(Outcome::OnCompleted(Ok(())));
        };
        Step {
            outcome: Outcome::OnCompleted(result),
            woken: Some(index),
        }
    }

    /// Rule 5: the outcome is taken once, after completion.
    pub(crate) fn get_result(
        &mut self,
        token: Token,
    ) -> Result<Result<u32, Failure>, SourceErrorKind> {
        self.check(token)?;
        match self.phase {
            Phase::Pending => Err(SourceErrorKind::NotCompleted),
            Phase::Taken => Err(SourceErrorKind::ResultAlreadyTaken),
            Phase::Completed(outcome) => {
                self.phase = Phase::Taken;
                Ok(outcome)
            }
        }
    }

    pub(crate) fn status(&self, token: Token) -> Result<TaskStatus, SourceErrorKind> {
        self.check(token)?;
        match self.phase {
            Phase::Pending => Ok(TaskStatus::Pending),
            Phase::Completed(Ok(_)) => Ok(TaskStatus::Succeeded),
            Phase::Completed(Err(failure)) => Ok(failure.status()),
            Phase::Taken => Err(SourceErrorKind::ResultAlreadyTaken),
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

// ---------------------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------------------

/// Tokens biased toward the current version and its neighbours: current, previous, next
/// and any `u64` in the ratio 6 : 2 : 2 : 1. Shrinks toward `Current`.
pub fn token_strategy() -> impl Strategy<Value = Token> {
    // A range picks the variant rather than `prop_oneof!`, whose `new_tree` costs ~30 µs in
    // a debug build (one per token of every generated op).
    (0u8..11, any::<u64>()).prop_map(|(pick, raw)| match pick {
        0..=5 => Token::Current,
        6 | 7 => Token::Previous,
        8 | 9 => Token::Next,
        _ => Token::Raw(raw),
    })
}

/// Faults, cancellations and abandonments, 4 : 1 : 1. Shrinks toward a fault.
pub fn failure_strategy() -> impl Strategy<Value = Failure> {
    (0u8..6, any::<u8>()).prop_map(|(pick, n)| match pick {
        0..=3 => Failure::Faulted(n),
        4 => Failure::Canceled,
        _ => Failure::Abandoned,
    })
}

/// `None` (the owner completes) or a token (a producer bound to it completes), evenly.
fn owner_or_producer() -> impl Strategy<Value = Option<Token>> {
    proptest::option::weighted(0.5, token_strategy())
}

/// One op, every [`Op`] variant, weighted so sequences reset, complete and consume often:
/// reset 2, set result 3, set exception 1, get result 3, on completed 3, status 2 (of 14).
/// Shrinks toward `Reset`, the current token, and small values.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    // A range picks the variant rather than `prop_oneof!`, whose `new_tree` clones the test
    // runner (and seeds an RNG) for every alternative before the one picked: ~200 µs per op
    // in a debug build, which made 2,000 cases take 10 s instead of 1 s.
    let parts = (
        token_strategy(),
        owner_or_producer(),
        any::<u32>(),
        failure_strategy(),
    );
    (0u8..14, parts).prop_map(|(pick, (token, bound, value, failure))| match pick {
        0..=1 => Op::Reset,
        2..=4 => Op::SetResult {
            token: bound,
            value,
        },
        5 => Op::SetException {
            token: bound,
            failure,
        },
        6..=8 => Op::GetResult(token),
        9..=11 => Op::OnCompleted(token),
        // A new variant of `Op` goes above this arm, with the range widened.
        _ => Op::Status(token),
    })
}

/// Sequences of up to `max_len` ops.
pub fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(), 0..=max_len)
}

impl proptest::arbitrary::Arbitrary for Op {
    type Parameters = ();
    type Strategy = BoxedStrategy<Op>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        op_strategy().boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// A divergence of the core from [`Model`].
pub type SourceDivergence = Divergence<Op, Outcome>;

/// Applies `ops` to a fresh `ManualResetValueTaskSourceCore<u32>` and to [`Model::new`],
/// and returns the first divergence (see the module docs for what is compared).
pub fn run_against_runtime(ops: &[Op]) -> Result<(), SourceDivergence> {
    run_against_model(Model::new(), ops)
}

/// [`run_against_runtime`] with the given model (for instance a flawed one).
pub fn run_against_model(mut model: Model, ops: &[Op]) -> Result<(), SourceDivergence> {
    let core = ManualResetValueTaskSourceCore::<u32>::new();
    let mut wakers = Wakers::default();
    for (index, &op) in ops.iter().enumerate() {
        let version = model.version();
        let before = wakers.counts();
        let expected = model.apply(index, op);
        let checked = harness::catch(|| {
            let runtime = call_runtime(&core, index, op, version, &mut wakers)?;
            if runtime != expected.outcome {
                return Err(DivergenceKind::Outcome {
                    model: expected.outcome,
                    runtime,
                });
            }
            if core.version() != model.version() {
                return Err(DivergenceKind::Version {
                    model: model.version(),
                    runtime: core.version(),
                });
            }
            harness::check_continuations(
                &wakers,
                &before,
                expected.woken.into_iter().collect(),
                model.continuation().into_iter().collect(),
            )
        });
        checked.map_err(|kind| Divergence { index, op, kind })?;
    }
    Ok(())
}

/// Runs `op` on the core, with tokens resolved against `version` (the model's before the
/// op), and reports what it returned.
fn call_runtime(
    core: &ManualResetValueTaskSourceCore<u32>,
    index: usize,
    op: Op,
    version: u64,
    wakers: &mut Wakers,
) -> Result<Outcome, DivergenceKind<Outcome>> {
    let kind = |error: ValueTaskSourceError| error.kind();
    Ok(match op {
        Op::Reset => Outcome::Reset(core.reset()),
        Op::SetResult { token, value } => Outcome::Set(
            match token {
                None => core.set_result(value),
                Some(token) => core.set_outcome_for(token.resolve(version), Ok(value)),
            }
            .map_err(kind),
        ),
        Op::SetException { token, failure } => Outcome::Set(
            match token {
                None => core.set_exception(failure.to_task_error()),
                Some(token) => {
                    core.set_outcome_for(token.resolve(version), Err(failure.to_task_error()))
                }
            }
            .map_err(kind),
        ),
        Op::GetResult(token) => Outcome::GetResult(match core.get_result(token.resolve(version)) {
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(error)) => Ok(Err(Failure::from_task_error(&error).ok_or_else(|| {
                DivergenceKind::ForeignError {
                    runtime: error.to_string(),
                }
            })?)),
            Err(error) => Err(error.kind()),
        }),
        Op::OnCompleted(token) => {
            let waker = wakers.add(index);
            let continuation = continuation_for(waker).ok_or(DivergenceKind::NoContinuation)?;
            Outcome::OnCompleted(
                match core.on_completed(token.resolve(version), continuation) {
                    Ok(()) => Ok(()),
                    Err(refused) => {
                        // As `ValueTaskAwaiter` does: resume it so its awaiter reads the error.
                        refused.continuation.resume();
                        Err(refused.error.kind())
                    }
                },
            )
        }
        Op::Status(token) => Outcome::Status(core.status(token.resolve(version)).map_err(kind)),
    })
}

/// An awaiter that never completes and passes the continuation it is given out.
struct Catch(Rc<Cell<Option<Continuation>>>);

impl Awaiter for Catch {
    type Output = ();

    fn is_completed(&self) -> bool {
        false
    }

    fn on_completed(&mut self, continuation: Continuation) {
        self.0.set(Some(continuation));
    }

    fn get_result(&mut self) {}
}

/// A continuation that wakes `waker`: the one an await outside any task, capturing
/// nothing, hands its awaiter.
fn continuation_for(waker: Arc<CountingWaker>) -> Option<Continuation> {
    let slot = Rc::new(Cell::new(None));
    let mut await_ = ConfiguredAwait::new(Catch(slot.clone()), ConfigureAwaitOptions::NONE);
    let waker = Waker::from(waker);
    let mut cx = std::task::Context::from_waker(&waker);
    match Pin::new(&mut await_).poll(&mut cx) {
        Poll::Pending => slot.take(),
        Poll::Ready(()) => None,
    }
}
