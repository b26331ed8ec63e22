#![cfg(shuttle)]
//! # The `.Result` deadlock, at scale
//!
//! This is the most famous bug in .NET async code, replayed against taskcheck's real runtime
//! under shuttle's schedulers (random, PCT and bounded DFS).
//!
//! ## The program
//!
//! A desktop application has a UI thread. It owns a single-thread context named `"ui"` (a
//! WinForms/WPF `SynchronizationContext`): the only thread that ever runs the ui's queue
//! is the ui thread itself. There is also a thread pool with two workers.
//!
//! A button's click handler runs on the ui thread and calls a chain of library methods,
//! three `async` methods deep:
//!
//! ```text
//! on_click (ui thread)
//!   └─ load_dashboard()            // async: starts load_profile, fetches news on the pool
//!        └─ load_profile()         // async: starts fetch_user, fetches settings on the pool
//!             └─ fetch_user()      // async: awaits an HTTP call that runs on the pool
//! ```
//!
//! Each method is started *eagerly* with `taskcheck::start`, exactly like calling an `async`
//! method in C#: it runs on the caller's thread until its first `await` that has to wait.
//! Each one awaits work spawned on the pool. The HTTP job on the pool waits for the server's
//! response, which comes from a thread of its own (the "network"); the server answers once
//! the click handler has sent the request. Two more pool jobs run alongside as noise: one
//! spins a little (`Thread.SpinWait`), one yields twice (`await Task.Yield()`).
//!
//! Then the click handler does what so many click handlers do: instead of `await`ing the
//! dashboard it blocks on it, `load_dashboard().Result`, written here as `.wait()`.
//!
//! Why a server thread: if every piece of work had already finished by the time it was
//! awaited, no `await` would suspend, nothing would capture the ui, and there would be no
//! deadlock, in .NET or here (the `no_false_alarm` model shows that case too). A response
//! that cannot arrive before the chain has been called makes the bug happen in every
//! schedule, which is what lets the models say "in every schedule".
//!
//! ## Why it deadlocks
//!
//! 1. The ui thread calls `load_dashboard`, which calls `load_profile`, which calls
//!    `fetch_user`. Each `await` finds its work still running on the pool, so each method
//!    suspends, and each `await` *captures* the current context: the ui. "When this is done,
//!    post the rest of me back to the ui thread."
//! 2. The ui thread reaches `.wait()` and blocks.
//! 3. The response arrives and the HTTP job on the pool finishes. `fetch_user`'s
//!    continuation is posted to the ui queue, as it asked. (Steps 2 and 3 can come in either
//!    order; shuttle tries both.)
//! 4. Nobody will ever run it: the only thread that runs the ui queue is blocked in step 2,
//!    waiting for `load_dashboard`, which waits for `load_profile`, which waits for
//!    `fetch_user`, which waits in the ui queue. In .NET the application freezes.
//!
//! taskcheck's default wait mode, `WaitMode::FailFast`, follows that chain every time
//! something is posted to the ui while its thread is blocked. As soon as a link of the chain
//! is queued on the ui, the deadlock is certain and `.wait()` returns
//! `WaitError::WouldDeadlock`, naming the context ("ui"), the blocked thread, the task it
//! waits for and the task stuck in the queue. The models below check, in every schedule
//! shuttle tries:
//!
//! - [`fail_fast_reports_the_deadlock`]: the report comes, whatever the interleaving, both
//!   from `ui.enter(..)` (the handler runs on the ui thread) and from a handler run as a job
//!   of the ui's message loop (`ui.block_on`). Afterwards the message loop pumps again and
//!   the dashboard completes: awaiting instead of blocking is one fix.
//! - [`configure_await_false_fixes_it`]: the other fix, in the library. Every `await` in the
//!   chain uses `configure_await(false)` ("I don't need the ui to continue"), so the
//!   continuations run on the pool and `.wait()` on the ui thread returns 111.
//! - [`no_false_alarm`]: blocking the ui thread on work that never needs the ui (a plain
//!   pool job, the fixed chain waiting on the network) is never reported. Nor is the
//!   unfixed chain when its work raced ahead and nothing suspended: then the wait returns
//!   111; otherwise the deadlock is reported (both outcomes occur, and are counted).
//! - [`late_certain_deadlock_is_still_reported`]: the handler sends the request right
//!   before it blocks and the server takes its time, so the deadlock typically becomes
//!   certain only *after* the ui thread is asleep in `.wait()`. Queueing the continuation on
//!   the ui must wake the wait (it watches the tasks it depends on) so it can look again. With the deliberate bug `Knob::SkipBlockedWake`
//!   ([`skipping_the_blocked_wake_hangs`]) it does not, and the program hangs like .NET:
//!   shuttle reports that hang as a deadlock.
//! - [`faithful_mode_hangs_like_dotnet`]: with `WaitMode::Faithful` the wait blocks exactly
//!   like .NET. Every thread ends up blocked, shuttle reports the deadlock, and the failing
//!   schedule it hands back is printed. One such schedule is kept as a regression test,
//!   [`faithful_mode_replays_the_recorded_deadlock`].
//!
//! Every scenario ends by checking that every task it created reached a terminal state
//! (shuttle silently drops threads still blocked when the model's main thread returns, so a
//! task left pending would otherwise go unnoticed), and shuts its pool and context down.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models \
//!     --target-dir target/shuttle --test shuttle_deadlock -- --nocapture
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use shuttle::sync::mpsc;
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    start, ConfigureAwaitOptions, Context, SingleThreadContext, Task, TaskCompletionSource,
    TaskError, TaskId, TaskStatus, ThreadPool, WaitError, WaitMode,
};
use taskcheck_models::{
    schedule_from_failure, shuttle_dfs, shuttle_expect_failure, shuttle_pct, shuttle_random,
    Strategy,
};

/// Executions per strategy for the main claims.
const ITERATIONS: usize = 1_000;
/// PCT's bug depth: how many ordering constraints a schedule may force.
const PCT_DEPTH: usize = 3;
/// What the whole chain returns: user 1 + settings 10 + news 100.
const DASHBOARD: u64 = 111;

// ---------------------------------------------------------------------------------------
// Bookkeeping: every task a scenario creates must end (see the module docs).

/// Every task a scenario creates, by name, so its end can check that none is left pending.
#[derive(Default)]
struct Ledger(Mutex<Vec<(String, Box<dyn Fn() -> TaskStatus + Send>)>>);

impl Ledger {
    fn track<T: Send + 'static>(&self, name: &str, task: &Task<T>) {
        let task = task.clone();
        self.0
            .lock()
            .unwrap()
            .push((name.to_owned(), Box::new(move || task.status())));
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

// ---------------------------------------------------------------------------------------
// The library: three nested async methods, each awaiting pool work.

/// How the library's `await`s are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaits {
    /// A plain `await`: resume on the captured context (the ui, when called from it).
    Capture,
    /// `ConfigureAwait(false)` everywhere: resume wherever the awaited work finished.
    ConfigureAwaitFalse,
}

/// What the library methods share: the pool they run I/O on, how they await, and the
/// scenario's ledger.
#[derive(Clone)]
struct Library {
    pool: Context,
    awaits: Awaits,
    ledger: Arc<Ledger>,
    /// The async methods called so far and their tasks, for checking the deadlock report.
    methods: Arc<Mutex<Vec<(&'static str, TaskId)>>>,
    /// When set, the HTTP call in `fetch_user` waits for this reply from the "network".
    reply: Option<Task<u64>>,
}

impl Library {
    /// Spawns `work` on the pool and tracks it.
    #[track_caller]
    fn on_pool<F>(&self, name: &str, work: F) -> Task<u64>
    where
        F: Future<Output = Result<u64, TaskError>> + Send + 'static,
    {
        let task = self.pool.spawn(work);
        self.ledger.track(name, &task);
        task
    }

    /// Starts an async method eagerly (calls it, C#-style) and tracks its task.
    #[track_caller]
    fn call<F>(&self, name: &'static str, method: F) -> Task<u64>
    where
        F: Future<Output = Result<u64, TaskError>> + Send + 'static,
    {
        let task = start(method);
        self.ledger.track(name, &task);
        self.methods.lock().unwrap().push((name, task.id()));
        task
    }

    /// The task of the async method `name`, once called.
    fn method(&self, name: &str) -> Option<TaskId> {
        let methods = self.methods.lock().unwrap();
        methods
            .iter()
            .find(|(called, _)| *called == name)
            .map(|(_, id)| *id)
    }
}

/// `await task` as the library writes it.
async fn resume_after(awaits: Awaits, task: Task<u64>) -> Result<u64, TaskError> {
    match awaits {
        Awaits::Capture => task.await,
        Awaits::ConfigureAwaitFalse => task.configure_await(false).await,
    }
}

/// Level 1: starts `load_profile`, fetches the news on the pool, awaits both.
async fn load_dashboard(lib: Library) -> Result<u64, TaskError> {
    let profile = lib.call("load_profile", load_profile(lib.clone()));
    let news = lib.on_pool("fetch_news (pool)", async { Ok(100) });
    let profile = resume_after(lib.awaits, profile).await?;
    let news = resume_after(lib.awaits, news).await?;
    Ok(profile + news)
}

/// Level 2: starts `fetch_user`, fetches the settings on the pool, awaits both.
async fn load_profile(lib: Library) -> Result<u64, TaskError> {
    let user = lib.call("fetch_user", fetch_user(lib.clone()));
    let settings = lib.on_pool("fetch_settings (pool)", async { Ok(10) });
    let user = resume_after(lib.awaits, user).await?;
    let settings = resume_after(lib.awaits, settings).await?;
    Ok(user + settings)
}

/// Level 3: an HTTP call on the pool (which, in the late scenario, waits for the network).
async fn fetch_user(lib: Library) -> Result<u64, TaskError> {
    let reply = lib.reply.clone();
    let http = lib.on_pool("http_get (pool)", async move {
        match reply {
            Some(reply) => reply.await,
            None => Ok(1),
        }
    });
    resume_after(lib.awaits, http).await
}

/// `await Task.Yield()`: go back through the scheduler once, though nothing is pending.
async fn yield_once() {
    let _ = Task::completed()
        .configure_await_with(
            ConfigureAwaitOptions::FORCE_YIELDING
                | ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT,
        )
        .await;
}

// ---------------------------------------------------------------------------------------
// The application: a ui thread (the model's main thread), a pool, the network, and a click
// handler.

/// Where the click handler runs on the ui thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handler {
    /// Directly on the ui thread with the ui context current (`ui.enter`).
    Entered,
    /// As a job of the ui's message loop (`ui.block_on` pumps it).
    InMessageLoop,
}

/// The server at the other end of `fetch_user`'s HTTP call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// No server: the HTTP job on the pool answers by itself, at once.
    Local,
    /// A thread of its own that replies once the request has been sent, after `think`
    /// yields (the time the server takes).
    Remote { think: usize },
}

/// What the click handler gets: the library, and the button that sends the request.
struct Click {
    lib: Library,
    request: Option<mpsc::Sender<()>>,
}

impl Click {
    /// The request leaves the machine: the server may reply from now on. Only the first
    /// call sends anything.
    fn send_request(&mut self) {
        if let Some(request) = self.request.take() {
            request.send(()).unwrap();
        }
    }
}

/// One run of the application.
struct App {
    ui: SingleThreadContext,
    pool: ThreadPool,
    ledger: Arc<Ledger>,
    lib: Library,
    noise: Vec<Task<u64>>,
    network: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl App {
    /// Starts the application: the model's main thread becomes the ui thread.
    fn new(mode: WaitMode, awaits: Awaits, server: Server) -> App {
        let ui = SingleThreadContext::builder()
            .name("ui")
            .wait_mode(mode)
            .build();
        let pool = ThreadPool::with_name("pool", 2);
        let ledger = Arc::new(Ledger::default());
        let (reply, network) = match server {
            Server::Local => (None, None),
            Server::Remote { think } => {
                let response = Arc::new(TaskCompletionSource::<u64>::new());
                let reply = response.task();
                let (request, requests) = mpsc::channel::<()>();
                let server = thread::spawn(move || {
                    requests.recv().unwrap();
                    for _ in 0..think {
                        thread::yield_now();
                    }
                    response.set_result(1).unwrap();
                });
                (Some(reply), Some((request, server)))
            }
        };
        let lib = Library {
            pool: pool.context(),
            awaits,
            ledger: ledger.clone(),
            methods: Arc::new(Mutex::new(Vec::new())),
            reply,
        };
        // Noise on the pool: a job that spins a little and one that yields twice.
        let spinner = lib.on_pool("spinner (pool)", async {
            for _ in 0..3 {
                thread::yield_now();
            }
            Ok(0)
        });
        let yielder = lib.on_pool("yielder (pool)", async {
            yield_once().await;
            yield_once().await;
            Ok(0)
        });
        App {
            ui,
            pool,
            ledger,
            lib,
            noise: vec![spinner, yielder],
            network,
        }
    }

    /// Runs `handler` on the ui thread, as `how` says, and returns what it returned.
    fn on_click<R, H>(&self, how: Handler, handler: H) -> R
    where
        H: FnOnce(Click) -> R + Send + 'static,
        R: Clone + Send + 'static,
    {
        let click = Click {
            lib: self.lib.clone(),
            request: self.network.as_ref().map(|(request, _)| request.clone()),
        };
        match how {
            Handler::Entered => self
                .ui
                .enter(move || handler(click))
                .expect("the model's main thread owns the ui context"),
            // block_on returns once the handler's job has run, so it needs no tracking.
            Handler::InMessageLoop => self
                .ui
                .block_on(async move { Ok::<_, TaskError>(handler(click)) })
                .expect("the click handler itself does not fail"),
        }
    }

    /// Lets the ui's message loop run until `task` completes (awaiting instead of blocking),
    /// and returns its value.
    fn pump_until(&self, task: Task<u64>) -> u64 {
        self.ui
            .block_on(task)
            .expect("once the message loop runs again the chain completes")
    }

    /// Ends the run: waits for the noise and the network, shuts everything down, and
    /// checks that no task was left pending.
    fn finish(self) {
        for noise in &self.noise {
            assert_eq!(noise.wait().unwrap(), 0);
        }
        if let Some((_, server)) = self.network {
            server.join().unwrap();
        }
        self.pool.shutdown();
        self.ui.shutdown();
        self.ledger.assert_all_terminal();
    }
}

/// The blocked thread's name as the runtime reports it.
fn this_thread() -> String {
    let current = thread::current();
    match current.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", current.id()),
    }
}

/// The click handler of the story: call the chain, send the request, do `ui_work` steps of
/// other ui work (repainting a progress bar), then block on the chain (`.Result`).
fn call_then_block(mut click: Click, ui_work: usize) -> (Task<u64>, Result<u64, WaitError>) {
    let lib = click.lib.clone();
    let dashboard = lib.call("load_dashboard", load_dashboard(lib.clone()));
    if lib.reply.is_some() && click.request.is_some() {
        assert!(
            !dashboard.is_completed(),
            "the chain cannot finish before the server has the request"
        );
    }
    click.send_request();
    for _ in 0..ui_work {
        thread::yield_now();
    }
    let result = dashboard.wait();
    (dashboard, result)
}

/// Checks that `result` is the deadlock report and that it names everything it must; the
/// task stuck in the ui queue must be one of the async methods `stuck`.
fn assert_reported(
    result: Result<u64, WaitError>,
    dashboard: &Task<u64>,
    lib: &Library,
    stuck: &[&str],
) {
    let error = match result {
        Err(error @ WaitError::WouldDeadlock(_)) => error,
        other => {
            panic!("the ui thread blocked on the chain, expected WouldDeadlock, got {other:?}")
        }
    };
    let WaitError::WouldDeadlock(report) = &error else {
        unreachable!()
    };
    let message = error.to_string();
    // "task #12 (created at …)": the id and the opening parenthesis, so #1 cannot match #12.
    let awaited = format!("task {} (", dashboard.id());
    let stuck = stuck
        .iter()
        .filter_map(|method| lib.method(method))
        .map(|id| format!("task {id} ("))
        .find(|task| report.stuck().starts_with(task))
        .unwrap_or_else(|| panic!("the stuck task must be one of {stuck:?}: {message}"));
    let thread = this_thread();

    assert!(report.context().contains("'ui'"), "{message}");
    assert_eq!(report.thread(), thread, "{message}");
    assert!(report.awaited().starts_with(&awaited), "{message}");
    assert!(
        report.awaited().contains("shuttle_deadlock.rs"),
        "{message}"
    );
    for part in ["'ui'", &thread, &awaited, &stuck] {
        assert!(
            message.contains(part),
            "the report must name {part}: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. FailFast reports the deadlock in every schedule.

/// The story. The server answers as soon as the request is out, while the handler still
/// repaints for a couple of steps, so the reply reaches the ui queue sometimes before and
/// sometimes after the wait begins: shuttle explores both.
fn fail_fast_story(how: Handler) -> impl Fn() + Send + Sync + 'static {
    move || {
        let app = App::new(
            WaitMode::FailFast,
            Awaits::Capture,
            Server::Remote { think: 0 },
        );
        let (dashboard, result) = app.on_click(how, |click| call_then_block(click, 2));
        assert_reported(result, &dashboard, &app.lib, &["fetch_user"]);
        // The other fix, in the application: let the message loop run (await, don't block).
        assert_eq!(app.pump_until(dashboard), DASHBOARD);
        app.finish();
    }
}

#[test]
fn fail_fast_reports_the_deadlock() {
    let name = "shuttle_deadlock::fail_fast_reports_the_deadlock";
    for how in [Handler::Entered, Handler::InMessageLoop] {
        shuttle_pct(name, ITERATIONS, PCT_DEPTH, fail_fast_story(how));
        shuttle_random(name, ITERATIONS, fail_fast_story(how));
    }
}

// ---------------------------------------------------------------------------------------
// 2. configure_await(false) throughout the library fixes it.

fn fixed_story(how: Handler, server: Server) -> impl Fn() + Send + Sync + 'static {
    move || {
        let app = App::new(WaitMode::FailFast, Awaits::ConfigureAwaitFalse, server);
        let (_, result) = app.on_click(how, |click| call_then_block(click, 2));
        match result {
            Ok(total) => assert_eq!(total, DASHBOARD),
            Err(error) => panic!("with configure_await(false) the wait must succeed: {error}"),
        }
        app.finish();
    }
}

#[test]
fn configure_await_false_fixes_it() {
    let name = "shuttle_deadlock::configure_await_false_fixes_it";
    let remote = Server::Remote { think: 0 };
    shuttle_pct(
        name,
        ITERATIONS,
        PCT_DEPTH,
        fixed_story(Handler::Entered, remote),
    );
    shuttle_random(name, ITERATIONS, fixed_story(Handler::Entered, remote));
    shuttle_random(
        name,
        ITERATIONS,
        fixed_story(Handler::InMessageLoop, remote),
    );
    shuttle_dfs(
        name,
        Some(ITERATIONS),
        fixed_story(Handler::Entered, Server::Local),
    );
}

// ---------------------------------------------------------------------------------------
// 3. No false alarm: a wait that needs nothing from the ui is never reported.

/// How often the racing-ahead story saw each outcome (plain counters, outside the model).
static RACED_AHEAD: AtomicUsize = AtomicUsize::new(0);
static SUSPENDED: AtomicUsize = AtomicUsize::new(0);

fn no_false_alarm_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let app = App::new(
            WaitMode::FailFast,
            Awaits::ConfigureAwaitFalse,
            Server::Remote { think: 1 },
        );
        let results = app.on_click(Handler::Entered, |mut click| {
            // The server may answer at any time from now on.
            click.send_request();
            // A plain pool job: nothing in it ever touches the ui.
            let plain = click.lib.on_pool("plain (pool)", async {
                thread::yield_now();
                Ok(5)
            });
            let plain = plain.wait();
            // The fixed chain, whose HTTP call waits for the network thread.
            let (_, chain) = call_then_block(click, 0);
            vec![plain, chain]
        });
        for result in &results {
            if let Err(error) = result {
                panic!("a wait that needs nothing from the ui was refused: {error}");
            }
        }
        let values: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(values, [5, DASHBOARD]);
        app.finish();
    }
}

/// The unfixed chain with a local HTTP call that may finish before anyone awaits it. If
/// every piece is complete by the time it is awaited, nothing suspends, nothing captured
/// the ui, and the wait returns 111 (in .NET too); otherwise the deadlock is reported.
/// Never a hang, never a report without a stuck continuation.
fn racing_ahead_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let app = App::new(WaitMode::FailFast, Awaits::Capture, Server::Local);
        let (dashboard, result) = app.on_click(Handler::Entered, |click| call_then_block(click, 0));
        if let Ok(total) = result {
            assert_eq!(total, DASHBOARD);
            RACED_AHEAD.fetch_add(1, Ordering::Relaxed);
        } else {
            // Whichever await found its work still running is the one stuck in the queue.
            let chain = ["load_dashboard", "load_profile", "fetch_user"];
            assert_reported(result, &dashboard, &app.lib, &chain);
            assert_eq!(app.pump_until(dashboard), DASHBOARD);
            SUSPENDED.fetch_add(1, Ordering::Relaxed);
        }
        app.finish();
    }
}

#[test]
fn no_false_alarm() {
    let name = "shuttle_deadlock::no_false_alarm";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, no_false_alarm_story());
    shuttle_random(name, ITERATIONS, no_false_alarm_story());

    let name = "shuttle_deadlock::no_false_alarm_when_the_work_raced_ahead";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, racing_ahead_story());
    shuttle_random(name, ITERATIONS, racing_ahead_story());
    let (ahead, suspended) = (
        RACED_AHEAD.load(Ordering::Relaxed),
        SUSPENDED.load(Ordering::Relaxed),
    );
    println!("{name}: {ahead} schedules raced ahead (Ok), {suspended} suspended (WouldDeadlock)");
    assert!(
        ahead > 0 && suspended > 0,
        "both outcomes must be exercised"
    );
}

// ---------------------------------------------------------------------------------------
// 4. A deadlock that becomes certain only after the wait began.

/// The server replies only once the request is out, which the handler sends right before
/// it blocks, and it takes its time: when `.wait()` starts the chain is still running (the
/// HTTP job on the pool waits for the reply), and fetch_user's continuation reaches the ui
/// queue later, in all but a few schedules while the ui thread already sleeps in the wait.
/// Only the post's wake lets the wait look again and see the deadlock.
fn late_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let app = App::new(
            WaitMode::FailFast,
            Awaits::Capture,
            Server::Remote { think: 3 },
        );
        let (dashboard, result) = app.on_click(Handler::Entered, |click| call_then_block(click, 0));
        assert_reported(result, &dashboard, &app.lib, &["fetch_user"]);
        assert_eq!(app.pump_until(dashboard), DASHBOARD);
        app.finish();
    }
}

#[test]
fn late_certain_deadlock_is_still_reported() {
    let name = "shuttle_deadlock::late_certain_deadlock_is_still_reported";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, late_story());
    shuttle_random(name, ITERATIONS, late_story());
}

/// The deliberate bug: queueing the stuck continuation on the ui no longer wakes the
/// blocked wait, so it never looks again and sleeps forever: the hang .NET has, which
/// shuttle reports as a deadlock.
#[test]
fn skipping_the_blocked_wake_hangs() {
    let story = late_story();
    let failure = shuttle_expect_failure(
        "shuttle_deadlock::skipping_the_blocked_wake_hangs",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "deadlock",
        move || with_knob(Knob::SkipBlockedWake, &story),
    );
    assert!(
        failure.starts_with("deadlock! blocked tasks: ["),
        "{failure}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Faithful mode hangs like .NET, and shuttle finds it.

/// The story with `WaitMode::Faithful`: the wait blocks forever, the pool finishes its
/// work and goes to sleep, and every thread is blocked.
fn faithful_story() -> impl Fn() + Send + Sync + 'static {
    || {
        let app = App::new(
            WaitMode::Faithful,
            Awaits::Capture,
            Server::Remote { think: 0 },
        );
        let (dashboard, result) = app.on_click(Handler::Entered, |click| call_then_block(click, 0));
        // Never reached: the wait above does not return.
        panic!("a faithful wait returned {result:?} for {dashboard:?}");
    }
}

#[test]
fn faithful_mode_hangs_like_dotnet() {
    let name = "shuttle_deadlock::faithful_mode_hangs_like_dotnet";
    for strategy in [
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        Strategy::Random(ITERATIONS),
    ] {
        let failure = shuttle_expect_failure(name, strategy, "deadlock", faithful_story());
        assert!(
            failure.starts_with("deadlock! blocked tasks: ["),
            "{failure}"
        );
        let schedule = schedule_from_failure(&failure).expect("a failure carries its schedule");
        println!("{name}: shuttle found the hang; replay it with this schedule:\n{schedule}");
    }
}

/// One schedule shuttle found for [`faithful_story`], recorded by
/// [`faithful_mode_hangs_like_dotnet`] (it prints it).
///
/// shuttle's schedule strings are specific to its version (pinned: shuttle 0.9.10 in
/// `Cargo.lock`) and to the scheduling points of the code they were recorded from: a change
/// in the runtime or in this scenario can invalidate it. To re-record, run
///
/// ```text
/// RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models --target-dir target/shuttle \
///     --test shuttle_deadlock faithful_mode_hangs_like_dotnet -- --nocapture
/// ```
///
/// and paste one of the printed schedules here.
const FAITHFUL_DEADLOCK_SCHEDULE: &str = "9102b204ad9f97a3c9faa1b3480000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000499224892449922449922449922449922449922449922449922449922449922449922449922449922449922449920400000000000000002449922449922449922449922449922449dab66ddb344992244992244992244902000000000000000092244900000000000000004092244992a46d000000000000000060dbb6244992244992244912";

#[test]
fn faithful_mode_replays_the_recorded_deadlock() {
    let replay = std::panic::catch_unwind(|| {
        shuttle_expect_failure(
            "shuttle_deadlock::faithful_mode_replays_the_recorded_deadlock",
            Strategy::Replay(FAITHFUL_DEADLOCK_SCHEDULE.to_owned()),
            "deadlock",
            faithful_story(),
        )
    });
    match replay {
        Ok(failure) => assert!(
            failure.starts_with("deadlock! blocked tasks: ["),
            "{failure}"
        ),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "the recorded schedule FAITHFUL_DEADLOCK_SCHEDULE no longer replays the \
                 faithful-mode deadlock:\n{message}\n\nshuttle schedules are specific to the \
                 shuttle version (0.9.10) and to the code they were recorded from. Re-record: \
                 RUSTFLAGS=\"--cfg shuttle\" cargo test --release -p taskcheck-models \
                 --target-dir target/shuttle --test shuttle_deadlock \
                 faithful_mode_hangs_like_dotnet -- --nocapture, then paste one printed \
                 schedule into FAITHFUL_DEADLOCK_SCHEDULE in models/tests/shuttle_deadlock.rs"
            );
        }
    }
}
