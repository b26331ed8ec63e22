//! `ValueTask<T>`, its source contract, the manual-reset source core and the source pool:
//! one small test per rule in the module docs of `value_task.rs`,
//! `value_task_source.rs` and `value_task_pool.rs`.
//!
//! Awaits are stepped by hand with tokio-test's mock task (`tokio_test::task::spawn`): each
//! `poll()` is one step, `is_woken()` says whether a wake arrived since the last step, and
//! `waker_ref_count()` counts the clones of the mock's waker that are alive. A registered
//! continuation holds exactly one clone, and a wake consumes it, so "the continuation was
//! resumed exactly once" reads as: the count was 2 while suspended, the task was woken,
//! and the count is back to 1 (nothing is left that could wake it again).
//!
//! A source shared between a producer and a consumer is an
//! `Arc<ManualResetValueTaskSourceCore<T>>`: the runtime implements [`ValueTaskSource`] for
//! any `Arc` of a source.
//!
//! Rules that cannot be reached through the public API are tested as far as they can be,
//! and the test says why (see `reset_bumps_*` and `stale_producer_*`).
//!
//! The tests at the end are the runtime bugs this file found, kept as regression tests.

#![cfg(not(any(loom, shuttle)))]

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::thread;

use taskcheck::{
    Awaitable, Awaiter, ConfigureAwaitOptions, Continuation, ManualResetValueTaskSourceCore,
    Refused, SingleThreadContext, SourceErrorKind, Task, TaskCompletionSource, TaskError,
    TaskStatus, ThreadPool, ValueTask, ValueTaskSource, ValueTaskSourceError, ValueTaskSourcePool,
};
use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready};

// ---------------------------------------------------------------------------------------
// Helpers

/// A fresh shared core.
fn new_core<T>() -> Arc<ManualResetValueTaskSourceCore<T>> {
    Arc::new(ManualResetValueTaskSourceCore::new())
}

/// A value task over the core's current operation.
fn value_task<T>(
    core: &Arc<ManualResetValueTaskSourceCore<T>>,
) -> ValueTask<T, Arc<ManualResetValueTaskSourceCore<T>>> {
    ValueTask::from_source(core.clone(), core.version())
}

/// A source whose operation completes *while* its continuation is being registered: the
/// awaiter saw it pending, then the completion landed before `on_completed` ran. This is
/// the race of rule 4 made deterministic. It logs when `on_completed` returns.
struct CompletesDuringRegistration {
    core: Arc<ManualResetValueTaskSourceCore<u32>>,
    value: u32,
    log: Arc<Mutex<Vec<String>>>,
}

impl ValueTaskSource<u32> for CompletesDuringRegistration {
    fn status(&self, token: u64) -> Result<TaskStatus, ValueTaskSourceError> {
        self.core.status(token)
    }

    fn on_completed(&self, token: u64, continuation: Continuation) -> Result<(), Refused> {
        self.core.set_result(self.value).unwrap();
        let registered = self.core.on_completed(token, continuation);
        self.log
            .lock()
            .unwrap()
            .push("on_completed returned".to_owned());
        registered
    }

    fn get_result(&self, token: u64) -> Result<Result<u32, TaskError>, ValueTaskSourceError> {
        self.core.get_result(token)
    }
}

/// The typed source error inside an await's fault.
fn source_error(error: &TaskError) -> &ValueTaskSourceError {
    error
        .downcast_ref::<ValueTaskSourceError>()
        .unwrap_or_else(|| panic!("expected a ValueTaskSourceError fault, got: {error}"))
}

/// The kind of the typed source error inside an await's fault.
fn kind_of<T: std::fmt::Debug>(outcome: Result<T, TaskError>) -> SourceErrorKind {
    source_error(&outcome.expect_err("expected a fault")).kind()
}

/// The name of the calling thread.
fn thread_name() -> String {
    thread::current().name().unwrap_or("<unnamed>").to_owned()
}

// ---------------------------------------------------------------------------------------
// The three representations

#[test]
fn a_ready_value_completes_on_the_first_poll_without_suspending() {
    let value_task = ValueTask::<u32>::from_result(5);
    assert_eq!(value_task.status(), TaskStatus::Succeeded);
    assert!(value_task.is_completed());
    assert!(format!("{value_task:?}").contains(r#"holds: "ready""#));

    let mut awaiting = spawn(value_task.into_future());
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 5);
    assert!(!awaiting.is_woken());
    assert_eq!(
        awaiting.waker_ref_count(),
        1,
        "no continuation was ever registered"
    );
}

#[test]
fn a_ready_error_is_faulted_or_canceled() {
    let faulted = ValueTask::<u32>::from_error(TaskError::from_error(std::fmt::Error));
    assert_eq!(faulted.status(), TaskStatus::Faulted);
    let error = assert_ready!(spawn(faulted.into_future()).poll()).unwrap_err();
    assert!(error.downcast_ref::<std::fmt::Error>().is_some());

    let canceled = ValueTask::<u32>::from_error(TaskError::canceled());
    assert_eq!(canceled.status(), TaskStatus::Canceled);
    assert!(assert_ready!(spawn(canceled.into_future()).poll())
        .unwrap_err()
        .is_canceled());
}

#[test]
fn from_task_waits_for_the_task_and_wakes_once() {
    let source = TaskCompletionSource::<u32>::new();
    let task = source.task();
    let value_task = ValueTask::<_>::from_task(task.clone());
    assert_eq!(value_task.status(), TaskStatus::Pending);
    assert!(format!("{value_task:?}").contains(r#"holds: "task""#));

    let mut awaiting = spawn(value_task.into_future());
    assert_pending!(awaiting.poll());
    assert_eq!(awaiting.waker_ref_count(), 2, "one continuation registered");
    source.set_result(3).unwrap();
    assert!(awaiting.is_woken());
    assert_eq!(
        awaiting.waker_ref_count(),
        1,
        "the continuation was consumed"
    );
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 3);
    // The task itself stays multi-await.
    assert_eq!(task.wait().unwrap(), 3);
}

#[test]
fn from_task_of_a_completed_task_is_ready_at_once() {
    let value_task = ValueTask::<_>::from_task(Task::from_result(String::from("done")));
    assert_eq!(value_task.status(), TaskStatus::Succeeded);
    let mut awaiting = spawn(value_task.into_future());
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), "done");
}

#[test]
fn a_dropped_from_task_await_withdraws_its_continuation() {
    let source = TaskCompletionSource::<u32>::new();
    // The await lives in a slot the test can empty while the mock task lives on.
    let slot = Arc::new(Mutex::new(Some(
        ValueTask::<_>::from_task(source.task()).into_future(),
    )));
    let mut awaiting = spawn(std::future::poll_fn({
        let slot = slot.clone();
        move |cx| match slot.lock().unwrap().as_mut() {
            Some(future) => Pin::new(future).poll(cx).map(Some),
            None => Poll::Ready(None),
        }
    }));
    assert_pending!(awaiting.poll());
    assert_eq!(awaiting.waker_ref_count(), 2, "one continuation registered");
    drop(slot.lock().unwrap().take());
    assert_eq!(
        awaiting.waker_ref_count(),
        1,
        "dropping the await withdrew it"
    );
    source.set_result(1).unwrap();
    assert!(!awaiting.is_woken());
}

#[test]
fn from_source_over_a_manual_reset_core_delivers_the_value_and_wakes_once() {
    let core = new_core::<u32>();
    assert_eq!(core.version(), 0);
    let value_task = value_task(&core);
    assert_eq!(value_task.status(), TaskStatus::Pending);
    assert!(format!("{value_task:?}").contains(r#"holds: "source""#));

    let mut awaiting = spawn(value_task.into_future());
    assert_pending!(awaiting.poll());
    assert_eq!(awaiting.waker_ref_count(), 2, "one continuation registered");
    // A spurious poll before completion stays pending and registers nothing more.
    assert_pending!(awaiting.poll());
    assert_eq!(awaiting.waker_ref_count(), 2);

    core.set_result(9).unwrap();
    assert!(awaiting.is_woken());
    assert_eq!(awaiting.waker_ref_count(), 1, "woken exactly once");
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 9);
    // get_result moved the value out (rule 5).
    assert_eq!(
        core.get_result(0).unwrap_err().kind(),
        SourceErrorKind::ResultAlreadyTaken
    );
}

#[test]
fn from_source_completed_before_the_await_does_not_suspend() {
    let core = new_core::<&'static str>();
    let value_task = value_task(&core);
    core.set_result("early").unwrap();
    assert_eq!(value_task.status(), TaskStatus::Succeeded);
    let mut awaiting = spawn(value_task.into_future());
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), "early");
    assert_eq!(awaiting.waker_ref_count(), 1);
}

#[test]
fn a_set_exception_faults_the_await() {
    let core = new_core::<u32>();
    let mut awaiting = spawn(value_task(&core).into_future());
    assert_pending!(awaiting.poll());
    core.set_exception(std::fmt::Error).unwrap();
    assert!(awaiting.is_woken());
    let error = assert_ready!(awaiting.poll()).unwrap_err();
    assert!(error.is_faulted());
    assert!(error.downcast_ref::<std::fmt::Error>().is_some());
}

#[test]
fn a_canceled_outcome_reads_as_status_canceled() {
    let core = new_core::<u32>();
    let value_task = value_task(&core);
    core.set_exception(TaskError::canceled()).unwrap();
    assert_eq!(core.status(0).unwrap(), TaskStatus::Canceled);
    assert_eq!(value_task.status(), TaskStatus::Canceled);
    let error = assert_ready!(spawn(value_task.into_future()).poll()).unwrap_err();
    assert!(error.is_canceled());

    // The same through the pool.
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let value_task = producer.value_task();
    producer.set_exception(TaskError::canceled()).unwrap();
    assert_eq!(value_task.status(), TaskStatus::Canceled);
    assert!(assert_ready!(spawn(value_task.into_future()).poll())
        .unwrap_err()
        .is_canceled());
    assert_eq!(pool.rented(), 0);
}

#[test]
fn configure_await_false_on_a_value_task_works() {
    let core = new_core::<u32>();
    let mut awaiting = spawn(value_task(&core).configure_await(false));
    assert_pending!(awaiting.poll());
    core.set_result(4).unwrap();
    assert!(awaiting.is_woken());
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 4);
}

// ---------------------------------------------------------------------------------------
// Typed errors of the source contract (rules 1, 2, 3, 5)

#[test]
fn a_stale_token_is_refused_with_a_helpful_message() {
    let core = new_core::<u32>();
    for expected in 1..=7 {
        assert_eq!(core.reset(), expected);
    }
    let token = core.version();
    assert_eq!(token, 7);
    let stale = ValueTask::from_source(core.clone(), token);
    core.set_result(70).unwrap();
    assert_eq!(core.reset(), 8);
    core.set_result(80).unwrap();

    // The stale value task reads as faulted and its await never sees operation 8's 80.
    assert_eq!(stale.status(), TaskStatus::Faulted);
    let outcome = assert_ready!(spawn(stale.into_future()).poll());
    let error = outcome.unwrap_err();
    let typed = source_error(&error);
    assert_eq!(
        typed.kind(),
        SourceErrorKind::StaleToken {
            token: 7,
            current: 8
        }
    );
    let message = typed.to_string();
    assert!(
        message.starts_with("value task token 7 is stale: the source was reset to version 8"),
        "{message}"
    );
    assert!(
        message.contains("preserve()") && message.contains("as_task()"),
        "{message}"
    );
    assert!(error.to_string().contains(&message), "{error}");

    // Every call with the stale token is refused; operation 8 is untouched.
    let stale_kind = SourceErrorKind::StaleToken {
        token: 7,
        current: 8,
    };
    assert_eq!(core.status(7).unwrap_err().kind(), stale_kind);
    assert_eq!(core.get_result(7).unwrap_err().kind(), stale_kind);
    assert_eq!(
        core.set_outcome_for(7, Ok(71)).unwrap_err().kind(),
        stale_kind
    );
    assert_eq!(core.get_result(8).unwrap().unwrap(), 80);
}

#[test]
fn a_token_from_the_future_is_stale_too() {
    let core = new_core::<u32>();
    assert_eq!(
        core.status(5).unwrap_err().kind(),
        SourceErrorKind::StaleToken {
            token: 5,
            current: 0
        }
    );
}

#[test]
fn a_stale_token_await_that_suspended_before_the_reset_gets_the_typed_error() {
    // The consumer registers for operation 0, the source is reset (the operation is
    // forgotten, continuation included) and operation 1 completes. The old continuation is
    // never resumed by the reset: the awaiter stays pending, and a poll reads the error.
    let core = new_core::<u32>();
    let mut awaiting = spawn(value_task(&core).into_future());
    assert_pending!(awaiting.poll());
    assert_eq!(awaiting.waker_ref_count(), 2);
    core.reset();
    assert_eq!(
        awaiting.waker_ref_count(),
        1,
        "reset forgets (drops) the old continuation"
    );
    core.set_result(1).unwrap();
    assert!(
        !awaiting.is_woken(),
        "operation 1 must not wake operation 0's awaiter"
    );
    let outcome = assert_ready!(awaiting.poll());
    assert_eq!(
        kind_of(outcome),
        SourceErrorKind::StaleToken {
            token: 0,
            current: 1
        }
    );
    assert_eq!(core.get_result(1).unwrap().unwrap(), 1);
}

#[test]
fn get_result_before_completion_is_not_completed() {
    let core = new_core::<u32>();
    let error = core.get_result(0).unwrap_err();
    assert_eq!(error.kind(), SourceErrorKind::NotCompleted);
    assert!(
        error
            .to_string()
            .contains("requested before its operation completed"),
        "{error}"
    );

    // The same through the awaiter contract, whose get_result may only be called once the
    // operation completed.
    let mut awaiter = value_task(&core).get_awaiter();
    assert!(!awaiter.is_completed());
    assert_eq!(kind_of(awaiter.get_result()), SourceErrorKind::NotCompleted);

    // Asking early changes nothing: the operation still completes and delivers.
    core.set_result(2).unwrap();
    assert!(awaiter.is_completed());
    assert_eq!(awaiter.get_result().unwrap(), 2);
}

#[test]
fn a_second_continuation_is_refused_and_its_awaiter_still_wakes() {
    let core = new_core::<u32>();
    let mut first = spawn(value_task(&core).into_future());
    let mut second = spawn(value_task(&core).into_future());
    assert_pending!(first.poll());

    // The second registration is refused and handed back; the awaiter resumes it, so the
    // second await is woken at once and reads the error instead of hanging.
    assert_pending!(second.poll());
    assert!(
        second.is_woken(),
        "the refused continuation must be resumed"
    );
    assert_eq!(second.waker_ref_count(), 1);
    let outcome = assert_ready!(second.poll());
    let error = outcome.unwrap_err();
    let typed = source_error(&error);
    assert_eq!(typed.kind(), SourceErrorKind::ContinuationAlreadyRegistered);
    assert!(
        typed
            .to_string()
            .contains("a second continuation was registered")
            && typed.to_string().contains("preserve() or as_task()"),
        "{typed}"
    );

    // The first registration stands and gets the value.
    assert!(!first.is_woken());
    core.set_result(6).unwrap();
    assert!(first.is_woken());
    assert_eq!(assert_ready!(first.poll()).unwrap(), 6);
}

#[test]
fn completing_twice_is_already_completed_and_keeps_the_first_outcome() {
    let core = new_core::<u32>();
    core.set_result(1).unwrap();
    let error = core.set_result(2).unwrap_err();
    assert_eq!(error.kind(), SourceErrorKind::AlreadyCompleted);
    assert!(
        error.to_string().contains("already completed")
            && error.to_string().contains("reset the source"),
        "{error}"
    );
    assert_eq!(
        core.set_exception(TaskError::canceled())
            .unwrap_err()
            .kind(),
        SourceErrorKind::AlreadyCompleted
    );
    assert_eq!(
        core.set_outcome_for(0, Ok(3)).unwrap_err().kind(),
        SourceErrorKind::AlreadyCompleted
    );
    assert_eq!(core.get_result(0).unwrap().unwrap(), 1);
    // Completed and taken: still a completion error, not a fresh operation.
    assert_eq!(
        core.set_result(4).unwrap_err().kind(),
        SourceErrorKind::AlreadyCompleted
    );
}

#[test]
fn taking_the_result_twice_is_result_already_taken() {
    let core = new_core::<String>();
    core.set_result("once".to_owned()).unwrap();
    assert_eq!(core.get_result(0).unwrap().unwrap(), "once");
    let error = core.get_result(0).unwrap_err();
    assert_eq!(error.kind(), SourceErrorKind::ResultAlreadyTaken);
    assert!(
        error.to_string().contains("already taken") && error.to_string().contains("awaited once"),
        "{error}"
    );
    assert_eq!(
        core.status(0).unwrap_err().kind(),
        SourceErrorKind::ResultAlreadyTaken
    );

    // Through the awaiter contract: a second get_result on one awaiter.
    let core = new_core::<u32>();
    core.set_result(5).unwrap();
    let mut awaiter = value_task(&core).get_awaiter();
    assert_eq!(awaiter.get_result().unwrap(), 5);
    assert_eq!(
        kind_of(awaiter.get_result()),
        SourceErrorKind::ResultAlreadyTaken
    );

    // A ready value task's awaiter says so too, in words.
    let mut awaiter = ValueTask::<u32>::from_result(1).get_awaiter();
    assert_eq!(awaiter.get_result().unwrap(), 1);
    let error = awaiter.get_result().unwrap_err();
    assert!(error.to_string().contains("already taken"), "{error}");
}

#[test]
fn two_value_tasks_of_one_operation_the_second_reads_an_error_never_a_value_twice() {
    let core = new_core::<u32>();
    let first = value_task(&core);
    let second = value_task(&core);
    core.set_result(11).unwrap();
    assert_eq!(
        assert_ready!(spawn(first.into_future()).poll()).unwrap(),
        11
    );
    // Both awaits see "completed"; the second finds the result gone.
    assert_eq!(
        kind_of(assert_ready!(spawn(second.into_future()).poll())),
        SourceErrorKind::ResultAlreadyTaken
    );
}

// ---------------------------------------------------------------------------------------
// Rule 4: a continuation registered after completion is queued, never inline

#[test]
fn a_continuation_registered_after_completion_is_queued_to_its_context() {
    let ui = SingleThreadContext::new("vt-ui");
    let log = Arc::new(Mutex::new(Vec::new()));
    let core = new_core::<u32>();
    let source = CompletesDuringRegistration {
        core: core.clone(),
        value: 12,
        log: log.clone(),
    };
    ui.enter(|| {
        let mut awaiting = spawn(ValueTask::from_source(source, 0).into_future());
        assert_pending!(awaiting.poll());
        assert_eq!(log.lock().unwrap().as_slice(), ["on_completed returned"]);
        // Completed, but not resumed inline: the resumption waits in the ui's queue.
        assert!(
            !awaiting.is_woken(),
            "resumed inline on the registering thread"
        );
        assert_eq!(
            awaiting.waker_ref_count(),
            2,
            "the queued job holds the waker"
        );
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert!(awaiting.is_woken());
        assert_eq!(awaiting.waker_ref_count(), 1);
        assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 12);
    })
    .unwrap();
}

#[test]
fn a_continuation_registered_before_completion_may_run_inline_on_its_context() {
    // The contrast to the test above: completing on the captured context's own thread
    // resumes the (first) continuation inline, unless the core queues every continuation.
    let ui = SingleThreadContext::new("vt-ui");
    ui.enter(|| {
        let core = new_core::<u32>();
        let mut awaiting = spawn(value_task(&core).into_future());
        assert_pending!(awaiting.poll());
        core.set_result(1).unwrap();
        assert!(awaiting.is_woken(), "resumed inline");
        assert_eq!(ui.run_until_idle().unwrap(), 0);
        assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 1);

        let core = Arc::new(ManualResetValueTaskSourceCore::<u32>::with_options(true));
        let mut awaiting = spawn(value_task(&core).into_future());
        assert_pending!(awaiting.poll());
        core.set_result(2).unwrap();
        assert!(
            !awaiting.is_woken(),
            "run_continuations_asynchronously queues it"
        );
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert!(awaiting.is_woken());
        assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 2);
    })
    .unwrap();
}

#[test]
fn a_late_registration_in_a_spawned_task_resumes_after_on_completed_returns_on_the_ui_thread() {
    let ui = SingleThreadContext::spawn_thread("vt-ui-thread");
    let log = Arc::new(Mutex::new(Vec::new()));
    let source = CompletesDuringRegistration {
        core: new_core(),
        value: 13,
        log: log.clone(),
    };
    let task = ui.spawn({
        let log = log.clone();
        async move {
            let value = ValueTask::from_source(source, 0).await?;
            log.lock()
                .unwrap()
                .push(format!("resumed on {}", thread_name()));
            Ok::<_, TaskError>(value)
        }
    });
    assert_eq!(task.wait().unwrap(), 13);
    assert_eq!(
        log.lock().unwrap().as_slice(),
        ["on_completed returned", "resumed on vt-ui-thread"]
    );
    ui.shutdown();
}

#[test]
fn a_completion_from_another_thread_resumes_the_await_on_its_captured_context() {
    let ui = SingleThreadContext::spawn_thread("vt-ui-capture");
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let value_task = producer.value_task();
    let task = ui.spawn(async move {
        let value = value_task.await?;
        Ok::<_, TaskError>((value, thread_name()))
    });
    // A job posted after the task's first poll: once it ran, the task has suspended.
    let (suspended, wait_for_suspension) = mpsc::channel();
    ui.post(move || suspended.send(()).unwrap()).unwrap();
    wait_for_suspension.recv().unwrap();
    assert_eq!(task.status(), TaskStatus::Pending);

    // The producer completes from this (non-ui) thread.
    producer.set_result(21).unwrap();
    assert_eq!(task.wait().unwrap(), (21, "vt-ui-capture".to_owned()));
    assert_eq!(pool.rented(), 0);
    ui.shutdown();
}

// ---------------------------------------------------------------------------------------
// Rule 6: versions

#[test]
fn reset_bumps_the_version_by_one_and_forgets_the_operation() {
    // The wrap at u64::MAX (rule 6) cannot be reached through the public API: a core starts
    // at version 0 and only `reset` moves it, one step at a time, so reaching the wrap takes
    // 2^64 resets. What can be checked: each reset returns the next version, every earlier
    // token is stale from then on, and the new operation starts clean.
    let core = new_core::<u32>();
    let mut tokens = Vec::new();
    for expected in 1..=1_000u64 {
        tokens.push(core.version());
        core.set_result(u32::try_from(expected).unwrap()).unwrap();
        assert_eq!(core.reset(), expected);
        assert_eq!(core.version(), expected);
        assert_eq!(core.status(expected).unwrap(), TaskStatus::Pending);
    }
    for token in tokens {
        assert!(matches!(
            core.get_result(token).unwrap_err().kind(),
            SourceErrorKind::StaleToken { current: 1_000, .. }
        ));
    }
    // A reset also forgets a result nobody took and a continuation nobody resumed.
    core.set_result(5).unwrap();
    core.reset();
    assert_eq!(core.status(1_001).unwrap(), TaskStatus::Pending);
    assert_eq!(
        core.get_result(1_001).unwrap_err().kind(),
        SourceErrorKind::NotCompleted
    );
}

// ---------------------------------------------------------------------------------------
// The pool

#[test]
fn pool_rent_and_return_counts_rentals() {
    let pool = ValueTaskSourcePool::<u32>::new(2);
    assert_eq!(pool.capacity(), 2);
    assert_eq!(pool.rented(), 0);
    assert!(format!("{pool:?}").contains("capacity: 2"));

    let first = pool.rent();
    assert_eq!(pool.rented(), 1);
    let second = pool.rent();
    assert_eq!(pool.rented(), 2);

    let first_task = first.value_task();
    let second_task = second.value_task();
    first.set_result(1).unwrap();
    assert_eq!(
        pool.rented(),
        2,
        "a completed slot stays out until its result is taken"
    );
    assert_eq!(
        assert_ready!(spawn(first_task.into_future()).poll()).unwrap(),
        1
    );
    assert_eq!(
        pool.rented(),
        1,
        "the consumer's get_result returned the slot"
    );

    let mut awaiting = spawn(second_task.into_future());
    assert_pending!(awaiting.poll());
    second.set_result(2).unwrap();
    assert!(awaiting.is_woken());
    assert_eq!(pool.rented(), 1);
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 2);
    assert_eq!(pool.rented(), 0);
}

#[test]
fn a_returned_slot_is_rented_again_with_a_new_token() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let mut seen = Vec::new();
    for round in 0..5 {
        let producer = pool.rent();
        seen.push(producer.token());
        let value_task = producer.value_task();
        producer.set_result(round).unwrap();
        assert_eq!(
            assert_ready!(spawn(value_task.into_future()).poll()).unwrap(),
            round
        );
        assert_eq!(pool.rented(), 0);
    }
    assert_eq!(
        seen,
        [0, 1, 2, 3, 4],
        "one slot, its version bumped per rental"
    );
}

#[test]
fn renting_beyond_capacity_allocates_an_unpooled_source_that_works() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let pooled = pool.rent();
    let overflow = pool.rent();
    assert_eq!(pool.rented(), 1, "the overflow source is not the pool's");
    let pooled_task = pooled.value_task();
    let mut overflow_await = spawn(overflow.value_task().into_future());
    assert_pending!(overflow_await.poll());
    overflow.set_result(2).unwrap();
    assert!(overflow_await.is_woken());
    assert_eq!(assert_ready!(overflow_await.poll()).unwrap(), 2);
    pooled.set_result(1).unwrap();
    assert_eq!(
        assert_ready!(spawn(pooled_task.into_future()).poll()).unwrap(),
        1
    );
    assert_eq!(pool.rented(), 0);

    // A pool of capacity 0 serves every rental from overflow.
    let empty = ValueTaskSourcePool::<u32>::new(0);
    let producer = empty.rent();
    let value_task = producer.value_task();
    producer.set_result(3).unwrap();
    assert_eq!(
        assert_ready!(spawn(value_task.into_future()).poll()).unwrap(),
        3
    );
    assert_eq!(empty.rented(), 0);
}

#[test]
fn a_dropped_producer_faults_the_operation_as_abandoned() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let mut awaiting = spawn(producer.value_task().into_future());
    assert_pending!(awaiting.poll());
    drop(producer);
    assert!(
        awaiting.is_woken(),
        "nothing awaiting an abandoned operation hangs"
    );
    let error = assert_ready!(awaiting.poll()).unwrap_err();
    assert!(error.is_abandoned(), "{error}");
    assert!(
        error.to_string().contains("ValueTaskProducer was dropped"),
        "{error}"
    );
    assert_eq!(pool.rented(), 0);

    // Dropped before anyone awaited: the value task reads as faulted.
    let producer = pool.rent();
    let value_task = producer.value_task();
    drop(producer);
    assert_eq!(value_task.status(), TaskStatus::Faulted);
    assert!(assert_ready!(spawn(value_task.into_future()).poll())
        .unwrap_err()
        .is_abandoned());
    assert_eq!(pool.rented(), 0);
}

#[test]
fn a_value_task_dropped_before_its_result_returns_the_slot_once_the_producer_completes() {
    let pool = ValueTaskSourcePool::<String>::new(1);

    // Dropped while the operation runs: the producer returns the slot when it completes.
    let producer = pool.rent();
    drop(producer.value_task());
    assert_eq!(pool.rented(), 1);
    producer.set_result("nobody reads this".to_owned()).unwrap();
    assert_eq!(pool.rented(), 0);

    // Dropped after it suspended on the operation.
    let producer = pool.rent();
    let mut awaiting = spawn(producer.value_task().into_future());
    assert_pending!(awaiting.poll());
    drop(awaiting);
    assert_eq!(pool.rented(), 1);
    producer.set_result("late".to_owned()).unwrap();
    assert_eq!(pool.rented(), 0);

    // Dropped after the operation completed: the drop itself returns the slot.
    let producer = pool.rent();
    let value_task = producer.value_task();
    producer.set_result("done".to_owned()).unwrap();
    assert_eq!(pool.rented(), 1);
    drop(value_task);
    assert_eq!(pool.rented(), 0);

    // Both sides dropped without completing.
    let producer = pool.rent();
    drop(producer.value_task());
    drop(producer);
    assert_eq!(pool.rented(), 0);

    // And the slot still works.
    let producer = pool.rent();
    let value_task = producer.value_task();
    producer.set_result("again".to_owned()).unwrap();
    assert_eq!(
        assert_ready!(spawn(value_task.into_future()).poll()).unwrap(),
        "again"
    );
    assert_eq!(pool.rented(), 0);
}

#[test]
fn a_second_consumer_handle_is_refused_and_never_sees_the_next_value() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let first = pool.rent();
    let first_token = first.token();
    let consumer = first.value_task();
    // The misuse: a second value task for the same operation, kept past its end. An
    // operation has one consumer, so it is refused from the start.
    let second_handle = first.value_task();
    first.set_result(1).unwrap();
    assert_eq!(
        assert_ready!(spawn(consumer.into_future()).poll()).unwrap(),
        1
    );

    let second = pool.rent();
    assert_eq!(second.token(), first_token + 1, "the same slot, reused");
    let next = second.value_task();
    second.set_result(2).unwrap();

    assert_eq!(second_handle.status(), TaskStatus::Faulted);
    assert_eq!(
        kind_of(assert_ready!(spawn(second_handle.into_future()).poll())),
        SourceErrorKind::ConsumerAlreadyHandedOut
    );
    // The rightful consumer still gets its value, and the slot comes back.
    assert_eq!(assert_ready!(spawn(next.into_future()).poll()).unwrap(), 2);
    assert_eq!(pool.rented(), 0);
}

#[test]
fn stale_producer_after_slot_reuse_is_refused_at_the_core() {
    // Through the pool's public API a producer cannot outlive its operation's end: the slot
    // is returned only after the result was taken, which needs the operation completed,
    // which only its one producer can do (`set_*` consume it, and so does drop). So the
    // StaleToken a producer gets "if the slot moved on" is only reachable with a
    // deliberate bug (the RacyRent and ReleaseBeforeReset models). What the producer relies
    // on is `set_outcome_for`: checked here at the core.
    let core = new_core::<u32>();
    let token = core.version();
    core.set_result(1).unwrap();
    assert_eq!(core.get_result(token).unwrap().unwrap(), 1);
    let next = core.reset();
    let error = core.set_outcome_for(token, Ok(99)).unwrap_err();
    assert_eq!(
        error.kind(),
        SourceErrorKind::StaleToken {
            token,
            current: next
        }
    );
    assert_eq!(core.status(next).unwrap(), TaskStatus::Pending, "untouched");
    core.set_outcome_for(next, Ok(2)).unwrap();
    assert_eq!(core.get_result(next).unwrap().unwrap(), 2);
}

#[test]
fn pooled_operations_complete_across_threads() {
    // Consumers on a 2-worker pool, producers on 3 plain threads, a 2-slot source pool
    // (most rentals overflow): every value reaches its own consumer, every slot comes back.
    const OPERATIONS: u32 = 200;
    let workers = ThreadPool::new(2);
    let sources = ValueTaskSourcePool::<u32>::new(2);
    let mut consumers = Vec::new();
    let mut producers: [Vec<_>; 3] = Default::default();
    for n in 0..OPERATIONS {
        let producer = sources.rent();
        let value_task = producer.value_task();
        consumers.push((n, workers.spawn(async move { value_task.await })));
        producers[n as usize % 3].push((n, producer));
    }
    let completers: Vec<_> = producers
        .into_iter()
        .map(|mine| {
            thread::spawn(move || {
                for (n, producer) in mine {
                    producer.set_result(n * 10).unwrap();
                }
            })
        })
        .collect();
    for completer in completers {
        completer.join().unwrap();
    }
    for (n, consumer) in consumers {
        assert_eq!(consumer.wait().unwrap(), n * 10);
    }
    assert_eq!(sources.rented(), 0);
    workers.shutdown();
}

#[test]
fn pooled_slots_are_reused_across_threads_without_double_rent() {
    // Four threads rent, complete and consume in a loop on a 2-slot pool; a double rent
    // would show as a completion error or a wrong value.
    let sources = ValueTaskSourcePool::<u64>::new(2);
    let threads: Vec<_> = (0..4u64)
        .map(|id| {
            let sources = sources.clone();
            thread::spawn(move || {
                for round in 0..2_000u64 {
                    let producer = sources.rent();
                    let value_task = producer.value_task();
                    let expected = id * 1_000_000 + round;
                    producer.set_result(expected).unwrap();
                    let outcome = assert_ready!(spawn(value_task.into_future()).poll());
                    assert_eq!(outcome.unwrap(), expected);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(sources.rented(), 0);
}

// ---------------------------------------------------------------------------------------
// as_task() and preserve()

#[test]
fn as_task_of_a_pooled_operation_is_a_multi_await_task() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let task = producer.value_task().as_task();
    assert_eq!(task.status(), TaskStatus::Pending);
    let again = task.clone();
    let mut awaiting = spawn(again.clone());
    assert_pending!(awaiting.poll());

    producer.set_result(8).unwrap();
    assert!(awaiting.is_woken());
    assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 8);
    assert_eq!(task.wait().unwrap(), 8);
    assert_eq!(again.wait().unwrap(), 8);
    assert_eq!(assert_ready!(spawn(task.clone()).poll()).unwrap(), 8);
    assert_eq!(pool.rented(), 0, "the converting task took the result");
}

#[test]
fn as_task_of_a_ready_value_or_a_task_runs_nothing() {
    // A cached value converts to the cached task.
    let task = ValueTask::<i32>::from_result(3).as_task();
    assert_eq!(task.id(), Task::from_result(3i32).id());
    assert_eq!(task.outcome().unwrap().unwrap(), 3);

    let error = ValueTask::<u32>::from_error(TaskError::canceled()).as_task();
    assert_eq!(error.status(), TaskStatus::Canceled);

    let source = TaskCompletionSource::<u32>::new();
    let original = source.task();
    let converted = ValueTask::<_>::from_task(original.clone()).as_task();
    assert_eq!(converted.id(), original.id(), "the same task, not a copy");
    source.set_result(4).unwrap();
    assert_eq!(converted.wait().unwrap(), 4);
}

#[test]
fn as_task_captures_no_context() {
    // Converted on a ui thread, completed elsewhere: the task completes without the ui
    // pumping, so a blocking wait on the ui thread is fine.
    let ui = SingleThreadContext::new("vt-ui-as-task");
    let core = new_core::<u32>();
    let task = ui.enter(|| value_task(&core).as_task()).unwrap();
    let completer = {
        let core = core.clone();
        thread::spawn(move || core.set_result(30).unwrap())
    };
    completer.join().unwrap();
    assert_eq!(ui.enter(|| task.wait()).unwrap().unwrap(), 30);
    assert_eq!(ui.run_until_idle().unwrap(), 0);
}

#[test]
fn as_task_of_a_stale_value_task_is_faulted_with_the_typed_error() {
    let core = new_core::<u32>();
    let stale = value_task(&core);
    core.reset();
    let task = stale.as_task();
    let error = task.wait().unwrap_err();
    assert_eq!(
        source_error(error.task_error().unwrap()).kind(),
        SourceErrorKind::StaleToken {
            token: 0,
            current: 1
        }
    );
}

#[test]
fn preserve_turns_a_source_into_a_task_and_leaves_the_others_alone() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let preserved = producer.value_task().preserve();
    assert!(format!("{preserved:?}").contains(r#"holds: "task""#));
    assert_eq!(preserved.status(), TaskStatus::Pending);
    // A preserved value task converts to its task for free, and the task is multi-await.
    let task = preserved.as_task();
    let clone = task.clone();
    producer.set_result(15).unwrap();
    assert_eq!(task.wait().unwrap(), 15);
    assert_eq!(clone.wait().unwrap(), 15);
    assert_eq!(pool.rented(), 0);

    let ready = ValueTask::<u32>::from_result(1).preserve();
    assert!(format!("{ready:?}").contains(r#"holds: "ready""#));
    assert_eq!(assert_ready!(spawn(ready.into_future()).poll()).unwrap(), 1);

    let source = TaskCompletionSource::<u32>::new();
    let over_task = ValueTask::<_>::from_task(source.task()).preserve();
    assert!(format!("{over_task:?}").contains(r#"holds: "task""#));
    source.set_result(2).unwrap();
    assert_eq!(
        assert_ready!(spawn(over_task.into_future()).poll()).unwrap(),
        2
    );
}

#[test]
fn a_preserved_value_task_can_be_awaited_from_a_spawned_task() {
    let workers = ThreadPool::new(1);
    let core = new_core::<u32>();
    let preserved = value_task(&core).preserve();
    let task = workers.spawn(async move { preserved.await });
    core.set_result(40).unwrap();
    assert_eq!(task.wait().unwrap(), 40);
    workers.shutdown();
}

// ---------------------------------------------------------------------------------------
// Awaited in spawned tasks, end to end

#[test]
fn a_ui_task_awaits_a_pooled_operation_completed_by_another_ui_job() {
    let ui = SingleThreadContext::new("vt-ui-loop");
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let value_task = producer.value_task();
    let consumer = ui.spawn(async move { value_task.await });
    let completer = ui.spawn(async move {
        producer.set_result(50)?;
        Ok::<_, TaskError>(())
    });
    let value = ui.block_on(async move {
        completer.await?;
        consumer.await
    });
    assert_eq!(value.unwrap(), 50);
    assert_eq!(pool.rented(), 0);
}

#[test]
fn force_yielding_on_a_completed_value_task_still_delivers() {
    let ui = SingleThreadContext::new("vt-ui-yield");
    ui.enter(|| {
        let core = new_core::<u32>();
        core.set_result(60).unwrap();
        let mut awaiting = spawn(value_task(&core).configure_await_with(
            ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT
                | ConfigureAwaitOptions::FORCE_YIELDING,
        ));
        assert_pending!(awaiting.poll());
        assert!(!awaiting.is_woken());
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert!(awaiting.is_woken());
        assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 60);
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Regression tests for runtime bugs this file found: an extra handle to a pooled operation
// used to rob its consumer, and an early get_result used to leak the slot.

#[test]
fn a_refused_second_await_of_a_pooled_operation_does_not_rob_the_first() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let mut first = spawn(producer.value_task().into_future());
    assert_pending!(first.poll());

    // The misuse the docs call out: a second await of the same operation. It is refused
    // with a typed error, as it should be...
    let mut second = spawn(producer.value_task().into_future());
    assert_eq!(
        kind_of(assert_ready!(second.poll())),
        SourceErrorKind::ConsumerAlreadyHandedOut
    );
    drop(second);

    // ...but the first, rightful await must still get the value.
    producer.set_result(7).unwrap();
    assert!(first.is_woken());
    assert_eq!(assert_ready!(first.poll()).unwrap(), 7);
    assert_eq!(pool.rented(), 0);
}

#[test]
fn dropping_an_unused_extra_value_task_does_not_rob_the_consumer() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let consumer = producer.value_task();
    drop(producer.value_task());
    producer.set_result(7).unwrap();
    assert_eq!(
        assert_ready!(spawn(consumer.into_future()).poll()).unwrap(),
        7
    );
    assert_eq!(pool.rented(), 0);
}

#[test]
fn an_early_get_result_does_not_leak_the_pooled_slot() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let producer = pool.rent();
    let mut awaiter = producer.value_task().get_awaiter();
    assert_eq!(kind_of(awaiter.get_result()), SourceErrorKind::NotCompleted);
    drop(awaiter);
    producer.set_result(1).unwrap();
    assert_eq!(pool.rented(), 0, "the slot must come back to the pool");
}
