#![cfg(shuttle)]
//! # One task, many awaiters, racing completers
//!
//! A `TaskCompletionSource` is how code that is not `async` (a callback, a socket reader,
//! a timer) completes a task by hand. These models put one under load, against the real
//! runtime, under shuttle's random and PCT schedulers.
//!
//! ## The scenarios
//!
//! [`racing_completers_have_one_winner`]: a source's task is awaited by four tasks on a
//! two-worker pool and by the main thread (a blocking `.wait()`). Three threads race to
//! complete it, one with `try_set_result(42)`, one with `try_set_exception("disk on fire")`,
//! one with `try_set_canceled()`. Then:
//!
//! 1. exactly one `try_set_*` returns true;
//! 2. every awaiter, whenever it registered (before the race, during it, after it), sees the
//!    winner's outcome: all six see the same thing;
//! 3. a loser returns only once the task is observably complete: right after its
//!    `try_set_*` returns false, `is_completed()` is true. (A loser that returned earlier
//!    would let its caller believe "someone else is completing it" while nothing is
//!    complete yet.)
//!
//! [`continuations_run_in_registration_order`]: four tasks on a single-thread context "ui"
//! await the same source, registering in a known order (0, 1, 2, 3). Two threads and a job
//! on the ui itself race to complete it. The four continuations must run in registration
//! order, whichever completer wins: when a thread wins, all four are posted to the ui in
//! order; when the ui job wins, the first may run inline on the ui thread, and the others
//! are queued behind it.
//!
//! [`run_continuations_asynchronously_never_runs_inline`]: the source is created with
//! `RUN_CONTINUATIONS_ASYNCHRONOUSLY`. Three pool tasks await it; two pool tasks and a plain
//! thread race to complete it. Each completer records its thread id while it is inside
//! `try_set_*`; each awaiter records the thread it resumes on. No continuation may run on a
//! thread while that thread is inside a `try_set_*`: every continuation is queued. Without
//! the option the first continuation may run inline on a completing pool worker, and the
//! broken twin shows shuttle finding exactly that.
//!
//! ## Breaking it on purpose
//!
//! Each property has a twin with a deliberate bug switched on, which shuttle must catch:
//!
//! - `Knob::RacyComplete`: the completion checks "already complete?" and sets the outcome
//!   under two separate locks, so two completers can both win. Caught by property 1.
//! - `Knob::RacyRegister`: an awaiter checks "already complete?" outside the lock that
//!   registers it, so a completion in between takes the waiters without it: a lost wakeup.
//!   That awaiter never resumes, the main thread waits for it forever, and shuttle reports
//!   the deadlock.
//!
//! Every scenario ends by checking that every task it created reached a terminal state
//! (shuttle silently drops threads still blocked when the model's main thread returns), and
//! shuts its pool or context down.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models \
//!     --target-dir target/shuttle --test shuttle_task -- --nocapture
//! ```

use shuttle::sync::{Arc, Mutex};
use shuttle::thread::{self, ThreadId};
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    SingleThreadContext, Task, TaskCompletionSource, TaskCreationOptions, TaskError, TaskStatus,
    ThreadPool,
};
use taskcheck_models::{shuttle_expect_failure, shuttle_pct, shuttle_random, Strategy};

/// Executions per strategy.
const ITERATIONS: usize = 1_000;
/// PCT's bug depth: how many ordering constraints a schedule may force.
const PCT_DEPTH: usize = 3;

// ---------------------------------------------------------------------------------------
// Bookkeeping.

/// Every task a scenario creates, by name, so its end can check that none is left pending.
#[derive(Default)]
struct Ledger(Mutex<Vec<(String, Box<dyn Fn() -> TaskStatus + Send>)>>);

impl Ledger {
    fn track<T: Send + 'static>(&self, name: String, task: &Task<T>) {
        let task = task.clone();
        self.0
            .lock()
            .unwrap()
            .push((name, Box::new(move || task.status())));
    }

    fn assert_all_terminal(&self) {
        let tasks = self.0.lock().unwrap();
        let pending: Vec<&str> = tasks
            .iter()
            .filter(|(_, status)| status() == TaskStatus::Pending)
            .map(|(name, _)| name.as_str())
            .collect();
        assert!(
            pending.is_empty(),
            "every task must reach a terminal state before the scenario ends, but these are \
             still pending: {pending:?}"
        );
    }
}

/// An outcome as an awaiter saw it, comparable across awaiters.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Value(u64),
    Faulted(String),
    Canceled,
}

impl From<Result<u64, TaskError>> for Seen {
    fn from(outcome: Result<u64, TaskError>) -> Self {
        match outcome {
            Ok(value) => Seen::Value(value),
            Err(error) if error.is_canceled() => Seen::Canceled,
            Err(error) => Seen::Faulted(
                error
                    .errors()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

/// The three racing completions: what each tries, and what its win would look like.
#[derive(Clone, Copy, Debug)]
enum Completer {
    Result,
    Exception,
    Cancel,
}

impl Completer {
    const ALL: [Completer; 3] = [Completer::Result, Completer::Exception, Completer::Cancel];

    /// Tries to complete `source`. A loser checks, before anything else, that the task is
    /// already observably complete. Returns the outcome this completer set, if it won.
    fn race(self, source: &TaskCompletionSource<u64>) -> Option<Seen> {
        let (won, outcome) = match self {
            Completer::Result => (source.try_set_result(42), Seen::Value(42)),
            Completer::Exception => (
                source.try_set_exception(std::io::Error::other("disk on fire")),
                Seen::Faulted("disk on fire".to_owned()),
            ),
            Completer::Cancel => (source.try_set_canceled(), Seen::Canceled),
        };
        if !won {
            assert!(
                source.task().is_completed(),
                "a losing try_set_* ({self:?}) returned before the task was observably complete"
            );
        }
        won.then_some(outcome)
    }
}

/// The one outcome that won among `claims`; panics unless exactly one completer won.
fn the_winner(claims: Vec<Option<Seen>>) -> Seen {
    let winners: Vec<Seen> = claims.into_iter().flatten().collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one try_set_* must win the race, but these won: {winners:?}"
    );
    winners.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. Many awaiters, three racing completers, exactly one winner.

fn one_winner_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let pool = ThreadPool::with_name("pool", 2);
        let ledger = Ledger::default();
        let source = Arc::new(TaskCompletionSource::<u64>::new());
        ledger.track("the source's task".to_owned(), &source.task());

        // Four awaiters on the pool. Each may register before, during or after the race.
        let awaiters: Vec<Task<Seen>> = (0..4)
            .map(|i| {
                let task = source.task();
                let awaiter = pool.spawn(async move { Ok::<_, TaskError>(Seen::from(task.await)) });
                ledger.track(format!("awaiter {i} (pool)"), &awaiter);
                awaiter
            })
            .collect();

        // Three threads race to complete it.
        let racers: Vec<_> = Completer::ALL
            .into_iter()
            .map(|completer| {
                let source = source.clone();
                thread::spawn(move || completer.race(&source))
            })
            .collect();

        // The main thread blocks on it too (no context here: a plain wait).
        let main_saw = Seen::from(source.task().wait().map_err(|error| match error {
            taskcheck::WaitError::Task(error) => error,
            other => panic!("a plain thread's wait cannot deadlock: {other}"),
        }));

        let winner = the_winner(racers.into_iter().map(|r| r.join().unwrap()).collect());
        assert_eq!(main_saw, winner, "the main thread saw another outcome");
        for (i, awaiter) in awaiters.iter().enumerate() {
            assert_eq!(
                awaiter.wait().unwrap(),
                winner,
                "awaiter {i} saw another outcome than the winner's"
            );
        }
        // One more awaiter, long after the race: same outcome, at once.
        assert_eq!(Seen::from(source.task().outcome().unwrap()), winner);

        pool.shutdown();
        ledger.assert_all_terminal();
    }
}

#[test]
fn racing_completers_have_one_winner() {
    let name = "shuttle_task::racing_completers_have_one_winner";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, one_winner_story());
    shuttle_random(name, ITERATIONS, one_winner_story());
}

/// The deliberate bug: check and set under two locks. Two completers can both win.
#[test]
fn racy_complete_is_caught() {
    let story = one_winner_story();
    shuttle_expect_failure(
        "shuttle_task::racy_complete_is_caught",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "exactly one try_set_* must win",
        move || with_knob(Knob::RacyComplete, &story),
    );
}

/// The deliberate bug: a registration racing the completion is lost, its awaiter never
/// resumes, and whoever waits for that awaiter hangs.
#[test]
fn racy_register_is_caught() {
    let story = one_winner_story();
    let failure = shuttle_expect_failure(
        "shuttle_task::racy_register_is_caught",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "deadlock",
        move || with_knob(Knob::RacyRegister, &story),
    );
    assert!(
        failure.starts_with("deadlock! blocked tasks: ["),
        "{failure}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Continuations run in registration order.

fn registration_order_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let ui = SingleThreadContext::new("ui");
        let ledger = Ledger::default();
        let source = Arc::new(TaskCompletionSource::<u64>::new());
        ledger.track("the source's task".to_owned(), &source.task());
        let order = Arc::new(Mutex::new(Vec::new()));

        // Four awaiters on the ui. Pumping the ui once runs them in spawn order, and each
        // suspends on the source: registered 0, 1, 2, 3.
        let awaiters: Vec<Task<Seen>> = (0..4)
            .map(|i| {
                let (task, order) = (source.task(), order.clone());
                let awaiter = ui.spawn(async move {
                    let seen = Seen::from(task.await);
                    order.lock().unwrap().push(i);
                    Ok::<_, TaskError>(seen)
                });
                ledger.track(format!("awaiter {i} (ui)"), &awaiter);
                awaiter
            })
            .collect();
        assert_eq!(ui.run_until_idle().unwrap(), 4);
        assert!(awaiters.iter().all(|awaiter| !awaiter.is_completed()));

        // Two threads and a job on the ui race to complete it.
        let ui_claim = Arc::new(Mutex::new(None));
        ui.post({
            let (source, ui_claim) = (source.clone(), ui_claim.clone());
            move || *ui_claim.lock().unwrap() = Some(Completer::Cancel.race(&source))
        })
        .unwrap();
        let racers: Vec<_> = [Completer::Result, Completer::Exception]
            .into_iter()
            .map(|completer| {
                let source = source.clone();
                thread::spawn(move || completer.race(&source))
            })
            .collect();

        // The ui's message loop runs until every awaiter has resumed.
        let seen = ui
            .block_on(async move {
                let mut seen = Vec::new();
                for awaiter in awaiters {
                    seen.push(awaiter.await?);
                }
                Ok(seen)
            })
            .unwrap();

        let mut claims: Vec<Option<Seen>> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        claims.push(ui_claim.lock().unwrap().take().expect("the ui job ran"));
        let winner = the_winner(claims);
        assert!(seen.iter().all(|s| *s == winner), "{seen:?} vs {winner:?}");
        assert_eq!(
            *order.lock().unwrap(),
            [0, 1, 2, 3],
            "continuations must run in registration order"
        );

        ui.shutdown();
        ledger.assert_all_terminal();
    }
}

#[test]
fn continuations_run_in_registration_order() {
    let name = "shuttle_task::continuations_run_in_registration_order";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, registration_order_story());
    shuttle_random(name, ITERATIONS, registration_order_story());
}

// ---------------------------------------------------------------------------------------
// 3. RUN_CONTINUATIONS_ASYNCHRONOUSLY: the completing thread never runs a continuation.

/// Where each awaiter resumed, and whether that thread was inside a `try_set_*` then.
#[derive(Clone, Debug)]
struct Resumed {
    thread: ThreadId,
    inside_a_completion: bool,
}

fn asynchronous_continuations_story(
    options: TaskCreationOptions,
) -> impl Fn() + Send + Sync + 'static {
    move || {
        let pool = ThreadPool::with_name("pool", 2);
        let ledger = Ledger::default();
        let source = Arc::new(TaskCompletionSource::<u64>::with_options(options));
        ledger.track("the source's task".to_owned(), &source.task());
        // The threads currently inside a try_set_*.
        let completing: Arc<Mutex<Vec<ThreadId>>> = Arc::new(Mutex::new(Vec::new()));

        let awaiters: Vec<Task<Resumed>> = (0..3)
            .map(|i| {
                let (task, completing) = (source.task(), completing.clone());
                let awaiter = pool.spawn(async move {
                    task.await?;
                    let thread = thread::current().id();
                    let inside_a_completion = completing.lock().unwrap().contains(&thread);
                    Ok::<_, TaskError>(Resumed {
                        thread,
                        inside_a_completion,
                    })
                });
                ledger.track(format!("awaiter {i} (pool)"), &awaiter);
                awaiter
            })
            .collect();

        // Each completer notes its thread while it is inside try_set_result.
        let complete = {
            let (source, completing) = (source.clone(), completing.clone());
            move |value: u64| {
                let me = thread::current().id();
                completing.lock().unwrap().push(me);
                let won = source.try_set_result(value);
                completing.lock().unwrap().retain(|thread| *thread != me);
                assert!(won || source.task().is_completed());
                Ok::<_, TaskError>((won, me))
            }
        };
        let on_pool: Vec<Task<(bool, ThreadId)>> = (1..=2)
            .map(|value| {
                let complete = complete.clone();
                let completer = pool.spawn(async move { complete(value) });
                ledger.track(format!("completer {value} (pool)"), &completer);
                completer
            })
            .collect();
        let on_thread = thread::spawn(move || complete(3).unwrap());

        let mut completers = vec![on_thread.join().unwrap()];
        completers.extend(on_pool.iter().map(|completer| completer.wait().unwrap()));
        assert_eq!(completers.iter().filter(|(won, _)| *won).count(), 1);
        for awaiter in &awaiters {
            let resumed = awaiter.wait().unwrap();
            assert!(
                !resumed.inside_a_completion,
                "a continuation ran inline on the completing thread {:?} (completers: {completers:?})",
                resumed.thread
            );
        }

        pool.shutdown();
        ledger.assert_all_terminal();
    }
}

#[test]
fn run_continuations_asynchronously_never_runs_inline() {
    let name = "shuttle_task::run_continuations_asynchronously_never_runs_inline";
    let options = TaskCreationOptions::RUN_CONTINUATIONS_ASYNCHRONOUSLY;
    shuttle_pct(
        name,
        ITERATIONS,
        PCT_DEPTH,
        asynchronous_continuations_story(options),
    );
    shuttle_random(name, ITERATIONS, asynchronous_continuations_story(options));
}

/// Without the option, the first continuation may run inline on a completing pool worker
/// (allowed by default, as in .NET): the check above sees it.
#[test]
fn without_the_option_a_continuation_runs_inline() {
    shuttle_expect_failure(
        "shuttle_task::without_the_option_a_continuation_runs_inline",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "a continuation ran inline on the completing thread",
        asynchronous_continuations_story(TaskCreationOptions::NONE),
    );
}
