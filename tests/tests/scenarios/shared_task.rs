//! # One task, awaited many times and shared
//!
//! **.NET.** A `Task<T>` is the promise of one outcome, and any number of parties may await
//! it — at the same time, or long after it completed. Everyone gets the same result; a
//! faulted task rethrows *the same exception object* at every await. Its status moves once,
//! from pending to RanToCompletion, Faulted or Canceled, and faulted wins over canceled
//! when both happened. A `TaskCompletionSource` completes it by hand: `SetResult` on a
//! completed task throws, `TrySetResult` returns false, and among completers racing on
//! several threads exactly one wins.
//!
//! **taskcheck.** `Task<T>` is a cheap `Clone` handle; every clone awaits the same
//! completion core and gets a clone of the same `Result<T, TaskError>` — an `Arc` value is
//! the same allocation for everyone, and a `TaskError` shares its faults, so every awaiter
//! holds the very same error object. `set_*` on a completed task is a `CompletionError`
//! naming the task, its status and the fix (`try_set_*`); `try_set_*` returns whether it
//! won, exactly one racer wins, and a loser returns only once the task is observably
//! complete.

use std::error::Error;
use std::sync::{Arc, Barrier};
use std::thread;

use taskcheck::{start, Task, TaskCompletionSource, TaskError, TaskStatus, ThreadPool};
use taskcheck_tests::{poll_once, Boom, CountingWaker, Latch};
use tokio_test::{assert_pending, assert_ready, task};

/// The address of a task error's first fault: equal addresses mean the very same object.
fn fault_address(error: &TaskError) -> *const () {
    let fault: &(dyn Error + Send + Sync) = error.errors().next().expect("a faulted error");
    fault as *const (dyn Error + Send + Sync) as *const ()
}

/// Three awaits suspend on one pending task; one completion wakes each exactly once, and
/// each gets the value — the same `Arc`, not a copy.
#[test]
fn every_suspended_awaiter_is_woken_once_and_gets_the_same_value() {
    let source = TaskCompletionSource::<Arc<String>>::new();
    let shared = source.task();
    let mut awaiters: Vec<_> = (0..3).map(|_| task::spawn(shared.clone())).collect();
    for awaiter in &mut awaiters {
        assert_pending!(awaiter.poll());
        // The mock task's own reference, plus the one its suspended await registered.
        assert_eq!(awaiter.waker_ref_count(), 2);
    }
    assert_eq!(shared.status(), TaskStatus::Pending);

    let value = Arc::new("{\"answer\":42}".to_owned());
    source.set_result(value.clone()).unwrap();

    assert_eq!(shared.status(), TaskStatus::Succeeded);
    for awaiter in &mut awaiters {
        assert!(awaiter.is_woken());
        // The runtime consumed its only waker to wake: a second wake cannot come.
        assert_eq!(awaiter.waker_ref_count(), 1);
        let got = assert_ready!(awaiter.poll()).unwrap();
        assert!(Arc::ptr_eq(&got, &value));
    }
}

/// Clones awaited concurrently from eight pool tasks, then fresh awaits long after the
/// completion: all get the same value, and the late ones never suspend.
#[test]
fn clones_awaited_concurrently_and_later_all_get_the_same_value() {
    const AWAITERS: usize = 8;
    let pool = ThreadPool::with_name("shared", 4);
    let source = TaskCompletionSource::<Arc<String>>::new();
    let shared = source.task();
    let started = Latch::new(AWAITERS);
    let awaiters: Vec<Task<Arc<String>>> = (0..AWAITERS)
        .map(|_| {
            let shared = shared.clone();
            let started = started.clone();
            pool.spawn(async move {
                started.count_down();
                shared.await
            })
        })
        .collect();
    // Every awaiter is running (most are suspended on the task by now; the rest will find
    // it complete — the outcome is the same either way).
    started.wait();
    let value = Arc::new("shared".to_owned());
    source.set_result(value.clone()).unwrap();

    for awaiter in &awaiters {
        assert!(Arc::ptr_eq(&awaiter.wait().unwrap(), &value));
    }

    // Later: a fresh await of a completed task is ready at its first poll, with no wake.
    let mut late = task::spawn(shared.clone());
    let got = assert_ready!(late.poll()).unwrap();
    assert!(Arc::ptr_eq(&got, &value));
    assert!(!late.is_woken());
    assert_eq!(late.waker_ref_count(), 1);

    // And an async method awaiting it runs to completion inside `start`.
    let late_method = start(async move {
        let value = shared.await?;
        Ok(value)
    });
    assert_eq!(late_method.status(), TaskStatus::Succeeded);
    assert!(Arc::ptr_eq(&late_method.wait().unwrap(), &value));
}

/// A faulted task gives every awaiter — suspended before, awaiting concurrently from the
/// pool, awaiting after, blocking, or just reading the outcome — the very same error.
#[test]
fn a_faulted_task_gives_every_awaiter_the_very_same_error() {
    let pool = ThreadPool::with_name("shared", 2);
    let source = TaskCompletionSource::<u32>::new();
    let shared = source.task();
    let mut suspended = task::spawn(shared.clone());
    assert_pending!(suspended.poll());
    let from_pool: Vec<Task<TaskError>> = (0..4)
        .map(|_| {
            let shared = shared.clone();
            pool.spawn(async move { Ok(shared.await.expect_err("the task faults")) })
        })
        .collect();

    source.set_exception(Boom("disk full")).unwrap();

    let mut errors = vec![assert_ready!(suspended.poll()).unwrap_err()];
    errors.extend(from_pool.iter().map(|t| t.wait().unwrap()));
    errors.push(shared.wait().unwrap_err().task_error().unwrap().clone());
    errors.push(shared.outcome().unwrap().unwrap_err());
    let mut later = task::spawn(shared.clone());
    errors.push(assert_ready!(later.poll()).unwrap_err());

    assert_eq!(errors.len(), 8);
    let first = fault_address(&errors[0]);
    for error in &errors {
        assert!(error.is_faulted());
        assert_eq!(error.downcast_ref::<Boom>(), Some(&Boom("disk full")));
        assert_eq!(fault_address(error), first, "one error object, shared");
    }
    assert_eq!(shared.status(), TaskStatus::Faulted);
}

/// Status moves from `Pending` to exactly one terminal state, whether a completion source
/// or a task body decides it; already-complete tasks are born terminal.
#[test]
fn status_moves_once_from_pending_to_succeeded_faulted_or_canceled() {
    // By hand.
    let succeeded = TaskCompletionSource::<u32>::new();
    let faulted = TaskCompletionSource::<u32>::new();
    let canceled = TaskCompletionSource::<u32>::new();
    let tasks = [succeeded.task(), faulted.task(), canceled.task()];
    for task in &tasks {
        assert_eq!(task.status(), TaskStatus::Pending);
        assert!(!task.is_completed());
        assert!(task.outcome().is_none());
    }
    succeeded.set_result(1).unwrap();
    faulted.set_exception(Boom("bad input")).unwrap();
    canceled.set_canceled().unwrap();
    let statuses = tasks.each_ref().map(Task::status);
    assert_eq!(
        statuses,
        [
            TaskStatus::Succeeded,
            TaskStatus::Faulted,
            TaskStatus::Canceled
        ]
    );
    assert!(tasks[0].is_completed_successfully());
    assert!(tasks[1].is_faulted() && tasks[1].is_completed());
    assert!(tasks[2].is_canceled() && tasks[2].is_completed());

    // By a task body: `?` on a typed error faults; ending with a canceled error cancels.
    let pool = ThreadPool::with_name("status", 1);
    let release = TaskCompletionSource::<()>::new();
    let bodies: [Task<u32>; 3] = [
        pool.spawn({
            let release = release.task();
            async move {
                release.await?;
                Ok(7)
            }
        }),
        pool.spawn({
            let release = release.task();
            async move {
                release.await?;
                Err::<(), _>(Boom("parse error"))?;
                Ok(0)
            }
        }),
        pool.spawn({
            let release = release.task();
            async move {
                release.await?;
                Err(TaskError::canceled())
            }
        }),
    ];
    for body in &bodies {
        assert_eq!(body.status(), TaskStatus::Pending);
    }
    release.set_result(()).unwrap();
    let statuses = bodies.each_ref().map(|body| {
        let _ = body.wait();
        body.status()
    });
    assert_eq!(
        statuses,
        [
            TaskStatus::Succeeded,
            TaskStatus::Faulted,
            TaskStatus::Canceled
        ]
    );

    // Born complete.
    assert_eq!(Task::from_result(3).status(), TaskStatus::Succeeded);
    assert_eq!(Task::completed().status(), TaskStatus::Succeeded);
    assert_eq!(
        Task::<u32>::from_error(TaskError::from_error(Boom("x"))).status(),
        TaskStatus::Faulted
    );
    assert_eq!(Task::<u32>::canceled().status(), TaskStatus::Canceled);
}

/// Faulted wins over canceled: an outcome that carries a cancellation *and* a real error is
/// a fault. Here a body awaits one canceled and one faulted task and reports both errors,
/// as a `WhenAll` would: the task is Faulted, not Canceled. A body whose only error is the
/// cancellation ends Canceled.
#[test]
fn faulted_wins_over_canceled() {
    let pool = ThreadPool::with_name("both", 1);
    let canceled = Task::<u32>::canceled();
    let faulted = Task::<u32>::from_error(TaskError::from_error(Boom("real failure")));

    let both = pool.spawn({
        let (canceled, faulted) = (canceled.clone(), faulted.clone());
        async move {
            let errors: Vec<Box<dyn Error + Send + Sync>> = [canceled.await, faulted.await]
                .into_iter()
                .filter_map(Result::err)
                .map(Box::from)
                .collect();
            Err::<u32, _>(TaskError::from_errors(errors))
        }
    });
    let only_canceled = pool.spawn(async move {
        canceled.await?;
        Ok(0)
    });

    let error = both.wait().unwrap_err().task_error().unwrap().clone();
    assert_eq!(both.status(), TaskStatus::Faulted);
    assert!(error.is_faulted() && !error.is_canceled());
    let messages: Vec<String> = error.errors().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0], "the task was canceled");
    assert!(messages[1].contains("real failure"), "{messages:?}");

    assert!(only_canceled
        .wait()
        .unwrap_err()
        .task_error()
        .unwrap()
        .is_canceled());
    assert_eq!(only_canceled.status(), TaskStatus::Canceled);
}

/// Completing twice is a `CompletionError` that names the task and its status and says
/// what to use instead; the first outcome stands. The `try_set_*` forms just say "lost".
#[test]
fn completing_twice_is_an_error_that_says_what_to_do() {
    let source = TaskCompletionSource::<u32>::new();
    let task = source.task();
    source.set_result(1).unwrap();

    let error = source.set_result(2).unwrap_err();
    println!("{error}");
    assert_eq!(error.task(), task.id());
    assert_eq!(error.status(), TaskStatus::Succeeded);
    let message = error.to_string();
    assert!(message.contains(&task.id().to_string()), "{message}");
    assert!(message.contains("already complete"), "{message}");
    assert!(message.contains("Succeeded"), "{message}");
    assert!(message.contains("try_set_"), "{message}");

    assert!(source.set_exception(Boom("late")).is_err());
    assert!(source.set_canceled().is_err());
    assert!(!source.try_set_result(3));
    assert!(!source.try_set_exception(Boom("late")));
    assert!(!source.try_set_canceled());
    assert_eq!(task.outcome().unwrap().unwrap(), 1);

    // The status in the error is the one that stood.
    let faulted = TaskCompletionSource::<u32>::new();
    faulted.set_exception(Boom("first")).unwrap();
    assert_eq!(
        faulted.set_canceled().unwrap_err().status(),
        TaskStatus::Faulted
    );
}

/// Six threads race `try_set_result` / `try_set_exception` / `try_set_canceled` on one
/// source, 200 times: exactly one wins each round, the outcome is the winner's, every loser
/// sees the task complete when its call returns, and an await suspended before the race is
/// woken exactly once.
#[test]
fn racing_completers_have_exactly_one_winner() {
    const RACERS: usize = 6;
    for _round in 0..200 {
        let source = TaskCompletionSource::<usize>::new();
        let task = source.task();
        let counting = CountingWaker::new();
        let waker = CountingWaker::waker(&counting);
        let mut suspended = task.clone();
        assert!(poll_once(&mut suspended, &waker).is_pending());

        let start_line = Barrier::new(RACERS);
        let winners: Vec<usize> = thread::scope(|scope| {
            let racers: Vec<_> = (0..RACERS)
                .map(|racer| {
                    let (source, task, start_line) = (&source, &task, &start_line);
                    scope.spawn(move || {
                        start_line.wait();
                        let won = match racer % 3 {
                            0 => source.try_set_result(racer),
                            1 => source.try_set_exception(Boom("racer")),
                            _ => source.try_set_canceled(),
                        };
                        // Won or lost, the task is observably complete now.
                        assert!(task.is_completed());
                        won.then_some(racer)
                    })
                })
                .collect();
            racers
                .into_iter()
                .filter_map(|racer| racer.join().unwrap())
                .collect()
        });

        assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
        let winner = winners[0];
        let expected = match winner % 3 {
            0 => TaskStatus::Succeeded,
            1 => TaskStatus::Faulted,
            _ => TaskStatus::Canceled,
        };
        assert_eq!(task.status(), expected);
        if expected == TaskStatus::Succeeded {
            assert_eq!(task.outcome().unwrap().unwrap(), winner);
        }
        assert_eq!(counting.wakes(), 1);
        let outcome = assert_ready!(poll_once(&mut suspended, &waker));
        assert_eq!(
            outcome.map_err(|e| e.status()),
            task.outcome().unwrap().map_err(|e| e.status())
        );
    }
}

/// An await that is dropped while suspended withdraws its continuation: the runtime lets
/// go of the waker, and the later completion wakes nobody.
#[test]
fn an_await_that_gives_up_leaves_nothing_behind() {
    let source = TaskCompletionSource::<u32>::new();
    let counting = CountingWaker::new();
    let waker = CountingWaker::waker(&counting);
    let mut await_in_progress = source.task();
    assert!(poll_once(&mut await_in_progress, &waker).is_pending());
    // `counting`, `waker`, and the continuation's clone.
    assert_eq!(Arc::strong_count(&counting), 3);

    drop(await_in_progress);
    assert_eq!(Arc::strong_count(&counting), 2);

    source.set_result(1).unwrap();
    assert_eq!(counting.wakes(), 0);
}
