//! The driver: runs a [`Plan`] on the real runtime and checks what it shows against the
//! model's [`Expectation`].
//!
//! The driver is the main thread (or shuttle's main task). It owns a 2-worker
//! [`ThreadPool`] (lazy spawns), a manual [`Clock`] (every timer), the completion sources,
//! cancellation sources and registrations, and one handle per task slot. Eager spawns use
//! [`taskcheck::start`] on the driver thread, which has no context, so their awaits
//! capture nothing. Every body future is wrapped in a drop counter.
//!
//! After the program's ops it
//!
//! 1. (`Quiesce`) waits until the slots' (completed, `registered_continuations()`) pairs
//!    are a quiescent snapshot the model allows — a continuation that is never removed
//!    (a leak) or never registered keeps it from getting there;
//! 2. (`Cleanup`) completes every source still pending and advances the clock past every
//!    timer;
//! 3. (`Finish`) waits for every held task through `when_any([task])`, which does not
//!    observe it, and for every body future (held or detached) to be dropped — only then
//!    may the pool shut down: a continuation posted to it from outside afterwards would be
//!    refused and its task abandoned; reads each slot's final state without observing a
//!    fault; checks that no held task is pending or still has continuations; drops every
//!    handle and source; shuts the pool down;
//!
//! and compares the [`Record`] (op results, callback log, finals, unobserved reports with
//! the hook that got them) with the model's set. Reports are counted with the pool
//! context's hook and the process-wide hook; in std builds the process-wide hook is
//! global, so runs are serialized by a lock.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::task::{Context as PollContext, Poll};
use std::time::Duration;

use taskcheck::{
    when_all, when_any, CancellationToken, CancellationTokenRegistration, CancellationTokenSource,
    Clock, Task, TaskCompletionSource, TaskError, TaskId, TaskStatus, ThreadPool, UnhandledKind,
    UnhandledTaskError, WaitError,
};

use super::dsl::{
    body_base, cleanup_value, Completion, Plan, PlanOp, Program, Step, CLEANUP_ADVANCE_MILLIS,
};
use super::model::{Expectation, Model, ModelError};
use super::record::{
    Failure, Fault, Final, HookKind, OpResult, Outcome, Record, Report, Snapshot, Value,
};

/// What a planted panic's message starts with (the panic filter silences these).
pub const PLANTED_PANIC: &str = "planted panic";
/// What a planted cancellation callback's panic message starts with.
pub const PLANTED_CALLBACK_PANIC: &str = "planted callback panic";

/// The fault a body's `Fail` step or a source's `SetException` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planted(pub u8);

impl fmt::Display for Planted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "planted fault {}", self.0)
    }
}

impl Error for Planted {}

/// Wraps the current panic hook (once per process) so that planted panics print nothing;
/// every other panic goes to the hook that was installed before. Call it after any hook
/// that should see other panics (libFuzzer's, shuttle's).
pub fn install_panic_filter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if text.is_some_and(|text| text.starts_with("planted ")) {
                return;
            }
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------
// What went wrong
// ---------------------------------------------------------------------------------------

/// How a run failed.
#[derive(Debug, Clone)]
pub enum Problem {
    /// The model could not answer.
    Model(ModelError),
    /// The runtime's record is none of those the model allows.
    Disallowed {
        /// What the runtime showed.
        record: Record,
    },
    /// The waiter counts never reached a quiescent snapshot the model allows.
    Quiescence {
        /// The last snapshot the runtime showed.
        last: Snapshot,
    },
    /// A held task was still pending after `Finish`.
    NeverCompleted {
        /// Its slot.
        slot: usize,
    },
    /// A completed task still had continuations registered.
    LeakedContinuations {
        /// Its slot.
        slot: usize,
        /// How many.
        count: usize,
    },
    /// Not every body future was dropped.
    BodiesNotDropped {
        /// How many were dropped.
        dropped: usize,
        /// How many were spawned.
        spawned: usize,
    },
    /// A panic escaped the runtime (or the driver).
    Panicked {
        /// Its message.
        message: String,
    },
}

/// A failed check of one program: the plan, what went wrong, and what the model allows.
#[derive(Debug, Clone)]
pub struct ProgramError {
    /// The resolved program.
    pub plan: Box<Plan>,
    /// What went wrong.
    pub problem: Box<Problem>,
    /// The model's records (all of them; the message shows the closest few).
    pub allowed: Vec<Record>,
    /// The model's quiescent snapshots.
    pub snapshots: Vec<Snapshot>,
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the program (resolved):")?;
        for (index, op) in self.plan.ops.iter().enumerate() {
            writeln!(f, "  #{index:<2} {op:?}")?;
        }
        for (index, body) in self.plan.bodies.iter().enumerate() {
            writeln!(
                f,
                "  body {index} (slot {}, {}): {:?}",
                body.slot,
                if body.eager { "start" } else { "pool.spawn" },
                body.steps
            )?;
        }
        match &*self.problem {
            Problem::Model(error) => writeln!(f, "{error}")?,
            Problem::Disallowed { record } => {
                writeln!(f, "the runtime showed a record the model does not allow:")?;
                writeln!(f, "{record}")?;
                let mut closest: Vec<&Record> = self.allowed.iter().collect();
                closest.sort_by_key(|allowed| allowed.differences(record).len());
                writeln!(
                    f,
                    "the model allows {} record(s); the closest:",
                    self.allowed.len()
                )?;
                for allowed in closest.into_iter().take(3) {
                    writeln!(f, "  (differs in {:?})", allowed.differences(record))?;
                    writeln!(f, "{allowed}")?;
                }
            }
            Problem::Quiescence { last } => {
                writeln!(
                    f,
                    "the tasks' (completed, registered continuations) never reached a \
                     quiescent state the model allows (a leaked or missing continuation)"
                )?;
                writeln!(f, "  runtime: {last:?}")?;
                for snapshot in self.snapshots.iter().take(4) {
                    writeln!(f, "  model:   {snapshot:?}")?;
                }
            }
            Problem::NeverCompleted { slot } => {
                writeln!(f, "slot {slot} never completed")?;
            }
            Problem::LeakedContinuations { slot, count } => writeln!(
                f,
                "slot {slot} completed but still has {count} registered continuation(s)"
            )?,
            Problem::BodiesNotDropped { dropped, spawned } => writeln!(
                f,
                "only {dropped} of {spawned} body futures were dropped (a task leaked)"
            )?,
            Problem::Panicked { message } => writeln!(f, "a panic escaped: {message}")?,
        }
        Ok(())
    }
}

impl Error for ProgramError {}

/// What a successful check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// States the model explored.
    pub states: usize,
    /// Records the model allowed.
    pub records: usize,
}

// ---------------------------------------------------------------------------------------
// Checking programs
// ---------------------------------------------------------------------------------------

/// What the model says about `program`, or the error a property reports.
pub fn expect(model: &Model, program: &Program) -> Result<Expectation, ProgramError> {
    let plan = Plan::new(program);
    model.expect(&plan).map_err(|error| ProgramError {
        plan: Box::new(plan),
        problem: Box::new(Problem::Model(error)),
        allowed: Vec::new(),
        snapshots: Vec::new(),
    })
}

/// Runs `program` on the runtime (std builds: real threads) and compares it with `model`.
#[cfg(not(shuttle))]
pub fn check_program(model: &Model, program: &Program) -> Result<Summary, ProgramError> {
    let expectation = expect(model, program)?;
    run_expectation(&expectation)?;
    Ok(Summary {
        states: expectation.states,
        records: expectation.records.len(),
    })
}

/// Runs the expectation's plan on the runtime and checks it (under shuttle: call it inside
/// the shuttle closure).
pub fn run_expectation(expectation: &Expectation) -> Result<Record, ProgramError> {
    install_panic_filter();
    #[cfg(not(shuttle))]
    let _serial = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let fail = |problem| ProgramError {
        plan: Box::new(expectation.plan.clone()),
        problem: Box::new(problem),
        allowed: expectation.records.iter().cloned().collect(),
        snapshots: expectation.snapshots.iter().cloned().collect(),
    };
    let shared = Arc::new(Shared::default());
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut driver = Driver::new(expectation, shared.clone());
        let outcome = driver.run();
        driver.tear_down();
        outcome
    }));
    // Every body future dropped: every report has been made (a report happens inside the
    // drop or completion that makes it, before the body's drop is counted).
    let spawned = expectation.plan.bodies.len();
    let dropped = eventually(|| shared.drops.load(Ordering::SeqCst) >= spawned);
    taskcheck::reset_unobserved_error_hook();
    let record = match run {
        Ok(Ok(record)) => record,
        Ok(Err(problem)) => return Err(fail(problem)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
            return Err(fail(Problem::Panicked { message }));
        }
    };
    if !dropped || shared.drops.load(Ordering::SeqCst) != spawned {
        return Err(fail(Problem::BodiesNotDropped {
            dropped: shared.drops.load(Ordering::SeqCst),
            spawned,
        }));
    }
    let mut record = record;
    record.reports = shared.reports(&record.finals);
    if !expectation.records.contains(&record) {
        return Err(fail(Problem::Disallowed { record }));
    }
    Ok(record)
}

/// Serializes runs in std builds: the process-wide unobserved-error hook is global.
#[cfg(not(shuttle))]
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Polls `condition` until it holds or patience runs out (5 s on real threads; a bounded
/// number of yields under shuttle, which has no time).
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    #[cfg(not(shuttle))]
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut spins = 0u32;
        loop {
            if condition() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    #[cfg(shuttle)]
    {
        for _ in 0..3_000 {
            if condition() {
                return true;
            }
            shuttle::thread::yield_now();
        }
        condition()
    }
}

// ---------------------------------------------------------------------------------------
// The runtime side
// ---------------------------------------------------------------------------------------

/// The driver's and the hooks' shared counters.
#[derive(Default)]
struct Shared {
    log: Mutex<Vec<usize>>,
    /// (task, hook, faults, was it an unobserved report)
    reports: Mutex<Vec<(TaskId, HookKind, Vec<Fault>, bool)>>,
    drops: AtomicUsize,
    /// Each slot's task id, for mapping reports.
    ids: Mutex<Vec<TaskId>>,
}

impl Shared {
    fn report(&self, hook: HookKind, report: &UnhandledTaskError) {
        let unobserved = report.kind() == UnhandledKind::Unobserved;
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((report.task(), hook, faults(report.error()), unobserved));
    }

    /// The reports of this run's tasks, by slot, sorted.
    fn reports(&self, finals: &[Final]) -> Vec<Report> {
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Report> = reports
            .iter()
            .filter_map(|(id, hook, faults, unobserved)| {
                let slot = ids.iter().position(|known| known == id)?;
                let mut faults = faults.clone();
                if !unobserved {
                    faults.push(Fault::Other("reported as async void".to_owned()));
                }
                Some(Report {
                    slot,
                    hook: *hook,
                    faults,
                })
            })
            .collect();
        debug_assert!(out.iter().all(|report| report.slot < finals.len()));
        out.sort();
        out
    }
}

/// A body future that counts its drop (after everything it holds is dropped).
struct Counted<F> {
    inner: Option<Pin<Box<F>>>,
    shared: Arc<Shared>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for Counted<F> {
    fn drop(&mut self) {
        drop(self.inner.take());
        self.shared.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The driver's handle of a task slot.
#[derive(Clone)]
enum Handle {
    Int(Task<i64>),
    List(Task<Vec<i64>>),
    Any(Task<Task<i64>>),
    Unit(Task<()>),
}

macro_rules! on_task {
    ($handle:expr, $task:ident => $body:expr) => {
        match $handle {
            Handle::Int($task) => $body,
            Handle::List($task) => $body,
            Handle::Any($task) => $body,
            Handle::Unit($task) => $body,
        }
    };
}

impl Handle {
    fn id(&self) -> TaskId {
        on_task!(self, task => task.id())
    }

    fn status(&self) -> TaskStatus {
        on_task!(self, task => task.status())
    }

    fn is_completed(&self) -> bool {
        on_task!(self, task => task.is_completed())
    }

    fn registered_continuations(&self) -> usize {
        on_task!(self, task => task.registered_continuations())
    }

    /// Blocks until complete without observing the task (`when_any` never observes).
    fn wait_done(&self) {
        on_task!(self, task => {
            if let Ok(any) = when_any([task.clone()]) {
                let _ = any.wait();
            }
        });
    }
}

/// A body step with what it needs.
enum RtStep {
    Await(Handle, bool),
    Check(CancellationToken),
    Yield,
    Fail(u8),
    Panic(u8),
    ReturnSmall(i8),
}

async fn await_handle(handle: Handle, captured: bool) -> Result<i64, TaskError> {
    Ok(match handle {
        Handle::Int(task) => {
            if captured {
                task.await?
            } else {
                task.configure_await(false).await?
            }
        }
        Handle::List(task) => {
            let values = if captured {
                task.await?
            } else {
                task.configure_await(false).await?
            };
            values.iter().fold(0i64, |a, v| a.wrapping_add(*v))
        }
        Handle::Unit(task) => {
            if captured {
                task.await?;
            } else {
                task.configure_await(false).await?;
            }
            0
        }
        Handle::Any(task) => {
            // C#'s `await await Task.WhenAny(..)`.
            let winner = if captured {
                task.await?
            } else {
                task.configure_await(false).await?
            };
            if captured {
                winner.await?
            } else {
                winner.configure_await(false).await?
            }
        }
    })
}

async fn run_body(steps: Vec<RtStep>, base: i64) -> Result<i64, TaskError> {
    let mut acc = base;
    for step in steps {
        match step {
            RtStep::Await(handle, captured) => {
                acc = acc.wrapping_add(await_handle(handle, captured).await?);
            }
            RtStep::Check(token) => token.throw_if_cancellation_requested()?,
            RtStep::Yield => taskcheck::yield_now().await,
            RtStep::Fail(code) => return Err(TaskError::from_error(Planted(code))),
            RtStep::Panic(code) => panic!("{PLANTED_PANIC} {code}"),
            RtStep::ReturnSmall(value) => return Ok(i64::from(value)),
        }
    }
    Ok(acc)
}

/// One fault, recognised.
fn fault(error: &(dyn Error + Send + Sync + 'static)) -> Fault {
    if let Some(planted) = error.downcast_ref::<Planted>() {
        return Fault::Planted(planted.0);
    }
    let text = error.to_string();
    let marker = format!("panicked: {PLANTED_PANIC} ");
    if let Some(at) = text.find(&marker) {
        if let Ok(code) = text[at + marker.len()..].trim().parse() {
            return Fault::Panic(code);
        }
    }
    if text.contains("was abandoned") {
        return Fault::Abandoned;
    }
    Fault::Other(text)
}

fn faults(error: &TaskError) -> Vec<Fault> {
    error.errors().map(fault).collect()
}

struct Driver<'a> {
    expectation: &'a Expectation,
    shared: Arc<Shared>,
    pool: ThreadPool,
    clock: Clock,
    sources: Vec<Option<TaskCompletionSource<i64>>>,
    slots: Vec<Option<Handle>>,
    /// For a `when_any` slot: its inputs' (task id, slot).
    any_inputs: Vec<Vec<(TaskId, usize)>>,
    cts: Vec<CancellationTokenSource>,
    registrations: Vec<CancellationTokenRegistration>,
    results: Vec<OpResult>,
}

impl<'a> Driver<'a> {
    fn new(expectation: &'a Expectation, shared: Arc<Shared>) -> Self {
        let pool = ThreadPool::with_name("program", 2);
        let for_pool = shared.clone();
        pool.context()
            .set_unobserved_error_hook(move |report| for_pool.report(HookKind::Pool, report));
        let for_global = shared.clone();
        taskcheck::set_unobserved_error_hook(move |report| {
            for_global.report(HookKind::Global, report);
        });
        Driver {
            expectation,
            shared,
            pool,
            clock: Clock::manual(),
            sources: Vec::new(),
            slots: Vec::new(),
            any_inputs: Vec::new(),
            cts: Vec::new(),
            registrations: Vec::new(),
            results: Vec::new(),
        }
    }

    fn plan(&self) -> &'a Plan {
        &self.expectation.plan
    }

    fn held(&self, slot: usize) -> &Handle {
        self.slots[slot]
            .as_ref()
            .expect("the plan only names held slots")
    }

    fn int(&self, slot: usize) -> Task<i64> {
        match self.held(slot) {
            Handle::Int(task) => task.clone(),
            _ => panic!("the plan only combines i64 slots"),
        }
    }

    fn push_slot(&mut self, handle: Handle) {
        self.shared
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle.id());
        self.slots.push(Some(handle));
        self.any_inputs.push(Vec::new());
    }

    fn token_index(&self, token: Option<&CancellationToken>) -> Option<usize> {
        let token = token?;
        Some(
            self.cts
                .iter()
                .position(|cts| cts.token() == *token)
                .unwrap_or(usize::MAX),
        )
    }

    fn failure(&self, error: &TaskError) -> Failure {
        if error.is_canceled() {
            Failure::Canceled(self.token_index(error.cancellation_token()))
        } else {
            Failure::Faulted(faults(error))
        }
    }

    fn winner(&self, slot: usize, winner: &Task<i64>) -> Value {
        let first = self.any_inputs[slot]
            .iter()
            .find(|(id, _)| *id == winner.id())
            .map_or(usize::MAX, |(_, input)| *input);
        Value::Winner(first)
    }

    fn wait(&self, slot: usize) -> Outcome {
        let wait_error = |error: WaitError| match error {
            WaitError::Task(error) => self.failure(&error),
            other => Failure::Faulted(vec![Fault::Other(other.to_string())]),
        };
        match self.held(slot) {
            Handle::Int(task) => task.wait().map(Value::Int).map_err(wait_error),
            Handle::List(task) => task.wait().map(Value::List).map_err(wait_error),
            Handle::Unit(task) => task.wait().map(|()| Value::Unit).map_err(wait_error),
            Handle::Any(task) => task
                .wait()
                .map(|winner| self.winner(slot, &winner))
                .map_err(wait_error),
        }
    }

    /// A slot's final state; reads only the outcomes that cannot be unobserved faults.
    fn final_of(&self, slot: usize) -> Final {
        let Some(handle) = &self.slots[slot] else {
            return Final::Unheld;
        };
        match handle.status() {
            TaskStatus::Pending => Final::Pending,
            TaskStatus::Faulted => Final::Faulted,
            TaskStatus::Canceled => {
                let token = on_task!(handle, task => task
                    .outcome()
                    .and_then(|outcome| outcome.err())
                    .map(|error| self.token_index(error.cancellation_token())));
                Final::Canceled(token.flatten())
            }
            TaskStatus::Succeeded => Final::Succeeded(match handle {
                Handle::Int(task) => {
                    Value::Int(task.outcome().and_then(Result::ok).unwrap_or(i64::MIN))
                }
                Handle::List(task) => {
                    Value::List(task.outcome().and_then(Result::ok).unwrap_or_default())
                }
                Handle::Unit(_) => Value::Unit,
                Handle::Any(task) => match task.outcome() {
                    Some(Ok(winner)) => self.winner(slot, &winner),
                    _ => Value::Winner(usize::MAX),
                },
            }),
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.slots
            .iter()
            .map(|handle| {
                handle
                    .as_ref()
                    .map(|handle| (handle.is_completed(), handle.registered_continuations()))
            })
            .collect()
    }

    fn spawn(&mut self, body: usize) {
        let plan = &self.plan().bodies[body];
        let steps = plan
            .steps
            .iter()
            .map(|step| match *step {
                Step::Await { slot, captured } => RtStep::Await(self.held(slot).clone(), captured),
                Step::Check { cts } => RtStep::Check(self.cts[cts].token()),
                Step::Yield => RtStep::Yield,
                Step::Fail(code) => RtStep::Fail(code),
                Step::Panic(code) => RtStep::Panic(code),
                Step::ReturnSmall(value) => RtStep::ReturnSmall(value),
            })
            .collect();
        let future = Counted {
            inner: Some(Box::pin(run_body(steps, body_base(body)))),
            shared: self.shared.clone(),
        };
        let task = if plan.eager {
            taskcheck::start(future)
        } else {
            self.pool.spawn(future)
        };
        self.push_slot(Handle::Int(task));
    }

    fn complete(&mut self, source: usize, completion: Completion) {
        let source = self.sources[source]
            .as_ref()
            .expect("the plan only completes live sources");
        let won = match completion {
            Completion::Result(value) => source.try_set_result(value),
            Completion::Fault(code) => source.try_set_exception(Planted(code)),
            Completion::Cancel => source.try_set_canceled(),
        };
        self.results.push(OpResult::TrySet(won));
    }

    fn advance(&mut self, ms: u64) {
        let fired = self
            .clock
            .advance(Duration::from_millis(ms))
            .unwrap_or(usize::MAX);
        self.results.push(OpResult::Advance(fired));
    }

    fn op(&mut self, index: usize, op: &PlanOp) -> Result<(), Problem> {
        match op {
            PlanOp::NewSource { .. } => {
                let source = TaskCompletionSource::new();
                self.push_slot(Handle::Int(source.task()));
                self.sources.push(Some(source));
            }
            PlanOp::Spawn { body } => self.spawn(*body),
            PlanOp::Complete { source, completion } => self.complete(*source, *completion),
            PlanOp::DropSource { source } => drop(self.sources[*source].take()),
            PlanOp::NewCts { parents, .. } => {
                let source = if parents.is_empty() {
                    CancellationTokenSource::with_clock(self.clock.clone())
                } else {
                    let tokens: Vec<CancellationToken> =
                        parents.iter().map(|&p| self.cts[p].token()).collect();
                    CancellationTokenSource::linked_with_clock(&tokens, self.clock.clone())
                };
                self.cts.push(source);
            }
            PlanOp::Register {
                cts,
                callback,
                panics,
            } => {
                let token = self.cts[*cts].token();
                let shared = self.shared.clone();
                let (callback, panics) = (*callback, *panics);
                let registered = panic::catch_unwind(AssertUnwindSafe(|| {
                    token.register(move || {
                        shared
                            .log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(callback);
                        if panics {
                            panic!("{PLANTED_CALLBACK_PANIC} {callback}");
                        }
                    })
                }));
                match registered {
                    Ok(registration) => {
                        self.results
                            .push(OpResult::Register(Ok(registration.is_registered())));
                        self.registrations.push(registration);
                    }
                    Err(_) => self.results.push(OpResult::Register(Err(()))),
                }
            }
            PlanOp::Cancel { cts } => {
                let failures = match self.cts[*cts].cancel() {
                    Ok(()) => 0,
                    Err(error) if !error.failures().is_empty() => error.failures().len(),
                    Err(_) => usize::MAX,
                };
                self.results.push(OpResult::Cancel(failures));
            }
            PlanOp::CancelAfter { cts, ms } => {
                let _ = self.cts[*cts].cancel_after(Duration::from_millis(*ms));
            }
            PlanOp::Delay { ms, cts, .. } => {
                let token = cts.map_or_else(CancellationToken::none, |c| self.cts[c].token());
                let task = self.clock.delay(Duration::from_millis(*ms), &token);
                self.push_slot(Handle::Unit(task));
            }
            PlanOp::Advance { ms } => self.advance(*ms),
            PlanOp::WhenAll { inputs, .. } => {
                let tasks: Vec<Task<i64>> = inputs.iter().map(|&i| self.int(i)).collect();
                self.push_slot(Handle::List(when_all(tasks)));
            }
            PlanOp::WhenAny { slot: None, .. } => {
                let empty = when_any(Vec::<Task<i64>>::new()).is_err();
                self.results.push(OpResult::WhenAnyEmpty(empty));
            }
            PlanOp::WhenAny {
                slot: Some(slot),
                inputs,
            } => {
                let tasks: Vec<Task<i64>> = inputs.iter().map(|&i| self.int(i)).collect();
                let ids = tasks
                    .iter()
                    .map(Task::id)
                    .zip(inputs.iter().copied())
                    .collect();
                match when_any(tasks) {
                    Ok(any) => {
                        self.push_slot(Handle::Any(any));
                        self.any_inputs[*slot] = ids;
                    }
                    Err(error) => {
                        return Err(Problem::Panicked {
                            message: format!("when_any refused {} input(s): {error}", inputs.len()),
                        })
                    }
                }
            }
            PlanOp::Wait { slot } => {
                if self.expectation.waits[index] {
                    let outcome = self.wait(*slot);
                    self.results.push(OpResult::Wait(outcome));
                }
            }
            PlanOp::Detach { slot } => {
                if let Some(handle) = self.slots[*slot].take() {
                    on_task!(handle, task => task.detach());
                }
            }
            PlanOp::Quiesce => {
                let allowed = &self.expectation.snapshots;
                if !eventually(|| allowed.contains(&self.snapshot())) {
                    return Err(Problem::Quiescence {
                        last: self.snapshot(),
                    });
                }
            }
            PlanOp::Cleanup => {
                for source in 0..self.sources.len() {
                    if self.sources[source].is_some() {
                        self.complete(source, Completion::Result(cleanup_value(source)));
                    }
                }
                self.advance(CLEANUP_ADVANCE_MILLIS);
            }
            PlanOp::Finish => {
                for handle in self.slots.iter().flatten() {
                    handle.wait_done();
                }
                // Detached tasks too: the pool is shut down next, and a continuation posted
                // to it from outside after that is refused (the task is abandoned).
                let bodies = self.plan().bodies.len();
                eventually(|| self.shared.drops.load(Ordering::SeqCst) >= bodies);
            }
        }
        Ok(())
    }

    /// Runs every op; returns the record without the reports (they come after the drops).
    fn run(&mut self) -> Result<Record, Problem> {
        let plan = self.plan();
        for (index, op) in plan.ops.iter().enumerate() {
            self.op(index, op)?;
        }
        let finals: Vec<Final> = (0..self.slots.len())
            .map(|slot| self.final_of(slot))
            .collect();
        for (slot, handle) in self.slots.iter().enumerate() {
            let Some(handle) = handle else { continue };
            if !handle.is_completed() {
                return Err(Problem::NeverCompleted { slot });
            }
            let count = handle.registered_continuations();
            if count != 0 {
                return Err(Problem::LeakedContinuations { slot, count });
            }
        }
        Ok(Record {
            results: std::mem::take(&mut self.results),
            callbacks: self
                .shared
                .log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            finals,
            reports: Vec::new(),
        })
    }

    /// Drops every handle, source and registration, then shuts the pool down.
    fn tear_down(&mut self) {
        self.slots.clear();
        self.registrations.clear();
        self.cts.clear();
        self.sources.clear();
        self.pool.shutdown();
    }
}
