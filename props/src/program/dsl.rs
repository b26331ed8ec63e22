//! The program DSL: what a generated program says ([`Program`], [`Op`], [`BodyOp`]), how
//! proptest and `arbitrary` make one, and how it is resolved into a [`Plan`] that the
//! model and the driver both follow.
//!
//! A generated op names earlier things (a completion source, a task slot, a cancellation
//! source) by a small number taken modulo the number of candidates, so that every byte
//! string and every proptest value is a valid program: an op with no candidate is dropped.
//! [`Plan::new`] does that resolution once, deterministically; nothing in it depends on a
//! schedule.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// At most this many ops of a program are used (the rest are ignored).
pub const MAX_OPS: usize = 12;
/// At most this many steps of a body are used.
pub const MAX_BODY_STEPS: usize = 4;
/// At most this many inputs of a combinator are used.
pub const MAX_INPUTS: usize = 4;
/// At most this many cancellation parents of a linked source are used.
pub const MAX_PARENTS: usize = 2;
/// At most this many completion sources; a further `NewSource` is dropped.
pub const MAX_SOURCES: usize = 4;
/// At most this many spawned tasks; a further `Spawn` is dropped.
pub const MAX_SPAWNS: usize = 4;
/// At most this many cancellation sources; a further `NewCts` is dropped.
pub const MAX_CTS: usize = 4;
/// At most this many task slots (sources' tasks, spawned tasks, delays, combinators).
pub const MAX_SLOTS: usize = 10;
/// The longest delay, `cancel_after` or advance an op asks for, in milliseconds.
pub const MAX_MILLIS: u8 = 20;
/// How far the clean-up advances the clock, in milliseconds: past every timer a program
/// can schedule.
pub const CLEANUP_ADVANCE_MILLIS: u64 = 10_000;

/// The value a completion source is completed with by `SetResult { value }`.
pub fn source_value(value: u8) -> i64 {
    16 + i64::from(value)
}

/// The value the clean-up completes a still-pending source with.
pub fn cleanup_value(source: usize) -> i64 {
    1_000 + source as i64
}

/// The value a body's accumulator starts at (never a cacheable small integer).
pub fn body_base(body: usize) -> i64 {
    100 * (body as i64 + 1)
}

/// A step of a spawned task's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum BodyOp {
    /// Await a task slot that exists when the task is spawned (so bodies never wait in a
    /// cycle), adding its value to the body's accumulator (a list's sum, a delay's 0; a
    /// `when_any`'s winner is awaited in turn, as C#'s `await await Task.WhenAny(..)`). An
    /// error propagates (`?`): the body ends with it.
    Await {
        /// Which task slot (modulo the slots the driver holds at the spawn).
        task: u8,
        /// `false`: `.configure_await(false)`; `true`: a plain `.await`.
        continue_on_captured_context: bool,
    },
    /// `token.throw_if_cancellation_requested()?` on a cancellation source's token.
    CheckToken {
        /// Which cancellation source (modulo those existing at the spawn).
        cts: u8,
    },
    /// `taskcheck::yield_now().await`.
    Yield,
    /// End with a fault ([`Planted`](super::Planted)).
    Fail {
        /// The fault's code.
        code: u8,
    },
    /// Panic (a message the panic filter recognises).
    Panic {
        /// The panic's code.
        code: u8,
    },
    /// End with this value (−1..=8 is what `start`'s completed-task cache holds).
    ReturnSmall {
        /// The value.
        value: i8,
    },
}

/// One step of the driver (the main thread's script).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Op {
    /// A `TaskCompletionSource<i64>`; its task is a new task slot.
    NewSource,
    /// A task running `steps`: eagerly with `taskcheck::start` on the driver thread, or
    /// lazily with `pool.spawn` on the 2-worker pool. A new task slot.
    Spawn {
        /// `start` (true) or `pool.spawn` (false).
        eager: bool,
        /// The body (at most [`MAX_BODY_STEPS`] used); it ends with `Ok(accumulator)`.
        steps: Vec<BodyOp>,
    },
    /// `source.try_set_result(16 + value)`.
    SetResult {
        /// Which live source.
        source: u8,
        /// The value, offset by 16.
        value: u8,
    },
    /// `source.try_set_exception(Planted(code))`.
    SetException {
        /// Which live source.
        source: u8,
        /// The fault's code.
        code: u8,
    },
    /// `source.try_set_canceled()`.
    SetCanceled {
        /// Which live source.
        source: u8,
    },
    /// Drop a completion source whose task handle the driver still holds: a pending task
    /// faults as abandoned (never unseen: the source is not its task's only handle).
    DropSource {
        /// Which live source (among those whose task the driver holds).
        source: u8,
    },
    /// A cancellation source on the run's manual clock, linked to earlier ones if
    /// `parents` is not empty.
    NewCts {
        /// Which earlier sources (at most [`MAX_PARENTS`]).
        parents: Vec<u8>,
    },
    /// Register a callback that appends its number to the callback log (and panics after,
    /// if `panics`). The registration is kept until the end of the run.
    Register {
        /// Which cancellation source.
        cts: u8,
        /// Whether the callback panics after logging.
        panics: bool,
    },
    /// `cts.cancel()`.
    Cancel {
        /// Which cancellation source.
        cts: u8,
    },
    /// `cts.cancel_after(ms)`.
    CancelAfter {
        /// Which cancellation source.
        cts: u8,
        /// The delay in milliseconds (at most [`MAX_MILLIS`]).
        ms: u8,
    },
    /// `clock.delay(ms, token)`: a new task slot (a `Task<()>`).
    Delay {
        /// The delay in milliseconds (at most [`MAX_MILLIS`]).
        ms: u8,
        /// Whose token (`None`: the none token).
        cts: Option<u8>,
    },
    /// `clock.advance(ms)`: fires due timers on the driver thread.
    Advance {
        /// Milliseconds (at most [`MAX_MILLIS`]).
        ms: u8,
    },
    /// `when_all` over held `i64` task slots: a new task slot.
    WhenAll {
        /// Which slots (at most [`MAX_INPUTS`]).
        inputs: Vec<u8>,
    },
    /// `when_any` over held `i64` task slots: a new task slot (none for no input, an error
    /// at the call).
    WhenAny {
        /// Which slots (at most [`MAX_INPUTS`]).
        inputs: Vec<u8>,
    },
    /// A blocking `task.wait()` on a held slot — only when the model proves the task
    /// completes without further driver steps; otherwise the op is skipped.
    Wait {
        /// Which held slot.
        task: u8,
    },
    /// Drop the driver's handle of a slot (`task.detach()`).
    Detach {
        /// Which held slot.
        task: u8,
    },
}

/// A generated program: the driver's script.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Program {
    /// The driver's steps (at most [`MAX_OPS`] used).
    pub ops: Vec<Op>,
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// A reference to an earlier thing, taken modulo the candidates.
pub fn index_strategy() -> impl Strategy<Value = u8> {
    0u8..6
}

fn millis_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![1 => Just(0u8), 4 => 1u8..=MAX_MILLIS]
}

/// A body step, weighted toward awaits and token checks.
pub fn body_op_strategy() -> impl Strategy<Value = BodyOp> {
    prop_oneof![
        5 => (index_strategy(), any::<bool>()).prop_map(|(task, continue_on_captured_context)| {
            BodyOp::Await { task, continue_on_captured_context }
        }),
        3 => index_strategy().prop_map(|cts| BodyOp::CheckToken { cts }),
        1 => Just(BodyOp::Yield),
        2 => (0u8..4).prop_map(|code| BodyOp::Fail { code }),
        1 => (0u8..4).prop_map(|code| BodyOp::Panic { code }),
        1 => (-1i8..=8).prop_map(|value| BodyOp::ReturnSmall { value }),
    ]
}

/// A driver op, weighted toward creating things and completing them.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::NewSource),
        6 => (prop::bool::weighted(0.4), vec(body_op_strategy(), 0..=MAX_BODY_STEPS))
            .prop_map(|(eager, steps)| Op::Spawn { eager, steps }),
        3 => (index_strategy(), 0u8..8).prop_map(|(source, value)| Op::SetResult { source, value }),
        2 => (index_strategy(), 0u8..4).prop_map(|(source, code)| Op::SetException { source, code }),
        1 => index_strategy().prop_map(|source| Op::SetCanceled { source }),
        1 => index_strategy().prop_map(|source| Op::DropSource { source }),
        3 => vec(index_strategy(), 0..=MAX_PARENTS).prop_map(|parents| Op::NewCts { parents }),
        3 => (index_strategy(), prop::bool::weighted(0.2))
            .prop_map(|(cts, panics)| Op::Register { cts, panics }),
        3 => index_strategy().prop_map(|cts| Op::Cancel { cts }),
        1 => (index_strategy(), millis_strategy()).prop_map(|(cts, ms)| Op::CancelAfter { cts, ms }),
        1 => (millis_strategy(), option::of(index_strategy())).prop_map(|(ms, cts)| Op::Delay { ms, cts }),
        1 => millis_strategy().prop_map(|ms| Op::Advance { ms }),
        2 => vec(index_strategy(), 0..=3).prop_map(|inputs| Op::WhenAll { inputs }),
        3 => vec(index_strategy(), 1..=3).prop_map(|inputs| Op::WhenAny { inputs }),
        2 => index_strategy().prop_map(|task| Op::Wait { task }),
        1 => index_strategy().prop_map(|task| Op::Detach { task }),
    ]
}

/// Programs of at most `max_ops` ops.
pub fn program_strategy(max_ops: usize) -> impl Strategy<Value = Program> {
    vec(op_strategy(), 0..=max_ops).prop_map(|ops| Program { ops })
}

impl proptest::arbitrary::Arbitrary for Program {
    type Parameters = ();
    type Strategy = BoxedStrategy<Program>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        program_strategy(MAX_OPS).boxed()
    }
}

impl proptest::arbitrary::Arbitrary for Op {
    type Parameters = ();
    type Strategy = BoxedStrategy<Op>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        op_strategy().boxed()
    }
}

impl proptest::arbitrary::Arbitrary for BodyOp {
    type Parameters = ();
    type Strategy = BoxedStrategy<BodyOp>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        body_op_strategy().boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The plan: a program with every reference resolved
// ---------------------------------------------------------------------------------------

/// What a task slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// The task of completion source `n` (`Task<i64>`).
    Source(usize),
    /// The task of spawned body `n` (`Task<i64>`).
    Body(usize),
    /// A `clock.delay` (`Task<()>`).
    Delay,
    /// `when_all` over these `i64` slots (`Task<Vec<i64>>`).
    All(Vec<usize>),
    /// `when_any` over these `i64` slots (`Task<Task<i64>>`).
    Any(Vec<usize>),
}

impl SlotKind {
    /// Whether the slot holds a `Task<i64>` (a combinator input).
    pub fn is_int(&self) -> bool {
        matches!(self, SlotKind::Source(_) | SlotKind::Body(_))
    }
}

/// A resolved body step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Await task slot `slot` (plainly, or with `configure_await(false)`).
    Await {
        /// The slot.
        slot: usize,
        /// `false`: `configure_await(false)`.
        captured: bool,
    },
    /// `throw_if_cancellation_requested` on cancellation source `cts`.
    Check {
        /// The cancellation source.
        cts: usize,
    },
    /// `yield_now().await`.
    Yield,
    /// End with fault `Planted(code)`.
    Fail(u8),
    /// Panic with code.
    Panic(u8),
    /// End with `Ok(value)`.
    ReturnSmall(i8),
}

/// A spawned task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BodyPlan {
    /// Its task slot.
    pub slot: usize,
    /// `start` (true) or `pool.spawn` (false).
    pub eager: bool,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// How a completion source is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// `try_set_result(value)`.
    Result(i64),
    /// `try_set_exception(Planted(code))`.
    Fault(u8),
    /// `try_set_canceled()`.
    Cancel,
}

/// A resolved driver op. The plan ends with [`PlanOp::Quiesce`], [`PlanOp::Cleanup`] and
/// [`PlanOp::Finish`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlanOp {
    /// Completion source `source`, whose task is slot `slot`.
    NewSource {
        /// The source's number.
        source: usize,
        /// Its task's slot.
        slot: usize,
    },
    /// Spawn body `body` (see [`Plan::bodies`]).
    Spawn {
        /// The body's number.
        body: usize,
    },
    /// Complete a source (`try_set_*`).
    Complete {
        /// The source.
        source: usize,
        /// How.
        completion: Completion,
    },
    /// Drop a source.
    DropSource {
        /// The source.
        source: usize,
    },
    /// Cancellation source `cts`, linked to `parents`.
    NewCts {
        /// Its number.
        cts: usize,
        /// Its parents (earlier sources).
        parents: Vec<usize>,
    },
    /// Register callback number `callback` on `cts`.
    Register {
        /// The source.
        cts: usize,
        /// The callback's number (what it logs).
        callback: usize,
        /// Whether it panics after logging.
        panics: bool,
    },
    /// `cancel()`.
    Cancel {
        /// The source.
        cts: usize,
    },
    /// `cancel_after(ms)`.
    CancelAfter {
        /// The source.
        cts: usize,
        /// Milliseconds.
        ms: u64,
    },
    /// `clock.delay(ms, token)` into slot `slot`.
    Delay {
        /// The new slot.
        slot: usize,
        /// Milliseconds.
        ms: u64,
        /// Whose token (`None`: the none token).
        cts: Option<usize>,
    },
    /// `clock.advance(ms)`.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
    /// `when_all(inputs)` into slot `slot`.
    WhenAll {
        /// The new slot.
        slot: usize,
        /// The input slots.
        inputs: Vec<usize>,
    },
    /// `when_any(inputs)` into slot `slot` (`None` for no input: the call's error).
    WhenAny {
        /// The new slot.
        slot: Option<usize>,
        /// The input slots.
        inputs: Vec<usize>,
    },
    /// A blocking wait, if the model says it cannot hang.
    Wait {
        /// The slot.
        slot: usize,
    },
    /// Drop the driver's handle.
    Detach {
        /// The slot.
        slot: usize,
    },
    /// Let every task run until it completes or waits for the driver; the driver checks
    /// the tasks' waiter counts (`registered_continuations`) against the model's.
    Quiesce,
    /// Complete every live source still pending (in order, with [`cleanup_value`]), then
    /// advance the clock by [`CLEANUP_ADVANCE_MILLIS`].
    Cleanup,
    /// Wait until every task has completed (without observing any).
    Finish,
}

/// A program with every reference resolved: what both the model and the driver run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Plan {
    /// The driver's ops, ending with `Quiesce`, `Cleanup`, `Finish`.
    pub ops: Vec<PlanOp>,
    /// Every task slot, in creation order.
    pub slots: Vec<SlotKind>,
    /// Every spawned body, in spawn order.
    pub bodies: Vec<BodyPlan>,
    /// Each completion source's task slot.
    pub source_slots: Vec<usize>,
    /// How many cancellation sources.
    pub cts: usize,
    /// How many callbacks are registered.
    pub callbacks: usize,
}

fn pick<T: Copy>(candidates: &[T], index: u8) -> Option<T> {
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[usize::from(index) % candidates.len()])
    }
}

impl Plan {
    /// Resolves `program` (see the module docs).
    pub fn new(program: &Program) -> Plan {
        let mut plan = Plan::default();
        // Which slots the driver holds, which sources are alive.
        let mut held: Vec<bool> = Vec::new();
        let mut alive: Vec<bool> = Vec::new();
        for op in program.ops.iter().take(MAX_OPS) {
            let held_slots: Vec<usize> = (0..held.len()).filter(|&s| held[s]).collect();
            let held_ints: Vec<usize> = held_slots
                .iter()
                .copied()
                .filter(|&s| plan.slots[s].is_int())
                .collect();
            let live: Vec<usize> = (0..alive.len()).filter(|&s| alive[s]).collect();
            let cts: Vec<usize> = (0..plan.cts).collect();
            let room = plan.slots.len() < MAX_SLOTS;
            let resolved = match op {
                Op::NewSource => (room && plan.source_slots.len() < MAX_SOURCES).then(|| {
                    let source = plan.source_slots.len();
                    let slot = plan.slots.len();
                    plan.source_slots.push(slot);
                    plan.slots.push(SlotKind::Source(source));
                    held.push(true);
                    alive.push(true);
                    PlanOp::NewSource { source, slot }
                }),
                Op::Spawn { eager, steps } => (room && plan.bodies.len() < MAX_SPAWNS).then(|| {
                    let body = plan.bodies.len();
                    let steps = steps
                        .iter()
                        .take(MAX_BODY_STEPS)
                        .filter_map(|step| match *step {
                            BodyOp::Await {
                                task,
                                continue_on_captured_context,
                            } => pick(&held_slots, task).map(|slot| Step::Await {
                                slot,
                                captured: continue_on_captured_context,
                            }),
                            BodyOp::CheckToken { cts: index } => {
                                pick(&cts, index).map(|cts| Step::Check { cts })
                            }
                            BodyOp::Yield => Some(Step::Yield),
                            BodyOp::Fail { code } => Some(Step::Fail(code)),
                            BodyOp::Panic { code } => Some(Step::Panic(code)),
                            BodyOp::ReturnSmall { value } => Some(Step::ReturnSmall(value)),
                        })
                        .collect();
                    let slot = plan.slots.len();
                    plan.slots.push(SlotKind::Body(body));
                    plan.bodies.push(BodyPlan {
                        slot,
                        eager: *eager,
                        steps,
                    });
                    held.push(true);
                    PlanOp::Spawn { body }
                }),
                Op::SetResult { source, value } => {
                    pick(&live, *source).map(|source| PlanOp::Complete {
                        source,
                        completion: Completion::Result(source_value(*value)),
                    })
                }
                Op::SetException { source, code } => {
                    pick(&live, *source).map(|source| PlanOp::Complete {
                        source,
                        completion: Completion::Fault(*code),
                    })
                }
                Op::SetCanceled { source } => pick(&live, *source).map(|source| PlanOp::Complete {
                    source,
                    completion: Completion::Cancel,
                }),
                Op::DropSource { source } => {
                    let droppable: Vec<usize> = live
                        .iter()
                        .copied()
                        .filter(|&s| held[plan.source_slots[s]])
                        .collect();
                    pick(&droppable, *source).map(|source| {
                        alive[source] = false;
                        PlanOp::DropSource { source }
                    })
                }
                Op::NewCts { parents } => (plan.cts < MAX_CTS).then(|| {
                    let parents = parents
                        .iter()
                        .take(MAX_PARENTS)
                        .filter_map(|&p| pick(&cts, p))
                        .collect();
                    plan.cts += 1;
                    PlanOp::NewCts {
                        cts: plan.cts - 1,
                        parents,
                    }
                }),
                Op::Register { cts: index, panics } => pick(&cts, *index).map(|cts| {
                    plan.callbacks += 1;
                    PlanOp::Register {
                        cts,
                        callback: plan.callbacks - 1,
                        panics: *panics,
                    }
                }),
                Op::Cancel { cts: index } => pick(&cts, *index).map(|cts| PlanOp::Cancel { cts }),
                Op::CancelAfter { cts: index, ms } => {
                    pick(&cts, *index).map(|cts| PlanOp::CancelAfter {
                        cts,
                        ms: u64::from(*ms % (MAX_MILLIS + 1)),
                    })
                }
                Op::Delay { ms, cts: index } => room.then(|| {
                    let slot = plan.slots.len();
                    plan.slots.push(SlotKind::Delay);
                    held.push(true);
                    PlanOp::Delay {
                        slot,
                        ms: u64::from(*ms % (MAX_MILLIS + 1)),
                        cts: index.and_then(|index| pick(&cts, index)),
                    }
                }),
                Op::Advance { ms } => Some(PlanOp::Advance {
                    ms: u64::from(*ms % (MAX_MILLIS + 1)),
                }),
                Op::WhenAll { inputs } => room.then(|| {
                    let inputs: Vec<usize> = inputs
                        .iter()
                        .take(MAX_INPUTS)
                        .filter_map(|&i| pick(&held_ints, i))
                        .collect();
                    let slot = plan.slots.len();
                    plan.slots.push(SlotKind::All(inputs.clone()));
                    held.push(true);
                    PlanOp::WhenAll { slot, inputs }
                }),
                Op::WhenAny { inputs } => room.then(|| {
                    let inputs: Vec<usize> = inputs
                        .iter()
                        .take(MAX_INPUTS)
                        .filter_map(|&i| pick(&held_ints, i))
                        .collect();
                    if inputs.is_empty() {
                        return PlanOp::WhenAny { slot: None, inputs };
                    }
                    let slot = plan.slots.len();
                    plan.slots.push(SlotKind::Any(inputs.clone()));
                    held.push(true);
                    PlanOp::WhenAny {
                        slot: Some(slot),
                        inputs,
                    }
                }),
                Op::Wait { task } => pick(&held_slots, *task).map(|slot| PlanOp::Wait { slot }),
                Op::Detach { task } => pick(&held_slots, *task).map(|slot| {
                    held[slot] = false;
                    PlanOp::Detach { slot }
                }),
            };
            plan.ops.extend(resolved);
        }
        plan.ops
            .extend([PlanOp::Quiesce, PlanOp::Cleanup, PlanOp::Finish]);
        plan
    }

    /// The slot of body `body`.
    pub fn body_slot(&self, body: usize) -> usize {
        self.bodies[body].slot
    }
}
