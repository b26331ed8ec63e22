//! A sequential reference model of a [`ValueTaskSourcePool`] with one slot, seen through
//! its public API, and a driver that compares the real pool with it.
//!
//! # The model
//!
//! [`PoolModel`] is the pool's rules (1–4 of `taskcheck`'s `value_task_pool` module) on top
//! of the core [`Model`]: every source, the pooled slot and each overflow source alike, is
//! a core model; the pool adds who rented the slot, which consumer gave up its value task
//! (`abandoned`), and returning the slot (`reset`, then release). The producer and the
//! consumer are the real API's:
//!
//! | [`PoolOp`] | API call |
//! |---|---|
//! | `Rent` | `pool.rent()`: the slot if free (its version is the token), else a fresh unpooled source (token 0) |
//! | `ValueTask { producer }` | `producer.value_task()`: the operation's one consumer; asking again gives a value task already faulted with `ConsumerAlreadyHandedOut` |
//! | `SetResult` / `SetException { producer, .. }` | `producer.set_result` / `set_exception` |
//! | `DropProducer { producer }` | drop it uncompleted: the operation faults as abandoned |
//! | `Status { consumer }` | `value_task.status()` (before its await starts) |
//! | `Poll { consumer }` | poll `value_task.into_future()` once (the first poll starts the await); on `Ready` the future is dropped |
//! | `DropConsumer { consumer }` | drop the value task, or its await |
//!
//! Producers and consumers are named by their position among the live ones, modulo their
//! number; an op naming one when there is none does nothing ([`PoolOutcome::Nothing`]).
//! A consumer's continuation is named by the index of the `ValueTask` op that made it.
//!
//! The pool has one slot because the slot a thread tries first is chosen by hashing its
//! thread id, which the model cannot know; with one slot the choice is forced, and every
//! rent while it is out exercises the overflow path.
//!
//! # The driver
//!
//! [`run_against_runtime`] applies the ops to a real `ValueTaskSourcePool<u32>` of capacity
//! one and to a [`PoolModel`]. After every op it compares the outcome, `pool.rented()`,
//! which consumers' continuations were woken, and which are still held by a source. Each
//! consumer polls with its own counting waker, outside any task or context, so a
//! continuation wakes it on the calling thread at once (see
//! [`value_task_source`](crate::value_task_source)). The driver never panics and never
//! blocks.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Poll, Waker};

use proptest::prelude::*;
use taskcheck::{
    ConfiguredAwait, PooledValueTaskSource, SourceErrorKind, TaskError, TaskStatus, ValueTask,
    ValueTaskAwaiter, ValueTaskProducer, ValueTaskSourceError, ValueTaskSourcePool,
};

use crate::harness::{self, Wakers};
use crate::value_task_source::{failure_strategy, Failure, Model, Op, Outcome, Phase, Token};
use crate::{Divergence, DivergenceKind};

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// One call on the pool, a producer or a consumer (see the module docs for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum PoolOp {
    /// Rent a source.
    Rent,
    /// Make a consumer (a value task) of a live producer's operation.
    ValueTask {
        /// Which live producer.
        producer: u8,
    },
    /// Complete a producer's operation with `value`.
    SetResult {
        /// Which live producer.
        producer: u8,
        /// The value.
        value: u32,
    },
    /// Fail a producer's operation.
    SetException {
        /// Which live producer.
        producer: u8,
        /// The error.
        failure: Failure,
    },
    /// Drop a producer without completing.
    DropProducer {
        /// Which live producer.
        producer: u8,
    },
    /// Read a consumer's status (nothing once its await started).
    Status {
        /// Which live consumer.
        consumer: u8,
    },
    /// Poll a consumer's await once.
    Poll {
        /// Which live consumer.
        consumer: u8,
    },
    /// Drop a consumer.
    DropConsumer {
        /// Which live consumer.
        consumer: u8,
    },
}

/// What one op returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolOutcome {
    /// The op named a producer or consumer and there is none (or asked the status of a
    /// consumer whose await started).
    Nothing,
    /// `rent`: the producer's token.
    Rented(u64),
    /// `value_task`: a consumer was made.
    Made,
    /// `set_result` / `set_exception`.
    Set(Result<(), SourceErrorKind>),
    /// A producer or consumer was dropped.
    Dropped,
    /// `status`.
    Status(TaskStatus),
    /// A poll: `None` while pending, else the await's result: the value, the operation's
    /// failure, or a misuse of the source (the fault's [`ValueTaskSourceError`]).
    Poll(Option<Awaited>),
}

/// The result of an await, or of taking an outcome: the value, the operation's failure, or
/// a misuse of the source.
pub type Awaited = Result<Result<u32, Failure>, SourceErrorKind>;

/// What one op must do: its outcome and the continuations it resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStep {
    /// The op's result.
    pub outcome: PoolOutcome,
    /// The consumers whose continuations are resumed during the op.
    pub woken: Vec<usize>,
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    core: Model,
    /// The pool's slot (`false`: an overflow source, never returned).
    pooled: bool,
    /// Rented (the slot's flag; always `true` for an overflow source).
    rented: bool,
    /// A consumer dropped its value task while the operation was pending.
    abandoned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Producer {
    source: usize,
    token: u64,
    /// Its value task was handed out (rule 3).
    handed_out: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Consumer {
    /// The index of the op that made it: its continuation's name.
    id: usize,
    source: usize,
    token: u64,
    /// Its await started (it was polled).
    awaiting: bool,
    /// The source refused its continuation; the await's result is this error.
    refused: Option<SourceErrorKind>,
    /// Not the operation's consumer: a value task already faulted with this error, which
    /// never touches the source (rule 3).
    faulted: Option<SourceErrorKind>,
}

/// The reference model of a one-slot `ValueTaskSourcePool` and the producers and consumers
/// of its operations (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolModel {
    /// `sources[0]` is the slot; the rest are overflow sources, one per rent while the slot
    /// was out.
    sources: Vec<Source>,
    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
    woken: Vec<usize>,
}

impl PoolModel {
    /// A pool with one free slot at version 0, no producers, no consumers.
    pub fn new() -> Self {
        PoolModel {
            sources: vec![Source {
                core: Model::new(),
                pooled: true,
                rented: false,
                abandoned: false,
            }],
            producers: Vec::new(),
            consumers: Vec::new(),
            woken: Vec::new(),
        }
    }

    /// How many of the pool's sources are rented (`pool.rented()`).
    pub fn rented(&self) -> usize {
        let rented = |source: &&Source| source.pooled && source.rented;
        self.sources.iter().filter(rented).count()
    }

    /// The continuations the sources hold.
    pub fn held(&self) -> Vec<usize> {
        let held = |source: &Source| source.core.continuation();
        self.sources.iter().filter_map(held).collect()
    }

    /// Runs `op`, the `index`-th op of its sequence, and returns what the runtime must do.
    pub fn apply(&mut self, index: usize, op: PoolOp) -> PoolStep {
        let outcome = self.run(index, op);
        PoolStep {
            outcome,
            woken: std::mem::take(&mut self.woken),
        }
    }

    fn run(&mut self, index: usize, op: PoolOp) -> PoolOutcome {
        let pick = |n: u8, len: usize| (len > 0).then(|| usize::from(n) % len);
        match op {
            PoolOp::Rent => PoolOutcome::Rented(self.rent()),
            PoolOp::ValueTask { producer: n } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => {
                    let Producer {
                        source,
                        token,
                        handed_out,
                    } = self.producers[p];
                    self.producers[p].handed_out = true;
                    self.consumers.push(Consumer {
                        id: index,
                        source,
                        token,
                        awaiting: false,
                        refused: None,
                        faulted: handed_out.then_some(SourceErrorKind::ConsumerAlreadyHandedOut),
                    });
                    PoolOutcome::Made
                }
            },
            PoolOp::SetResult { producer: n, value } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => PoolOutcome::Set(self.complete(p, Ok(value))),
            },
            PoolOp::SetException {
                producer: n,
                failure,
            } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => PoolOutcome::Set(self.complete(p, Err(failure))),
            },
            PoolOp::DropProducer { producer: n } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => {
                    // Rule 4: a producer dropped uncompleted abandons its operation.
                    let _ = self.complete(p, Err(Failure::Abandoned));
                    PoolOutcome::Dropped
                }
            },
            PoolOp::Status { consumer: n } => match pick(n, self.consumers.len()) {
                Some(c) if !self.consumers[c].awaiting => match self.consumers[c] {
                    Consumer {
                        faulted: Some(_), ..
                    } => PoolOutcome::Status(TaskStatus::Faulted),
                    Consumer { source, token, .. } => {
                        PoolOutcome::Status(self.status(source, token))
                    }
                },
                _ => PoolOutcome::Nothing,
            },
            PoolOp::Poll { consumer: n } => match pick(n, self.consumers.len()) {
                None => PoolOutcome::Nothing,
                Some(c) => PoolOutcome::Poll(self.poll(c)),
            },
            PoolOp::DropConsumer { consumer: n } => match pick(n, self.consumers.len()) {
                None => PoolOutcome::Nothing,
                Some(c) => {
                    let consumer = self.consumers.remove(c);
                    self.abandon(consumer);
                    PoolOutcome::Dropped
                }
            },
        }
    }

    /// Rule 1: the slot if it is free, else an unpooled source.
    fn rent(&mut self) -> u64 {
        let source = if self.sources[0].rented {
            self.sources.push(Source {
                core: Model::new(),
                pooled: false,
                rented: true,
                abandoned: false,
            });
            self.sources.len() - 1
        } else {
            self.sources[0].rented = true;
            0
        };
        let token = self.sources[source].core.version();
        self.producers.push(Producer {
            source,
            token,
            handed_out: false,
        });
        token
    }

    /// Rule 4: the producer completes its own operation (by token), once; then, if the
    /// consumer gave up, it takes the outcome and returns the slot (rule 2).
    fn complete(&mut self, p: usize, outcome: Result<u32, Failure>) -> Result<(), SourceErrorKind> {
        let Producer { source, token, .. } = self.producers.remove(p);
        let step = self.sources[source]
            .core
            .complete(Some(Token::Raw(token)), outcome);
        self.woken.extend(step.woken);
        if let Outcome::Set(Err(error)) = step.outcome {
            return Err(error);
        }
        let completed = matches!(self.sources[source].core.phase(), Phase::Completed(_));
        if self.sources[source].abandoned && completed {
            let _ = self.take(source, token);
        }
        Ok(())
    }

    /// The consumer's `get_result`: takes the outcome, then returns a pooled slot (rule 2).
    fn take(&mut self, source: usize, token: u64) -> Awaited {
        let taken = self.sources[source].core.get_result(Token::Raw(token));
        if taken.is_ok() && self.sources[source].pooled {
            let slot = &mut self.sources[source];
            slot.abandoned = false;
            slot.core.apply(0, Op::Reset);
            slot.rented = false;
        }
        taken
    }

    /// `ValueTask::status`: a refused token reads as faulted.
    fn status(&self, source: usize, token: u64) -> TaskStatus {
        let status = self.sources[source].core.status(Token::Raw(token));
        status.unwrap_or(TaskStatus::Faulted)
    }

    /// One poll of a consumer's await (the await protocol of `taskcheck::ConfiguredAwait`).
    fn poll(&mut self, c: usize) -> Option<Awaited> {
        if let Some(error) = self.consumers[c].faulted {
            // Already complete: no suspension, and nothing to give back.
            self.consumers.remove(c);
            return Some(Err(error));
        }
        let Consumer {
            id, source, token, ..
        } = self.consumers[c];
        let completed = self.consumers[c].refused.is_some()
            || self.status(source, token) != TaskStatus::Pending;
        if !completed {
            if !self.consumers[c].awaiting {
                // The first poll of a pending operation registers the continuation.
                self.consumers[c].awaiting = true;
                let step = self.sources[source]
                    .core
                    .on_completed(id, Token::Raw(token));
                self.woken.extend(step.woken);
                if let Outcome::OnCompleted(Err(error)) = step.outcome {
                    self.consumers[c].refused = Some(error);
                }
            }
            return None;
        }
        // Ready: the result is taken, then the future (and its value task) is dropped.
        let consumer = self.consumers.remove(c);
        let awaited = match consumer.refused {
            Some(error) => Err(error),
            None => self.take(source, token),
        };
        // An await that took nothing (refused, or asked too early) still owned the
        // operation: dropping it gives the operation up.
        if consumer.refused.is_some() || awaited == Err(SourceErrorKind::NotCompleted) {
            self.abandon(consumer);
        }
        Some(awaited)
    }

    /// A consumer dropped before taking the result (`on_abandoned`): a completed operation
    /// is taken and the slot returned now; a pending one when the producer completes it.
    fn abandon(&mut self, consumer: Consumer) {
        let Consumer {
            source,
            token,
            faulted,
            ..
        } = consumer;
        if faulted.is_some() {
            return;
        }
        match self.sources[source].core.status(Token::Raw(token)) {
            Ok(TaskStatus::Pending) => self.sources[source].abandoned = true,
            Ok(_) => {
                let _ = self.take(source, token);
            }
            Err(_) => {}
        }
    }
}

impl Default for PoolModel {
    fn default() -> Self {
        PoolModel::new()
    }
}

// ---------------------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------------------

/// One pool op, every [`PoolOp`] variant: rent 3, value task 3, set result 2, set
/// exception 1, drop producer 1, status 1, poll 3, drop consumer 1 (of 15), so that
/// producers and consumers are usually there to act on. They are picked among the first
/// four live ones. Shrinks toward `Rent`.
pub fn pool_op_strategy() -> impl Strategy<Value = PoolOp> {
    // A range picks the variant rather than `prop_oneof!` (see `op_strategy`).
    let parts = (0u8..4, any::<u32>(), failure_strategy());
    (0u8..15, parts).prop_map(|(pick, (n, value, failure))| match pick {
        0..=2 => PoolOp::Rent,
        3..=5 => PoolOp::ValueTask { producer: n },
        6..=7 => PoolOp::SetResult { producer: n, value },
        8 => PoolOp::SetException {
            producer: n,
            failure,
        },
        9 => PoolOp::DropProducer { producer: n },
        10 => PoolOp::Status { consumer: n },
        11..=13 => PoolOp::Poll { consumer: n },
        // A new variant of `PoolOp` goes above this arm, with the range widened.
        _ => PoolOp::DropConsumer { consumer: n },
    })
}

/// Sequences of up to `max_len` pool ops.
pub fn pool_ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<PoolOp>> {
    proptest::collection::vec(pool_op_strategy(), 0..=max_len)
}

impl proptest::arbitrary::Arbitrary for PoolOp {
    type Parameters = ();
    type Strategy = BoxedStrategy<PoolOp>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        pool_op_strategy().boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// A divergence of the pool from [`PoolModel`].
pub type PoolDivergence = Divergence<PoolOp, PoolOutcome>;

type Await = ConfiguredAwait<ValueTaskAwaiter<u32, PooledValueTaskSource<u32>>>;

/// A live consumer in the runtime: its value task, or its await once polled.
enum RuntimeConsumer {
    Fresh(usize, ValueTask<u32>),
    Awaiting(usize, Await),
}

/// Applies `ops` to a real one-slot `ValueTaskSourcePool<u32>` and to [`PoolModel::new`],
/// and returns the first divergence (see the module docs for what is compared).
pub fn run_against_runtime(ops: &[PoolOp]) -> Result<(), PoolDivergence> {
    let mut model = PoolModel::new();
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let mut producers: Vec<ValueTaskProducer<u32>> = Vec::new();
    let mut consumers: Vec<RuntimeConsumer> = Vec::new();
    let mut wakers = Wakers::default();
    for (index, &op) in ops.iter().enumerate() {
        let before = wakers.counts();
        let expected = model.apply(index, op);
        let checked = harness::catch(|| {
            let runtime = {
                let mut call = Call {
                    producers: &mut producers,
                    consumers: &mut consumers,
                    wakers: &mut wakers,
                };
                call.run(&pool, index, op)?
            };
            if runtime != expected.outcome {
                return Err(DivergenceKind::Outcome {
                    model: expected.outcome,
                    runtime,
                });
            }
            if pool.rented() != model.rented() {
                return Err(DivergenceKind::Rented {
                    model: model.rented(),
                    runtime: pool.rented(),
                });
            }
            harness::check_continuations(&wakers, &before, expected.woken, model.held())
        });
        checked.map_err(|kind| Divergence { index, op, kind })?;
    }
    Ok(())
}

/// The runtime side of one op.
struct Call<'a> {
    producers: &'a mut Vec<ValueTaskProducer<u32>>,
    consumers: &'a mut Vec<RuntimeConsumer>,
    wakers: &'a mut Wakers,
}

impl Call<'_> {
    fn run(
        &mut self,
        pool: &ValueTaskSourcePool<u32>,
        index: usize,
        op: PoolOp,
    ) -> Result<PoolOutcome, DivergenceKind<PoolOutcome>> {
        let pick = |n: u8, len: usize| (len > 0).then(|| usize::from(n) % len);
        let kind = |error: ValueTaskSourceError| error.kind();
        Ok(match op {
            PoolOp::Rent => {
                let producer = pool.rent();
                let token = producer.token();
                self.producers.push(producer);
                PoolOutcome::Rented(token)
            }
            PoolOp::ValueTask { producer: n } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => {
                    let value_task = self.producers[p].value_task();
                    self.wakers.add(index);
                    self.consumers
                        .push(RuntimeConsumer::Fresh(index, value_task));
                    PoolOutcome::Made
                }
            },
            PoolOp::SetResult { producer: n, value } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => {
                    PoolOutcome::Set(self.producers.remove(p).set_result(value).map_err(kind))
                }
            },
            PoolOp::SetException {
                producer: n,
                failure,
            } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => PoolOutcome::Set(
                    self.producers
                        .remove(p)
                        .set_exception(failure.to_task_error())
                        .map_err(kind),
                ),
            },
            PoolOp::DropProducer { producer: n } => match pick(n, self.producers.len()) {
                None => PoolOutcome::Nothing,
                Some(p) => {
                    drop(self.producers.remove(p));
                    PoolOutcome::Dropped
                }
            },
            PoolOp::Status { consumer: n } => match pick(n, self.consumers.len()) {
                Some(c) => match &self.consumers[c] {
                    RuntimeConsumer::Fresh(_, value_task) => {
                        PoolOutcome::Status(value_task.status())
                    }
                    RuntimeConsumer::Awaiting(..) => PoolOutcome::Nothing,
                },
                None => PoolOutcome::Nothing,
            },
            PoolOp::Poll { consumer: n } => match pick(n, self.consumers.len()) {
                None => PoolOutcome::Nothing,
                Some(c) => PoolOutcome::Poll(self.poll(c)?),
            },
            PoolOp::DropConsumer { consumer: n } => match pick(n, self.consumers.len()) {
                None => PoolOutcome::Nothing,
                Some(c) => {
                    drop(self.consumers.remove(c));
                    PoolOutcome::Dropped
                }
            },
        })
    }

    /// Polls consumer `c` once with its counting waker; on `Ready` drops its future.
    fn poll(&mut self, c: usize) -> Result<Option<Awaited>, DivergenceKind<PoolOutcome>> {
        let consumer = self.consumers.remove(c);
        let (id, mut await_) = match consumer {
            RuntimeConsumer::Fresh(id, value_task) => (id, value_task.into_future()),
            RuntimeConsumer::Awaiting(id, await_) => (id, await_),
        };
        // The waker is registered under the consumer's id when the consumer is made.
        let waker = match self.wakers.get(id) {
            Some(waker) => Waker::from(waker),
            None => Waker::noop().clone(),
        };
        let mut cx = std::task::Context::from_waker(&waker);
        let polled = Pin::new(&mut await_).poll(&mut cx);
        drop(waker);
        match polled {
            Poll::Pending => {
                self.consumers
                    .insert(c, RuntimeConsumer::Awaiting(id, await_));
                Ok(None)
            }
            Poll::Ready(result) => {
                drop(await_);
                Ok(Some(match result {
                    Ok(value) => Ok(Ok(value)),
                    Err(error) => awaited_error(&error)?,
                }))
            }
        }
    }
}

/// What a failed await stands for: a misuse of the source, or the operation's failure.
fn awaited_error(error: &TaskError) -> Result<Awaited, DivergenceKind<PoolOutcome>> {
    if let Some(misuse) = error.downcast_ref::<ValueTaskSourceError>() {
        return Ok(Err(misuse.kind()));
    }
    match Failure::from_task_error(error) {
        Some(failure) => Ok(Ok(Err(failure))),
        None => Err(DivergenceKind::ForeignError {
            runtime: error.to_string(),
        }),
    }
}
