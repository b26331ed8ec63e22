//! # A panic in a task
//!
//! **.NET.** An exception thrown inside an async method does not escape to whatever thread
//! happened to run it: it is captured into the returned `Task`, which becomes Faulted, and
//! rethrown where the task is awaited. That includes an exception thrown *before the first
//! await*: calling the method does not throw, it returns an already-faulted task. The
//! thread-pool thread that ran the faulting code lives on and runs the next work item.
//!
//! **taskcheck.** A panic is Rust's unexpected exception. The runtime catches it around
//! every poll of a task body and makes it the task's fault: `TaskError::is_panic`, with
//! `panic_message`; every awaiter sees it as an `Err`, not as a panic. The worker survives:
//! a one-worker pool runs the next task on the very same thread. `start(...)` — the eager
//! call of an async method — returns an already-faulted task when the body panics before
//! its first suspension, and never panics at the call site. A single-thread context's pump
//! survives too.

use std::collections::HashSet;

use taskcheck::{
    start, SingleThreadContext, Task, TaskCompletionSource, TaskError, TaskStatus, ThreadPool,
};
use taskcheck_tests::{
    quiet_expected_panics, Counter, ExpectedPanicPayload, Latch, Log, Whereabouts, EXPECTED_PANIC,
};

/// A lookup that finds nothing.
fn find_customer(_name: &str) -> Option<u32> {
    None
}

fn expected(message: &str) -> String {
    format!("{EXPECTED_PANIC} {message}")
}

/// The panic reaches the awaiter as a fault — a value it can inspect — and a blocking wait
/// gets the same.
#[test]
fn a_panic_is_a_fault_seen_at_the_await() {
    quiet_expected_panics();
    let pool = ThreadPool::with_name("panics", 2);
    let panicking: Task<u32> = pool.spawn(async {
        let items: Vec<u32> = Vec::new();
        if items.is_empty() {
            panic!("{EXPECTED_PANIC} out of range");
        }
        Ok(items[0])
    });
    let awaiter = pool.spawn({
        let panicking = panicking.clone();
        async move {
            match panicking.await {
                Ok(_) => unreachable!("the task panicked"),
                Err(error) => Ok::<_, TaskError>(error),
            }
        }
    });

    let error = awaiter.wait().unwrap();
    assert!(error.is_faulted() && error.is_panic());
    assert_eq!(
        error.panic_message(),
        Some(expected("out of range").as_str())
    );
    assert!(error.to_string().contains("panicked"), "{error}");
    assert!(
        error.to_string().contains(&panicking.id().to_string()),
        "the message names the task: {error}"
    );

    assert_eq!(panicking.status(), TaskStatus::Faulted);
    let blocking = panicking.wait().unwrap_err();
    assert!(blocking.task_error().unwrap().is_panic());
}

/// A one-worker pool: ten tasks panic, a posted callback panics, then a task succeeds —
/// all on the same thread, which never died.
#[test]
fn the_worker_survives_and_runs_the_next_task() {
    quiet_expected_panics();
    let pool = ThreadPool::with_name("solo", 1);
    let ran_at = Log::new();
    let panicking: Vec<Task<()>> = (0..10)
        .map(|i| {
            let ran_at = ran_at.clone();
            pool.spawn(async move {
                ran_at.push(Whereabouts::here());
                panic!("{EXPECTED_PANIC} task {i}");
            })
        })
        .collect();
    for (i, task) in panicking.iter().enumerate() {
        let error = task.wait().unwrap_err();
        assert_eq!(
            error.task_error().unwrap().panic_message(),
            Some(expected(&format!("task {i}")).as_str())
        );
    }
    let callback_ran = Latch::new(1);
    pool.context()
        .post({
            let callback_ran = callback_ran.clone();
            move || {
                callback_ran.count_down();
                panic!("{EXPECTED_PANIC} in a posted callback");
            }
        })
        .unwrap();
    callback_ran.wait();

    let survivor = pool.spawn(async { Ok::<_, TaskError>(Whereabouts::here()) });
    let survivor = survivor.wait().unwrap();
    let threads: HashSet<_> = ran_at.snapshot().into_iter().map(|w| w.thread).collect();
    assert_eq!(threads.len(), 1);
    assert!(threads.contains(&survivor.thread));
    assert_eq!(survivor.thread_name.as_deref(), Some("solo-0"));
}

/// The eager call of an async method whose body panics before its first await: `start`
/// returns normally, the effects before the panic have happened, and the task it returns
/// is *already* faulted.
#[test]
fn a_panic_before_the_first_await_gives_an_already_faulted_task() {
    quiet_expected_panics();
    let effects = Counter::new();
    let call = std::panic::catch_unwind(|| {
        start({
            let effects = effects.clone();
            async move {
                effects.bump();
                let value = find_customer("nobody").expect("[expected panic] argument is required");
                Ok::<_, TaskError>(value)
            }
        })
    });

    let task = call.expect("no panic at the call site");
    assert_eq!(effects.get(), 1, "the body ran before start returned");
    assert_eq!(task.status(), TaskStatus::Faulted);
    let error = task.outcome().unwrap().unwrap_err();
    assert_eq!(
        error.panic_message(),
        Some(expected("argument is required").as_str())
    );
}

/// An error *returned* before the first await behaves the same: an already-faulted task.
#[test]
fn an_error_before_the_first_await_gives_an_already_faulted_task() {
    let task: Task<u32> = start(async { Err(TaskError::from_error(std::fmt::Error)) });
    assert_eq!(task.status(), TaskStatus::Faulted);
    assert!(task
        .outcome()
        .unwrap()
        .unwrap_err()
        .downcast_ref::<std::fmt::Error>()
        .is_some());
}

/// A panic after the first await: `start` returns a pending task, and the panic faults it
/// later, on whatever thread resumed the body — here the one that completed the awaited
/// task.
#[test]
fn a_panic_after_the_first_await_faults_the_task_later() {
    quiet_expected_panics();
    let source = TaskCompletionSource::<u32>::new();
    let task = start({
        let awaited = source.task();
        async move {
            let n = awaited.await?;
            if n > 3 {
                panic!("{EXPECTED_PANIC} too many");
            }
            Ok::<_, TaskError>(n)
        }
    });
    assert_eq!(task.status(), TaskStatus::Pending);

    // The continuation runs inline here, and its panic is caught: set_result returns.
    source.set_result(4).unwrap();
    assert_eq!(task.status(), TaskStatus::Faulted);
    assert_eq!(
        task.outcome().unwrap().unwrap_err().panic_message(),
        Some(expected("too many").as_str())
    );
}

/// A single-thread context's pump survives a panicking task and runs the next job: two
/// jobs, one faulted task, one succeeded.
#[test]
fn a_panic_on_a_single_thread_context_does_not_stop_its_pump() {
    quiet_expected_panics();
    let ui = SingleThreadContext::new("ui");
    let panicking: Task<u32> = ui.spawn(async { panic!("{EXPECTED_PANIC} in a click handler") });
    let next = ui.spawn(async { Ok::<_, TaskError>("next") });

    assert_eq!(ui.run_until_idle(), Ok(2));
    assert!(panicking.outcome().unwrap().unwrap_err().is_panic());
    assert_eq!(next.outcome().unwrap().unwrap(), "next");
}

/// A panic whose payload is not a string still faults the task, with a message that
/// says so.
#[test]
fn a_panic_with_any_payload_is_a_fault() {
    quiet_expected_panics();
    let task: Task<u32> = start(async { std::panic::panic_any(ExpectedPanicPayload(42)) });
    let error = task.outcome().unwrap().unwrap_err();
    assert!(error.is_panic());
    assert_eq!(
        error.panic_message(),
        Some("a panic with a non-string payload")
    );
}

/// A panic outside the poll — here in the destructor of a finished body — is contained
/// too: the only worker survives and runs the next task.
#[test]
fn a_panicking_destructor_does_not_kill_the_worker() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("bomb in a destructor");
            }
        }
    }
    /// Ready at once, holding a `Bomb` that goes off when the finished body is dropped.
    struct ReadyWithBomb(#[allow(dead_code, reason = "held for its destructor")] Bomb);
    impl std::future::Future for ReadyWithBomb {
        type Output = Result<u32, TaskError>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(1))
        }
    }
    let pool = ThreadPool::with_name("bomb", 1);
    assert_eq!(pool.spawn(ReadyWithBomb(Bomb)).wait().unwrap(), 1);
    assert_eq!(
        pool.spawn(async { Ok::<_, TaskError>(2) }).wait().unwrap(),
        2
    );
}
