//! # `TaskCompletionSource`: abandoned sources and where continuations run
//!
//! **.NET.** A `TaskCompletionSource` that is never completed — an exception path forgot
//! it, an event never fired — leaves its task pending forever, and everyone awaiting it
//! hangs silently. And by default, `SetResult` runs the awaiting code *synchronously, inside
//! the call*, on the completing thread (when the await captured nothing, or captured the
//! context that thread is already on): the completer is held up, maybe while holding a lock,
//! by whatever the awaiter does next. `TaskCreationOptions.RunContinuationsAsynchronously`
//! makes the completion queue the continuations instead. When several awaits are
//! registered they start in registration order: .NET queues all but the first, then runs
//! the first inline — or, when it cannot run inline, queues them all in order.
//!
//! **taskcheck.** A source dropped without completing its task faults the task as
//! *abandoned* (`TaskError::is_abandoned`), with a message naming where the source was
//! created: nothing awaiting it hangs. By default the first continuation runs inline on the
//! completing thread — `set_result` returns with the awaiting task already finished;
//! `RUN_CONTINUATIONS_ASYNCHRONOUSLY` queues it (to the default pool when it captured
//! nothing, to its context when it captured one) and `set_result` returns at once. Several
//! continuations start in registration order either way.

use std::thread;

use taskcheck::{
    start, SingleThreadContext, TaskCompletionSource, TaskCreationOptions, TaskError, TaskStatus,
    ThreadPool,
};
use taskcheck_tests::{on_thread, Gate, Log, Whereabouts};
use tokio_test::{assert_pending, assert_ready, task};

/// A source dropped unset: a suspended await is woken once and gets the abandoned fault,
/// a pool task awaiting it and a thread blocked on it get the same, and the message says
/// which source, created where, was dropped.
#[test]
fn a_dropped_source_abandons_its_task_so_nothing_hangs() {
    let pool = ThreadPool::with_name("abandon", 1);
    let source = TaskCompletionSource::<u32>::new();
    let abandoned = source.task();
    let mut suspended = task::spawn(abandoned.clone());
    assert_pending!(suspended.poll());
    let from_pool = pool.spawn({
        let abandoned = abandoned.clone();
        async move { Ok::<_, TaskError>(abandoned.await.expect_err("abandoned")) }
    });

    let blocked = thread::scope(|scope| {
        let blocked = scope.spawn(|| abandoned.wait());
        drop(source);
        blocked.join().unwrap()
    });

    assert!(suspended.is_woken());
    assert_eq!(suspended.waker_ref_count(), 1);
    let errors = [
        assert_ready!(suspended.poll()).unwrap_err(),
        from_pool.wait().unwrap(),
        blocked.unwrap_err().task_error().unwrap().clone(),
    ];
    for error in &errors {
        assert!(error.is_abandoned() && error.is_faulted(), "{error}");
    }
    assert_eq!(abandoned.status(), TaskStatus::Faulted);
    let message = errors[0].to_string();
    println!("{message}");
    assert!(message.contains(&abandoned.id().to_string()), "{message}");
    assert!(message.contains("TaskCompletionSource"), "{message}");
    assert!(
        message.contains("dropped without completing it"),
        "{message}"
    );
    assert!(
        message.contains("completion_source.rs"),
        "names where: {message}"
    );
}

/// Dropping a source after it completed its task changes nothing.
#[test]
fn dropping_a_completed_source_changes_nothing() {
    let source = TaskCompletionSource::<u32>::new();
    let task = source.task();
    source.set_result(3).unwrap();
    drop(source);
    assert_eq!(task.status(), TaskStatus::Succeeded);
    assert_eq!(task.wait().unwrap(), 3);
}

/// By default the continuation of a task that captured nothing runs inline, inside
/// `set_result`, on the completing thread: when `set_result` returns, the awaiting method
/// has finished, and it ran on "completer".
#[test]
fn by_default_the_continuation_runs_inline_on_the_completing_thread() {
    let source = TaskCompletionSource::<u32>::new();
    // An async method called on a plain thread: its await captures nothing.
    let method = start({
        let awaited = source.task();
        async move {
            let value = awaited.await?;
            Ok::<_, TaskError>((value, Whereabouts::here()))
        }
    });
    assert_eq!(method.status(), TaskStatus::Pending);

    let finished_inside_set_result = on_thread("completer", || {
        source.set_result(7).unwrap();
        method.is_completed()
    });

    assert!(finished_inside_set_result);
    let (value, ran_at) = method.wait().unwrap();
    assert_eq!(value, 7);
    assert_eq!(ran_at.thread_name.as_deref(), Some("completer"));
    assert_eq!(ran_at.context, None);
}

/// With `RUN_CONTINUATIONS_ASYNCHRONOUSLY` the same continuation is queued to the default
/// pool: `set_result` returns while it has not finished (it is held on a gate only the
/// completer opens, so this is certain, not timing), and it ran on a pool thread.
#[test]
fn run_continuations_asynchronously_queues_it_instead() {
    let source = TaskCompletionSource::<u32>::with_options(
        TaskCreationOptions::RUN_CONTINUATIONS_ASYNCHRONOUSLY,
    );
    let hold = Gate::new();
    let method = start({
        let (awaited, hold) = (source.task(), hold.clone());
        async move {
            let value = awaited.await?;
            let ran_at = Whereabouts::here();
            hold.wait();
            Ok::<_, TaskError>((value, ran_at))
        }
    });

    let finished_inside_set_result = on_thread("completer", || {
        source.set_result(7).unwrap();
        let finished = method.is_completed();
        hold.open();
        finished
    });

    assert!(!finished_inside_set_result);
    let (value, ran_at) = method.wait().unwrap();
    assert_eq!(value, 7);
    assert!(
        ran_at.thread_name_starts_with("taskcheck-pool"),
        "{ran_at:?}"
    );
    assert_eq!(ran_at.context_name.as_deref(), Some("taskcheck-pool"));
}

/// The difference on one thread, counted in jobs: a UI task awaits a source that a posted
/// UI job completes. By default its rest runs inline in that job (two jobs in all); with
/// `RUN_CONTINUATIONS_ASYNCHRONOUSLY` it is queued as a job of its own (three).
#[test]
fn run_continuations_asynchronously_costs_one_job_on_the_ui() {
    on_thread("ui", || {
        for (options, jobs) in [
            (TaskCreationOptions::NONE, 2),
            (TaskCreationOptions::RUN_CONTINUATIONS_ASYNCHRONOUSLY, 3),
        ] {
            let ui = SingleThreadContext::new("ui");
            let source = TaskCompletionSource::<u32>::with_options(options);
            // A UI task whose whole body is awaiting the source (a `Task` is the future that
            // awaits it).
            let handler = ui.spawn(source.task());
            ui.post(move || source.set_result(1).unwrap()).unwrap();
            assert_eq!(ui.run_until_idle(), Ok(jobs), "{options:?}");
            assert_eq!(handler.outcome().unwrap().unwrap(), 1);
        }
    });
}

/// Three UI tasks await one source: whoever completes it, with or without
/// `RUN_CONTINUATIONS_ASYNCHRONOUSLY`, they start in registration order. From another
/// thread all three are queued (three jobs); from a UI job, by default, the first runs
/// inline inside that job and the other two are queued behind it (six jobs in all: three
/// first polls, the completing job, two continuations); asynchronously, all three are
/// queued (seven).
#[test]
fn several_awaits_start_in_registration_order() {
    on_thread("ui", || {
        for options in [
            TaskCreationOptions::NONE,
            TaskCreationOptions::RUN_CONTINUATIONS_ASYNCHRONOUSLY,
        ] {
            let asynchronously = options != TaskCreationOptions::NONE;
            for completed_on_ui in [false, true] {
                let ui = SingleThreadContext::new("ui");
                let source = TaskCompletionSource::<u32>::with_options(options);
                let order = Log::new();
                for n in 1..=3 {
                    let (awaited, order) = (source.task(), order.clone());
                    drop(ui.spawn(async move {
                        awaited.await?;
                        order.push(n);
                        Ok::<_, TaskError>(())
                    }));
                }
                let case = format!("{options:?}, completed on the UI: {completed_on_ui}");
                if completed_on_ui {
                    ui.post(move || source.set_result(0).unwrap()).unwrap();
                    let jobs = if asynchronously { 7 } else { 6 };
                    assert_eq!(ui.run_until_idle(), Ok(jobs), "{case}");
                } else {
                    assert_eq!(ui.run_until_idle(), Ok(3), "{case}");
                    on_thread("completer", || source.set_result(0).unwrap());
                    assert_eq!(ui.run_until_idle(), Ok(3), "{case}");
                }
                assert_eq!(order.snapshot(), [1, 2, 3], "{case}");
            }
        }
    });
}

/// `set_exception` with a canceled `TaskError` cancels the task. (.NET's
/// `SetException(new OperationCanceledException())` faults it; in Rust the outcome's kind
/// is explicit, so taskcheck takes it at its word — documented on `set_exception`.)
#[test]
fn set_exception_with_a_canceled_error_cancels() {
    let source = TaskCompletionSource::<u32>::new();
    source.set_exception(TaskError::canceled()).unwrap();
    assert_eq!(source.task().status(), TaskStatus::Canceled);
}
