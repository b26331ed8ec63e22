//! The reference model: a sequential interpreter of a [`Plan`] that explores every
//! interleaving of the program's actors and collects every [`Record`] the semantics allow.
//!
//! # Actors and atomic steps
//!
//! The runtime runs a program on several threads: the driver (the main thread), the pool's
//! workers, and (std builds) the default pool that resumes awaits that captured nothing.
//! Which thread runs a body does not matter to what a program can observe; *when* it runs
//! does. So the model has one actor per thread of control — the driver, and one per
//! spawned body — and a world state that they change by atomic steps. A schedule is any
//! interleaving of the actors' steps; the model tries them all (depth first, remembering
//! the states it has seen) and keeps the records of the states where everything finished.
//!
//! Each actor has a queue of pending atomic steps (`Micro`): work it must do before its
//! next step of its own, in order — the waiters of a task it has just completed, the
//! callbacks of a cancel in progress, the timers of an advance. Another actor may run
//! between any two of them, which is exactly what the runtime allows: a completion takes
//! its waiters under the task's lock and runs them after unlocking (task_core rules 1–3);
//! cancel runs callbacks one by one without a lock held (cancellation rule 1); an advance
//! fires timers one by one (time rule 2).
//!
//! What each step does, with the rule it models:
//!
//! | step | semantics |
//! |---|---|
//! | body `Await t`, `t` complete | observes `t` (unobserved rule 1); adds its value or ends the body with its error; a `when_any` result is awaited through to its winner |
//! | body `Await t`, `t` pending | registers a `Resume` waiter on `t`; the body is suspended until a completer runs that waiter |
//! | body `Check c` | reads `c`'s "requested" flag: set → the body ends Canceled carrying `c`'s token |
//! | body end / `Fail` / `Panic` / `ReturnSmall` | completes the body's task (a panic is a fault); its waiters go to the completing actor's queue |
//! | eager `Spawn` | the driver runs the body's steps itself until the body first suspends (on a pending task or at a `Yield`): `start`'s exception timing; a synchronous `Ok(v)`, `v` in −1..=8, is the cached task (std builds) |
//! | lazy `Spawn` | the body is a new actor, runnable at once |
//! | `Complete`, `DropSource` | the driver completes a source's task (`try_set_*` wins iff pending); a dropped pending source is faulted as abandoned |
//! | `WhenAll` | registers an `Arrive` waiter per pending input; the last arrival completes it: all faults flattened in input order, else the first canceled input's cancellation in input order (with its token), else the values (when rule 1); its inputs are observed |
//! | `WhenAny` | the driver scans the inputs in order (first complete wins), then registers on each in order, stopping once won; the first `Win` waiter to run wins; the others are removed (when rule 2) |
//! | `Cancel` | sets "requested", removes the `cancel_after` timer, then runs the callbacks one step each, last registered first; a link cancels the child in its slot; a delay's registration cancels the delay (cancellation rules 1, 2, 6) |
//! | `Advance` | fires due timers in (due, scheduling) order, one step each (time rules 1, 2); a delay completes, a `cancel_after` cancels |
//! | `Wait` | blocks the driver until the task completes; observes it |
//!
//! A task's error is reported (unobserved rule 2) iff it faulted and nothing observed it:
//! at the end every handle is gone (the driver's `Task` values, the bodies' awaits, the
//! combinators' inputs, and the completion sources, each a handle of its task by task_core
//! rule 5), and a handle released while a completion runs its waiters leaves the decision
//! to the end of that completion, after any waiter that observes the error; so the model
//! only needs the final flags, not the handle counts (nor the moment of a report).
//! `DropSource` only drops a source whose task the driver holds, so no source is dropped
//! unset as the only handle of its task (that abandonment would go unreported). Canceled
//! tasks are never reported.
//!
//! # Layers
//!
//! The driver's ops are explored layer by layer: layer `k` is every state in which the
//! driver is ready to begin op `k` (it is closed under the bodies' steps). A `Wait` is
//! performed only if, in every state of its layer, the task completes without the driver
//! ([`Expectation::waits`]), so the driver never waits for itself. `Quiesce` collects the
//! waiter counts of the layer's quiescent states (no body can move).
//!
//! Yields, and awaits of tasks already complete with a value, touch nothing another actor
//! reads before the end: the model takes them at once instead of interleaving them (a
//! sound reduction: they commute with every other step).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use super::dsl::{
    body_base, cleanup_value, Completion, Plan, PlanOp, SlotKind, Step, CLEANUP_ADVANCE_MILLIS,
};
use super::record::{
    Failure, Fault, Final, HookKind, OpResult, Outcome, Record, Report, Snapshot, Value,
};

/// Whether `start` returns the completed-task cache's shared task for a synchronous small
/// integer result (std builds only; model builds have no cache).
pub const CACHE: bool = cfg!(not(any(loom, shuttle)));

/// The most states the model explores before giving up on a program.
pub const DEFAULT_STATE_LIMIT: usize = 400_000;

/// A deliberately wrong variant of the semantics, to show that the properties fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// Cancel runs callbacks first registered first.
    CallbacksFifo,
    /// `when_all` does not observe its inputs' errors.
    WhenAllDoesNotObserve,
    /// Among inputs already complete at the call, `when_any` picks the last.
    WhenAnyPicksLast,
    /// Canceled tasks nobody observed are reported too.
    CanceledIsReported,
    /// `when_all` over a canceled input (and no faulted one) ends with a cancellation
    /// without a token, whatever its inputs carry (the rule before the review).
    WhenAllCanceledWithoutToken,
}

/// The reference model, possibly flawed on purpose.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    flaw: Option<Flaw>,
    state_limit: usize,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

/// What the model says about a plan.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The plan.
    pub plan: Plan,
    /// For each op of the plan: `true` for a `Wait` the driver performs.
    pub waits: Vec<bool>,
    /// The waiter counts allowed at `Quiesce`.
    pub snapshots: HashSet<Snapshot>,
    /// Every record the semantics allow.
    pub records: HashSet<Record>,
    /// How many states were explored.
    pub states: usize,
}

/// The model could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The program has more interleavings than the limit allows.
    TooManyStates(usize),
    /// No actor can move although the program has not finished (a bug of the model).
    Stuck {
        /// The op being run.
        op: usize,
        /// The state, debug-printed.
        state: String,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::TooManyStates(n) => write!(f, "the model gave up after {n} states"),
            ModelError::Stuck { op, state } => {
                write!(f, "the model is stuck in op #{op} (a model bug): {state}")
            }
        }
    }
}

impl std::error::Error for ModelError {}

// ---------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------

/// Something waiting for a task (task_core's `Waiter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Waiter {
    /// Body `n` suspended on the task.
    Resume(usize),
    /// The `when_all` in this slot.
    Arrive(usize),
    /// The `when_any` in slot `any`, registered on input slot `input`.
    Win { any: usize, input: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskState {
    outcome: Option<Outcome>,
    waiters: Vec<Waiter>,
    observed: bool,
    /// The driver still holds its handle.
    held: bool,
    /// `start` returned the cache's shared task.
    cached: bool,
    /// A `when_all`'s inputs not arrived yet.
    remaining: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Run {
    /// Being run by the driver inside `start`, before its first suspension.
    Hosted,
    Runnable,
    Suspended,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BodyState {
    pc: usize,
    acc: i64,
    run: Run,
    /// Steps this actor owes after completing its task (its waiters).
    queue: VecDeque<Micro>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Callback {
    User { number: usize, panics: bool },
    Link { child: usize },
    Delay { slot: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct CtsState {
    requested: bool,
    /// Oldest first.
    callbacks: Vec<Callback>,
    timer: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Timer {
    Delay(usize),
    CancelAfter(usize),
}

/// One atomic step owed by an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Micro {
    /// The driver runs one step of a body it hosts.
    RunBody(usize),
    /// Run one waiter of a task this actor completed.
    Waiter(Waiter),
    /// `try_set_*` on a source.
    Complete {
        source: usize,
        completion: Completion,
    },
    /// `when_any`'s scan of one input.
    AnyScan { any: usize, input: usize },
    /// `when_any`'s registration on one input.
    AnyRegister { any: usize, input: usize },
    /// Run the next callback of a cancel in progress.
    CancelNext(usize),
    /// A top-level cancel has run every callback.
    CancelEnd { report: bool },
    /// Fire the next timer due by `target`, or end the advance.
    AdvanceNext { target: u64 },
    /// A blocking wait: enabled once the task is complete.
    WaitFor(usize),
    /// Enabled once every body has finished.
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Driver,
    Body(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct World {
    driver: VecDeque<Micro>,
    tasks: Vec<TaskState>,
    bodies: Vec<BodyState>,
    /// Completion sources not dropped.
    alive: Vec<bool>,
    cts: Vec<CtsState>,
    /// (due, scheduling order) → timer.
    timers: BTreeMap<(u64, u64), Timer>,
    now: u64,
    next_seq: u64,
    log: Vec<usize>,
    results: Vec<OpResult>,
    /// Failures collected by the top-level cancel in progress.
    failures: usize,
    /// Timers fired by the advance in progress.
    fired: usize,
}

impl World {
    fn new() -> World {
        World {
            driver: VecDeque::new(),
            tasks: Vec::new(),
            bodies: Vec::new(),
            alive: Vec::new(),
            cts: Vec::new(),
            timers: BTreeMap::new(),
            now: 0,
            next_seq: 0,
            log: Vec::new(),
            results: Vec::new(),
            failures: 0,
            fired: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Driver,
    Body(usize),
}

/// The semantics of one plan.
struct Sem<'a> {
    plan: &'a Plan,
    flaw: Option<Flaw>,
}

impl Sem<'_> {
    fn queue<'w>(&self, w: &'w mut World, actor: Actor) -> &'w mut VecDeque<Micro> {
        match actor {
            Actor::Driver => &mut w.driver,
            Actor::Body(b) => &mut w.bodies[b].queue,
        }
    }

    /// Puts `micros` at the front of `actor`'s queue, in order.
    fn push_front(&self, w: &mut World, actor: Actor, micros: Vec<Micro>) {
        let queue = self.queue(w, actor);
        for micro in micros.into_iter().rev() {
            queue.push_front(micro);
        }
    }

    fn new_task(&self, w: &mut World, slot: usize) {
        assert_eq!(w.tasks.len(), slot, "model bug: slots are created in order");
        w.tasks.push(TaskState {
            outcome: None,
            waiters: Vec::new(),
            observed: false,
            held: true,
            cached: false,
            remaining: 0,
        });
    }

    /// Completes `slot`: its waiters become `actor`'s next steps (task_core rule 3).
    fn complete(&self, w: &mut World, slot: usize, outcome: Outcome, actor: Actor) {
        let task = &mut w.tasks[slot];
        assert!(
            task.outcome.is_none(),
            "model bug: slot {slot} completed twice"
        );
        task.outcome = Some(outcome);
        let waiters = std::mem::take(&mut task.waiters);
        if self.plan.slots[slot] == SlotKind::Delay {
            // Whichever of the timer and the token completes a delay releases the other.
            w.timers.retain(|_, timer| *timer != Timer::Delay(slot));
            for cts in &mut w.cts {
                cts.callbacks.retain(|cb| *cb != Callback::Delay { slot });
            }
        }
        let micros = waiters.into_iter().map(Micro::Waiter).collect();
        self.push_front(w, actor, micros);
    }

    /// Body `b` ends with `outcome`.
    fn finish(&self, w: &mut World, b: usize, outcome: Outcome, actor: Actor) {
        let slot = self.plan.body_slot(b);
        if CACHE && w.bodies[b].run == Run::Hosted {
            if let Ok(Value::Int(v)) = outcome {
                w.tasks[slot].cached = (-1..=8).contains(&v);
            }
        }
        w.bodies[b].run = Run::Done;
        self.complete(w, slot, outcome, actor);
    }

    /// The value an awaited outcome adds to a body, or the error it ends the body with;
    /// a `when_any`'s winner is awaited in turn (it is complete).
    fn awaited(&self, w: &mut World, outcome: Outcome) -> Result<i64, Failure> {
        match outcome? {
            Value::Int(v) => Ok(v),
            Value::List(values) => Ok(values.iter().fold(0i64, |a, v| a.wrapping_add(*v))),
            Value::Unit => Ok(0),
            Value::Winner(winner) => {
                w.tasks[winner].observed = true;
                let outcome = w.tasks[winner].outcome.clone();
                match outcome.expect("model bug: a winner is complete")? {
                    Value::Int(v) => Ok(v),
                    other => panic!("model bug: a when_any input holds {other:?}"),
                }
            }
        }
    }

    /// One step of body `b`, run by `actor`.
    fn body_step(&self, w: &mut World, b: usize, actor: Actor) {
        let steps = &self.plan.bodies[b].steps;
        let pc = w.bodies[b].pc;
        let Some(&step) = steps.get(pc) else {
            let acc = w.bodies[b].acc;
            return self.finish(w, b, Ok(Value::Int(acc)), actor);
        };
        match step {
            Step::Await { slot, .. } => {
                let Some(outcome) = w.tasks[slot].outcome.clone() else {
                    w.tasks[slot].waiters.push(Waiter::Resume(b));
                    w.bodies[b].run = Run::Suspended;
                    return;
                };
                w.tasks[slot].observed = true;
                match self.awaited(w, outcome) {
                    Ok(value) => {
                        let body = &mut w.bodies[b];
                        body.acc = body.acc.wrapping_add(value);
                        body.pc += 1;
                    }
                    Err(error) => self.finish(w, b, Err(error), actor),
                }
            }
            Step::Check { cts } => {
                if w.cts[cts].requested {
                    self.finish(w, b, Err(Failure::Canceled(Some(cts))), actor);
                } else {
                    w.bodies[b].pc += 1;
                }
            }
            Step::Yield => {
                let body = &mut w.bodies[b];
                body.pc += 1;
                if body.run == Run::Hosted {
                    // The first suspension: `start` returns; the body goes on elsewhere.
                    body.run = Run::Runnable;
                }
            }
            Step::Fail(code) => {
                self.finish(
                    w,
                    b,
                    Err(Failure::Faulted(vec![Fault::Planted(code)])),
                    actor,
                );
            }
            Step::Panic(code) => {
                self.finish(w, b, Err(Failure::Faulted(vec![Fault::Panic(code)])), actor);
            }
            Step::ReturnSmall(v) => self.finish(w, b, Ok(Value::Int(i64::from(v))), actor),
        }
    }

    /// Whether body `b`'s next step touches nothing another actor reads before the end
    /// (a yield, or an await of a task complete with a value): see the module docs.
    fn invisible(&self, w: &World, b: usize) -> bool {
        let body = &w.bodies[b];
        if body.run != Run::Runnable || !body.queue.is_empty() {
            return false;
        }
        match self.plan.bodies[b].steps.get(body.pc) {
            Some(Step::Yield) => true,
            Some(Step::Await { slot, .. }) => match &w.tasks[*slot].outcome {
                Some(Ok(Value::Winner(winner))) => matches!(w.tasks[*winner].outcome, Some(Ok(_))),
                Some(Ok(_)) => true,
                _ => false,
            },
            _ => false,
        }
    }

    fn settle(&self, w: &mut World) {
        loop {
            let Some(b) = (0..w.bodies.len()).find(|&b| self.invisible(w, b)) else {
                return;
            };
            self.body_step(w, b, Actor::Body(b));
        }
    }

    fn run_waiter(&self, w: &mut World, waiter: Waiter, actor: Actor) {
        match waiter {
            Waiter::Resume(b) => {
                assert_eq!(w.bodies[b].run, Run::Suspended, "model bug: resume");
                w.bodies[b].run = Run::Runnable;
            }
            Waiter::Arrive(all) => {
                w.tasks[all].remaining -= 1;
                if w.tasks[all].remaining == 0 {
                    self.complete_all(w, all, actor);
                }
            }
            Waiter::Win { any, input } => self.win(w, any, input, actor),
        }
    }

    /// The last input of a `when_all` arrived (when rule 1).
    fn complete_all(&self, w: &mut World, all: usize, actor: Actor) {
        let SlotKind::All(inputs) = &self.plan.slots[all] else {
            panic!("model bug: slot {all} is not a when_all");
        };
        let mut faults = Vec::new();
        // The first canceled input's cancellation, in input order (its token, if any).
        let mut canceled = None;
        let mut values = Vec::new();
        for &input in inputs {
            match w.tasks[input].outcome.clone() {
                Some(Ok(Value::Int(v))) => values.push(v),
                Some(Err(Failure::Faulted(errors))) => faults.extend(errors),
                Some(Err(Failure::Canceled(token))) => {
                    let token = if self.flaw == Some(Flaw::WhenAllCanceledWithoutToken) {
                        None
                    } else {
                        token
                    };
                    canceled = canceled.or(Some(token));
                }
                other => panic!("model bug: when_all input {input} is {other:?}"),
            }
            if self.flaw != Some(Flaw::WhenAllDoesNotObserve) {
                w.tasks[input].observed = true;
            }
        }
        let outcome = if !faults.is_empty() {
            Err(Failure::Faulted(faults))
        } else if let Some(token) = canceled {
            Err(Failure::Canceled(token))
        } else {
            Ok(Value::List(values))
        };
        self.complete(w, all, outcome, actor);
    }

    /// `input` wins the `when_any` in slot `any`, unless it has a winner (when rule 2).
    fn win(&self, w: &mut World, any: usize, input: usize, actor: Actor) {
        if w.tasks[any].outcome.is_some() {
            return;
        }
        for task in &mut w.tasks {
            task.waiters
                .retain(|waiter| !matches!(waiter, Waiter::Win { any: a, .. } if *a == any));
        }
        self.complete(w, any, Ok(Value::Winner(input)), actor);
    }

    /// Starts cancelling `cts` (cancellation rules 1, 2): `report` for a top-level cancel
    /// (`Some(true)`: the op's, whose result is recorded; `Some(false)`: a timer's), `None`
    /// for a linked child cancelled inside its parent's callback.
    fn cancel(&self, w: &mut World, cts: usize, report: Option<bool>) {
        if w.cts[cts].requested {
            if report == Some(true) {
                w.results.push(OpResult::Cancel(0));
            }
            return;
        }
        w.cts[cts].requested = true;
        if let Some(key) = w.cts[cts].timer.take() {
            w.timers.remove(&key);
        }
        let mut micros = vec![Micro::CancelNext(cts)];
        if let Some(report) = report {
            w.failures = 0;
            micros.push(Micro::CancelEnd { report });
        }
        self.push_front(w, Actor::Driver, micros);
    }

    fn schedule(&self, w: &mut World, ms: u64, timer: Timer) -> (u64, u64) {
        let key = (w.now + ms, w.next_seq);
        w.next_seq += 1;
        w.timers.insert(key, timer);
        key
    }

    fn source_outcome(completion: Completion) -> Outcome {
        match completion {
            Completion::Result(v) => Ok(Value::Int(v)),
            Completion::Fault(code) => Err(Failure::Faulted(vec![Fault::Planted(code)])),
            Completion::Cancel => Err(Failure::Canceled(None)),
        }
    }

    fn run_micro(&self, w: &mut World, micro: Micro, actor: Actor) {
        match micro {
            Micro::RunBody(b) => {
                self.body_step(w, b, Actor::Driver);
                if w.bodies[b].run == Run::Hosted {
                    w.driver.push_front(Micro::RunBody(b));
                }
            }
            Micro::Waiter(waiter) => self.run_waiter(w, waiter, actor),
            Micro::Complete { source, completion } => {
                let slot = self.plan.source_slots[source];
                let pending = w.tasks[slot].outcome.is_none();
                w.results.push(OpResult::TrySet(pending));
                if pending {
                    self.complete(w, slot, Self::source_outcome(completion), actor);
                }
            }
            Micro::AnyScan { any, input } => {
                if w.tasks[any].outcome.is_none() && w.tasks[input].outcome.is_some() {
                    self.complete(w, any, Ok(Value::Winner(input)), actor);
                }
            }
            Micro::AnyRegister { any, input } => {
                if w.tasks[any].outcome.is_some() {
                    // Won meanwhile: the registration loop stops.
                } else if w.tasks[input].outcome.is_some() {
                    self.win(w, any, input, actor);
                } else {
                    w.tasks[input].waiters.push(Waiter::Win { any, input });
                }
            }
            Micro::CancelNext(cts) => {
                let callbacks = &mut w.cts[cts].callbacks;
                let next = if self.flaw == Some(Flaw::CallbacksFifo) {
                    (!callbacks.is_empty()).then(|| callbacks.remove(0))
                } else {
                    callbacks.pop()
                };
                let Some(callback) = next else { return };
                w.driver.push_front(Micro::CancelNext(cts));
                match callback {
                    Callback::User { number, panics } => {
                        w.log.push(number);
                        if panics {
                            w.failures += 1;
                        }
                    }
                    Callback::Link { child } => self.cancel(w, child, None),
                    Callback::Delay { slot } => {
                        let canceled = Err(Failure::Canceled(Some(cts)));
                        self.complete(w, slot, canceled, Actor::Driver);
                    }
                }
            }
            Micro::CancelEnd { report } => {
                if report {
                    w.results.push(OpResult::Cancel(w.failures));
                }
            }
            Micro::AdvanceNext { target } => {
                let due = w
                    .timers
                    .first_key_value()
                    .map(|(key, timer)| (*key, *timer));
                match due {
                    Some((key, timer)) if key.0 <= target => {
                        w.timers.remove(&key);
                        w.now = w.now.max(key.0);
                        w.fired += 1;
                        w.driver.push_front(Micro::AdvanceNext { target });
                        match timer {
                            Timer::Delay(slot) => {
                                self.complete(w, slot, Ok(Value::Unit), Actor::Driver);
                            }
                            Timer::CancelAfter(cts) => {
                                w.cts[cts].timer = None;
                                self.cancel(w, cts, Some(false));
                            }
                        }
                    }
                    _ => {
                        w.now = target;
                        w.results.push(OpResult::Advance(w.fired));
                    }
                }
            }
            Micro::WaitFor(slot) => {
                w.tasks[slot].observed = true;
                let outcome = w.tasks[slot]
                    .outcome
                    .clone()
                    .expect("enabled once complete");
                let outcome = outcome.map(|value| self.normalize(w, slot, value));
                w.results.push(OpResult::Wait(outcome));
            }
            Micro::Finish => {}
        }
    }

    /// The driver begins op `op`.
    fn begin(&self, w: &mut World, op: &PlanOp, real_wait: bool) {
        let driver = Actor::Driver;
        match op {
            PlanOp::NewSource { slot, .. } => {
                self.new_task(w, *slot);
                w.alive.push(true);
            }
            PlanOp::Spawn { body } => {
                let plan = &self.plan.bodies[*body];
                self.new_task(w, plan.slot);
                w.bodies.push(BodyState {
                    pc: 0,
                    acc: body_base(*body),
                    run: if plan.eager {
                        Run::Hosted
                    } else {
                        Run::Runnable
                    },
                    queue: VecDeque::new(),
                });
                if plan.eager {
                    w.driver.push_back(Micro::RunBody(*body));
                }
            }
            PlanOp::Complete { source, completion } => w.driver.push_back(Micro::Complete {
                source: *source,
                completion: *completion,
            }),
            PlanOp::DropSource { source } => {
                w.alive[*source] = false;
                let slot = self.plan.source_slots[*source];
                if w.tasks[slot].outcome.is_none() {
                    let abandoned = Err(Failure::Faulted(vec![Fault::Abandoned]));
                    self.complete(w, slot, abandoned, driver);
                }
            }
            PlanOp::NewCts { cts, parents } => {
                w.cts.push(CtsState::default());
                for &parent in parents {
                    if w.cts[parent].requested {
                        w.cts[*cts].requested = true;
                    } else {
                        w.cts[parent].callbacks.push(Callback::Link { child: *cts });
                    }
                }
            }
            PlanOp::Register {
                cts,
                callback,
                panics,
            } => {
                let result = if w.cts[*cts].requested {
                    // Rule 3: runs inline; a panic reaches the caller.
                    w.log.push(*callback);
                    if *panics {
                        Err(())
                    } else {
                        Ok(false)
                    }
                } else {
                    w.cts[*cts].callbacks.push(Callback::User {
                        number: *callback,
                        panics: *panics,
                    });
                    Ok(true)
                };
                w.results.push(OpResult::Register(result));
            }
            PlanOp::Cancel { cts } => self.cancel(w, *cts, Some(true)),
            PlanOp::CancelAfter { cts, ms } => {
                if !w.cts[*cts].requested {
                    if let Some(old) = w.cts[*cts].timer.take() {
                        w.timers.remove(&old);
                    }
                    let key = self.schedule(w, *ms, Timer::CancelAfter(*cts));
                    w.cts[*cts].timer = Some(key);
                }
            }
            PlanOp::Delay { slot, ms, cts } => {
                self.new_task(w, *slot);
                match cts {
                    Some(c) if w.cts[*c].requested => {
                        self.complete(w, *slot, Err(Failure::Canceled(Some(*c))), driver);
                    }
                    _ if *ms == 0 => self.complete(w, *slot, Ok(Value::Unit), driver),
                    _ => {
                        self.schedule(w, *ms, Timer::Delay(*slot));
                        if let Some(c) = cts {
                            w.cts[*c].callbacks.push(Callback::Delay { slot: *slot });
                        }
                    }
                }
            }
            PlanOp::Advance { ms } => {
                w.fired = 0;
                let target = w.now + ms;
                w.driver.push_back(Micro::AdvanceNext { target });
            }
            PlanOp::WhenAll { slot, inputs } => {
                self.new_task(w, *slot);
                w.tasks[*slot].remaining = inputs.len();
                for &input in inputs {
                    if w.tasks[input].outcome.is_some() {
                        w.tasks[*slot].remaining -= 1;
                    } else {
                        w.tasks[input].waiters.push(Waiter::Arrive(*slot));
                    }
                }
                if inputs.is_empty() {
                    self.complete(w, *slot, Ok(Value::List(Vec::new())), driver);
                } else if w.tasks[*slot].remaining == 0 {
                    self.complete_all(w, *slot, driver);
                }
            }
            PlanOp::WhenAny { slot: None, .. } => w.results.push(OpResult::WhenAnyEmpty(true)),
            PlanOp::WhenAny {
                slot: Some(any),
                inputs,
            } => {
                self.new_task(w, *any);
                let mut scan = inputs.clone();
                if self.flaw == Some(Flaw::WhenAnyPicksLast) {
                    scan.reverse();
                }
                for input in scan {
                    w.driver.push_back(Micro::AnyScan { any: *any, input });
                }
                for &input in inputs {
                    w.driver.push_back(Micro::AnyRegister { any: *any, input });
                }
            }
            PlanOp::Wait { slot } => {
                if real_wait {
                    w.driver.push_back(Micro::WaitFor(*slot));
                }
            }
            PlanOp::Detach { slot } => w.tasks[*slot].held = false,
            PlanOp::Quiesce => {}
            PlanOp::Cleanup => {
                for source in 0..w.alive.len() {
                    if w.alive[source] {
                        w.driver.push_back(Micro::Complete {
                            source,
                            completion: Completion::Result(cleanup_value(source)),
                        });
                    }
                }
                w.fired = 0;
                let target = w.now + CLEANUP_ADVANCE_MILLIS;
                w.driver.push_back(Micro::AdvanceNext { target });
            }
            PlanOp::Finish => w.driver.push_back(Micro::Finish),
        }
    }

    fn body_can_move(&self, w: &World, b: usize) -> bool {
        let body = &w.bodies[b];
        !body.queue.is_empty() || body.run == Run::Runnable
    }

    fn moves(&self, w: &World) -> Vec<Move> {
        let mut moves = Vec::new();
        let driver = match w.driver.front() {
            None => false,
            Some(Micro::WaitFor(slot)) => w.tasks[*slot].outcome.is_some(),
            Some(Micro::Finish) => w
                .bodies
                .iter()
                .all(|body| body.run == Run::Done && body.queue.is_empty()),
            Some(_) => true,
        };
        if driver {
            moves.push(Move::Driver);
        }
        moves.extend(
            (0..w.bodies.len())
                .filter(|&b| self.body_can_move(w, b))
                .map(Move::Body),
        );
        moves
    }

    fn apply(&self, w: &mut World, m: Move) {
        match m {
            Move::Driver => {
                let micro = w.driver.pop_front().expect("a driver move has a step");
                self.run_micro(w, micro, Actor::Driver);
            }
            Move::Body(b) => match w.bodies[b].queue.pop_front() {
                Some(micro) => self.run_micro(w, micro, Actor::Body(b)),
                None => self.body_step(w, b, Actor::Body(b)),
            },
        }
    }

    /// Whether `slot` completes in every schedule without another driver step.
    fn completes_without_driver(&self, w: &World, slot: usize) -> bool {
        if w.tasks[slot].outcome.is_some() {
            return true;
        }
        match &self.plan.slots[slot] {
            SlotKind::Source(_) | SlotKind::Delay => false,
            SlotKind::All(inputs) => inputs
                .iter()
                .all(|&input| self.completes_without_driver(w, input)),
            SlotKind::Any(inputs) => inputs
                .iter()
                .any(|&input| self.completes_without_driver(w, input)),
            SlotKind::Body(b) => self.plan.bodies[*b].steps[w.bodies[*b].pc..]
                .iter()
                .all(|step| match step {
                    Step::Await { slot, .. } => self.completes_without_driver(w, *slot),
                    _ => true,
                }),
        }
    }

    fn identity(&self, w: &World, slot: usize) -> (bool, i64) {
        match (&w.tasks[slot].outcome, w.tasks[slot].cached) {
            (Some(Ok(Value::Int(v))), true) => (true, *v),
            _ => (false, slot as i64),
        }
    }

    /// A `when_any`'s winner as the first input slot holding the same task.
    fn normalize(&self, w: &World, slot: usize, value: Value) -> Value {
        match (value, &self.plan.slots[slot]) {
            (Value::Winner(winner), SlotKind::Any(inputs)) => {
                let identity = self.identity(w, winner);
                let first = inputs
                    .iter()
                    .copied()
                    .find(|&input| self.identity(w, input) == identity);
                Value::Winner(first.unwrap_or(winner))
            }
            (value, _) => value,
        }
    }

    fn hook(&self, slot: usize) -> HookKind {
        match self.plan.slots[slot] {
            SlotKind::Body(b) if !self.plan.bodies[b].eager => HookKind::Pool,
            _ => HookKind::Global,
        }
    }

    fn snapshot(&self, w: &World) -> Snapshot {
        w.tasks
            .iter()
            .map(|task| {
                task.held
                    .then(|| (task.outcome.is_some(), task.waiters.len()))
            })
            .collect()
    }

    fn record(&self, w: &World) -> Record {
        let finals = w
            .tasks
            .iter()
            .enumerate()
            .map(|(slot, task)| match (&task.outcome, task.held) {
                (_, false) => Final::Unheld,
                (None, true) => Final::Pending,
                (Some(Ok(value)), true) => Final::Succeeded(self.normalize(w, slot, value.clone())),
                (Some(Err(Failure::Faulted(_))), true) => Final::Faulted,
                (Some(Err(Failure::Canceled(token))), true) => Final::Canceled(*token),
            })
            .collect();
        let mut reports: Vec<Report> = w
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| !task.observed)
            .filter_map(|(slot, task)| {
                let faults = match &task.outcome {
                    Some(Err(Failure::Faulted(faults))) => faults.clone(),
                    Some(Err(Failure::Canceled(_)))
                        if self.flaw == Some(Flaw::CanceledIsReported) =>
                    {
                        Vec::new()
                    }
                    _ => return None,
                };
                Some(Report {
                    slot,
                    hook: self.hook(slot),
                    faults,
                })
            })
            .collect();
        reports.sort();
        Record {
            results: w.results.clone(),
            callbacks: w.log.clone(),
            finals,
            reports,
        }
    }

    /// Every state reachable from `starts` in which the driver's queue is empty (ready for
    /// the next op), closed under the bodies' steps.
    fn explore(
        &self,
        op: usize,
        starts: Vec<World>,
        seen_total: &mut usize,
        limit: usize,
    ) -> Result<HashSet<World>, ModelError> {
        let mut seen: HashSet<World> = HashSet::new();
        let mut ready = HashSet::new();
        let mut stack = starts;
        while let Some(w) = stack.pop() {
            if seen.contains(&w) {
                continue;
            }
            seen.insert(w.clone());
            *seen_total += 1;
            if *seen_total > limit {
                return Err(ModelError::TooManyStates(*seen_total));
            }
            let moves = self.moves(&w);
            if w.driver.is_empty() {
                ready.insert(w.clone());
            } else if moves.is_empty() {
                return Err(ModelError::Stuck {
                    op,
                    state: format!("{w:?}"),
                });
            }
            for m in moves {
                let mut next = w.clone();
                self.apply(&mut next, m);
                self.settle(&mut next);
                stack.push(next);
            }
        }
        Ok(ready)
    }
}

impl Model {
    /// The model of the runtime's semantics.
    pub fn new() -> Model {
        Model {
            flaw: None,
            state_limit: DEFAULT_STATE_LIMIT,
        }
    }

    /// A deliberately wrong model.
    pub fn with_flaw(flaw: Flaw) -> Model {
        Model {
            flaw: Some(flaw),
            ..Model::new()
        }
    }

    /// The same model with another limit on explored states.
    pub fn with_state_limit(self, state_limit: usize) -> Model {
        Model {
            state_limit,
            ..self
        }
    }

    /// The flaw, if any.
    pub fn flaw(&self) -> Option<Flaw> {
        self.flaw
    }

    /// Everything the semantics allow for `plan` (see the module docs).
    pub fn expect(&self, plan: &Plan) -> Result<Expectation, ModelError> {
        let sem = Sem {
            plan,
            flaw: self.flaw,
        };
        let mut states = 0;
        let mut layer = sem.explore(0, vec![World::new()], &mut states, self.state_limit)?;
        let mut waits = vec![false; plan.ops.len()];
        let mut snapshots = HashSet::new();
        for (index, op) in plan.ops.iter().enumerate() {
            match op {
                PlanOp::Wait { slot } => {
                    waits[index] = layer.iter().all(|w| sem.completes_without_driver(w, *slot));
                }
                PlanOp::Quiesce => {
                    snapshots = layer
                        .iter()
                        .filter(|w| sem.moves(w).is_empty())
                        .map(|w| sem.snapshot(w))
                        .collect();
                }
                _ => {}
            }
            let starts = layer
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    sem.begin(&mut w, op, waits[index]);
                    sem.settle(&mut w);
                    w
                })
                .collect();
            layer = sem.explore(index, starts, &mut states, self.state_limit)?;
        }
        let mut records = HashSet::new();
        for w in &layer {
            if let Some(slot) = w.tasks.iter().position(|task| task.outcome.is_none()) {
                return Err(ModelError::Stuck {
                    op: plan.ops.len(),
                    state: format!("slot {slot} never completed: {w:?}"),
                });
            }
            records.insert(sem.record(w));
        }
        Ok(Expectation {
            plan: plan.clone(),
            waits,
            snapshots,
            records,
            states,
        })
    }
}
