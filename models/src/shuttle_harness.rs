//! Running shuttle models: correct scenarios with [`shuttle_random`], [`shuttle_pct`],
//! [`shuttle_dfs`] and [`shuttle_replay`]; bug models with [`shuttle_expect_failure`].
//!
//! shuttle runs a scenario under a scheduler it controls, one schedule per execution: random,
//! PCT (random with a bounded number of priority changes, good at shallow ordering bugs),
//! DFS (exhaustive, for small scenarios), or the replay of one recorded schedule.
//!
//! # Why the harness records the schedule itself
//!
//! A failure must leave a way to reproduce it. shuttle 0.9 prints the failing schedule to
//! stderr, but the panic that fails the test carries only the model's own message, so a
//! caller that catches the panic cannot get at the schedule. The harness therefore wraps the
//! scheduler in [`Recording`], which writes down every decision exactly as shuttle's
//! execution does, and encodes the failing execution's schedule with shuttle's own
//! serializer: the string is the one `shuttle::replay` (and [`shuttle_replay`]) reads.
//!
//! # Why a bug model runs quietly
//!
//! An expected failure is a panic on purpose; the default panic hook would print it as if
//! something went wrong. Swapping the process-wide hook while one test runs races with the
//! tests running on other threads, so the harness installs one filtering hook, once, and
//! silences only the thread that is running an expected failure (shuttle runs all of a
//! scenario's tasks on the calling thread).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::Instant;

use shuttle::scheduler::{
    DfsScheduler, PctScheduler, RandomScheduler, ReplayScheduler, Schedule, Scheduler, Task, TaskId,
};
use shuttle::{Config, FailurePersistence, Runner};
use shuttle_engine::scheduler::serialization::{deserialize_schedule, serialize_schedule};

use crate::report::{self, Expectation, Record, Tool, Verdict};
use crate::{first_lines, millis, panic_message};

/// How many lines of the model's panic message a summary shows.
const REASON_LINES: usize = 4;

/// How shuttle chooses the schedules of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// This many executions, each under a random schedule.
    Random(usize),
    /// This many executions under PCT, with `depth` priority-change points per execution (the
    /// bug depth: how many ordering constraints the bug needs).
    Pct {
        /// How many executions.
        iterations: usize,
        /// Priority-change points per execution.
        depth: usize,
    },
    /// Every schedule, depth first, or at most this many.
    Dfs(Option<usize>),
    /// One execution, under a schedule string a failure printed (see [`shuttle_replay`]).
    Replay(String),
}

impl Strategy {
    /// The label added to the model's name in the report, e.g. `shuttle_deadlock::story [pct]`.
    fn label(&self) -> &'static str {
        match self {
            Strategy::Random(_) => "random",
            Strategy::Pct { .. } => "pct",
            Strategy::Dfs(_) => "dfs",
            Strategy::Replay(_) => "replay",
        }
    }
}

/// Checks a correct scenario under `iterations` random schedules.
pub fn shuttle_random<F>(name: &str, iterations: usize, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    check(name, Strategy::Random(iterations), f);
}

/// Checks a correct scenario under `iterations` PCT schedules of bug depth `depth`.
pub fn shuttle_pct<F>(name: &str, iterations: usize, depth: usize, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    check(name, Strategy::Pct { iterations, depth }, f);
}

/// Checks a correct scenario under every schedule (or the first `max_iterations`), depth
/// first. Only for small scenarios: the number of schedules grows exponentially.
pub fn shuttle_dfs<F>(name: &str, max_iterations: Option<usize>, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    check(name, Strategy::Dfs(max_iterations), f);
}

/// Runs a scenario once, under a recorded schedule: the string a failure printed.
///
/// This is how a failure is debugged: the same interleaving, every time, in one execution
/// (the summary line says `fail`, with the same message), ready for prints or a debugger.
///
/// A schedule names the task to run at each scheduling point of the code it was recorded
/// from, and ends where that execution ended: a failing schedule ends at the failure. Run
/// against changed code, it may stop fitting (shuttle's replay scheduler panics, and the
/// summary says the schedule does not fit), or it may fit and pass without checking what
/// used to fail. So a replay is not a regression test: keep the bug model's scenario under
/// [`shuttle_pct`] or [`shuttle_dfs`] for that. Schedule strings are also specific to the
/// shuttle version (pinned in `Cargo.lock`).
pub fn shuttle_replay<F>(name: &str, schedule: &str, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    check(name, Strategy::Replay(schedule.to_owned()), f);
}

/// Checks a bug model: shuttle must catch it under `strategy`, with a panic message that
/// contains `expected` (`"deadlock"` for shuttle's deadlock report, or the message of the
/// assertion the bug breaks).
///
/// Returns the failure as shuttle would print it: the panic message, then
///
/// ```text
/// failing schedule:
/// "
/// 91021c…
/// "
/// pass that string to `shuttle::replay` to replay the failure
/// ```
///
/// so the caller can show it or replay it ([`schedule_from_failure`] extracts the string;
/// [`Strategy::Replay`] replays it as a bug model).
///
/// # Panics
///
/// If the model passes every schedule ("model X was expected to be caught but passed N
/// schedules: the property it breaks is not checked"), or fails with another message.
pub fn shuttle_expect_failure<F>(name: &str, strategy: Strategy, expected: &str, f: F) -> String
where
    F: Fn() + Send + Sync + 'static,
{
    let model = format!("{name} [{}]", strategy.label());
    let mut config = Config::new();
    // The harness reports the schedule itself; shuttle printing it too would only add noise.
    config.failure_persistence = FailurePersistence::None;
    let started = Instant::now();
    let run = quietly(|| run_strategy(&strategy, config, f));
    let mut record = Record {
        tool: Tool::Shuttle,
        model,
        expect: Expectation::Caught,
        result: Verdict::Missed,
        schedules: run.executions,
        ms: millis(started.elapsed()),
        detail: None,
    };

    let Some(payload) = run.panic else {
        record.detail = Some("every schedule passed".to_owned());
        report::finish(&record);
        fail_test(format!(
            "model {} was expected to be caught but passed {} schedules: \
             the property it breaks is not checked",
            record.model, run.executions
        ));
    };
    let message = panic_message(payload.as_ref());
    let failure = format!(
        "{message}\nfailing schedule:\n\"\n{}\n\"\npass that string to `shuttle::replay` to replay the failure",
        run.schedule
    );
    if !message.contains(expected) {
        record.detail = Some(format!("failed without {expected:?}"));
        report::finish(&record);
        fail_test(format!(
            "model {} failed, but its panic message does not contain {expected:?}:\n{failure}",
            record.model
        ));
    }
    record.result = Verdict::Caught;
    record.detail = Some(format!(
        "{}\nschedule: \"{}\"",
        first_lines(&message, REASON_LINES),
        run.schedule
    ));
    report::finish(&record);
    failure
}

/// The schedule string in a shuttle failure message: the text between the quotes that
/// follow `failing schedule:`, without the line breaks shuttle wraps it with. Works on what
/// [`shuttle_expect_failure`] returns and on what shuttle 0.9 prints to stderr.
pub fn schedule_from_failure(msg: &str) -> Option<String> {
    let (_, after) = msg.split_once("failing schedule:")?;
    let (_, quoted) = after.split_once('"')?;
    let (schedule, _) = quoted.split_once('"')?;
    let schedule: String = schedule.chars().filter(|c| !c.is_whitespace()).collect();
    let is_hex = !schedule.is_empty() && schedule.chars().all(|c| c.is_ascii_hexdigit());
    is_hex.then_some(schedule)
}

/// Runs a scenario that must pass and reports it; on a failure, reports the schedule that
/// reproduces it and lets the panic fail the test.
fn check<F>(name: &str, strategy: Strategy, f: F)
where
    F: Fn() + Send + Sync + 'static,
{
    let model = format!("{name} [{}]", strategy.label());
    let started = Instant::now();
    let run = run_strategy(&strategy, Config::new(), f);
    let detail = run.panic.as_ref().map(|payload| {
        let message = panic_message(payload.as_ref());
        let advice = if is_replay_mismatch(&message) {
            "the schedule does not fit this code: a schedule replays only the code it was \
             recorded from, up to where that execution ended"
                .to_owned()
        } else {
            format!(
                "replay: taskcheck_models::shuttle_replay({name:?}, \"{}\", …)",
                run.schedule
            )
        };
        format!(
            "{}\nschedule: \"{}\"\n{advice}",
            first_lines(&message, REASON_LINES),
            run.schedule
        )
    });
    report::finish(&Record {
        tool: Tool::Shuttle,
        model,
        expect: Expectation::Pass,
        result: if run.panic.is_some() {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
        schedules: run.executions,
        ms: millis(started.elapsed()),
        detail,
    });
    if let Some(payload) = run.panic {
        panic::resume_unwind(payload);
    }
}

/// Whether a panic is shuttle's replay scheduler saying that the schedule and the code
/// disagree.
fn is_replay_mismatch(message: &str) -> bool {
    message.contains("schedule ended early") || message.contains("scheduled task is not runnable")
}

/// Fails the calling test with `message`: printed (libtest shows it with the test's output)
/// and carried as the panic payload, but without going through the panic hook, because
/// shuttle's hook would first print this thread's last schedule as if it had failed.
fn fail_test(message: String) -> ! {
    eprintln!("{message}");
    panic::resume_unwind(Box::new(message))
}

/// What one shuttle run did.
struct Run {
    /// How many executions shuttle ran.
    executions: u64,
    /// The failing execution's panic, if one failed (shuttle stops at the first).
    panic: Option<Box<dyn Any + Send>>,
    /// The schedule of the last execution: the failing one, if one failed.
    schedule: String,
}

fn run_strategy<F>(strategy: &Strategy, config: Config, f: F) -> Run
where
    F: Fn() + Send + Sync + 'static,
{
    match strategy {
        Strategy::Random(iterations) => run(RandomScheduler::new(*iterations), config, f),
        Strategy::Pct { iterations, depth } => {
            run(PctScheduler::new(*depth, *iterations), config, f)
        }
        Strategy::Dfs(max_iterations) => run(DfsScheduler::new(*max_iterations, false), config, f),
        Strategy::Replay(encoded) => {
            let schedule = deserialize_schedule(encoded)
                .unwrap_or_else(|| panic!("{encoded:?} is not a shuttle schedule string"));
            run(ReplayScheduler::new_from_schedule(schedule), config, f)
        }
    }
}

fn run<S, F>(scheduler: S, config: Config, f: F) -> Run
where
    S: Scheduler + 'static,
    F: Fn() + Send + Sync + 'static,
{
    let log = Rc::new(RefCell::new(Log::default()));
    let recording = Recording {
        inner: scheduler,
        log: Rc::clone(&log),
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        Runner::new(recording, config).run(f);
    }));
    let log = log.borrow();
    Run {
        executions: log.executions,
        panic: outcome.err(),
        schedule: serialize_schedule(&log.schedule).replace('\n', ""),
    }
}

/// What [`Recording`] writes down.
#[derive(Default)]
struct Log {
    /// Executions started so far.
    executions: u64,
    /// The current execution's schedule, step by step.
    schedule: Schedule,
}

/// A scheduler that passes every decision through to `inner` and writes it down, the way
/// shuttle's execution records its current schedule: the schedule `new_execution` starts
/// from, then a task step for every task chosen and a random step for every random value.
struct Recording<S> {
    inner: S,
    log: Rc<RefCell<Log>>,
}

impl<S: Scheduler> Scheduler for Recording<S> {
    fn new_execution(&mut self) -> Option<Schedule> {
        let schedule = self.inner.new_execution()?;
        let mut log = self.log.borrow_mut();
        log.executions += 1;
        log.schedule = schedule.clone();
        Some(schedule)
    }

    fn next_task(
        &mut self,
        runnable_tasks: &[&Task],
        current_task: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        let next = self
            .inner
            .next_task(runnable_tasks, current_task, is_yielding);
        if let Some(task) = next {
            self.log.borrow_mut().schedule.push_task(task);
        }
        next
    }

    fn next_u64(&mut self) -> u64 {
        self.log.borrow_mut().schedule.push_random();
        self.inner.next_u64()
    }
}

thread_local! {
    /// Whether this thread is running an expected failure, whose panics are not news.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's panics kept out of the panic hook (see the module docs).
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // shuttle installs its own hook, once, wrapping whichever hook is current. Let it do
        // so first, so that ours wraps shuttle's and silences it too.
        shuttle::check_dfs(|| {}, Some(1));
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                previous(info);
            }
        }));
    });

    /// Clears the flag however `f` ends.
    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            QUIET.set(false);
        }
    }

    QUIET.set(true);
    let _loud = Loud;
    f()
}
