//! # Contexts that are gone, and who may pump one
//!
//! **.NET.** Work posted to a `SynchronizationContext` whose message loop has ended (a
//! closed window, a finished request) is silently dropped, and whatever awaited it hangs.
//! A custom `TaskScheduler` that is disposed throws at `QueueTask`. And only a UI thread may
//! run its own message loop.
//!
//! **taskcheck.** A context refuses work after `shutdown` (or drop) and says so: `try_spawn`
//! returns a `SpawnError` whose message names the context and what to do; `spawn` returns a
//! task already faulted with that error. Work queued before a pool's shutdown still runs
//! (the pool drains). A task whose next poll can no longer run — its context refused the
//! continuation, or was dropped with it still queued — faults as *abandoned*, with a message
//! naming the context, so nobody awaiting it hangs. Only a single-thread context's owner
//! thread may pump it; any other thread gets a `PumpError` naming both threads.

use std::thread;

use taskcheck::{
    SingleThreadContext, SpawnError, Task, TaskCompletionSource, TaskError, TaskStatus, ThreadPool,
};
use taskcheck_tests::{on_thread, Counter};

/// `try_spawn` on a pool that was shut down: an error at the call, saying which pool and
/// what to do. A context handle that outlived its pool refuses the same way.
#[test]
fn try_spawn_on_a_shut_down_pool_says_what_to_do() {
    let pool = ThreadPool::with_name("closed", 1);
    let handle = pool.context();
    pool.shutdown();

    let error = pool.try_spawn(async { Ok::<_, TaskError>(1) }).unwrap_err();
    let message = error.to_string();
    println!("{message}");
    assert!(message.contains("thread pool 'closed'"), "{message}");
    assert!(message.contains(&handle.id().to_string()), "{message}");
    assert!(message.contains("shut down"), "{message}");
    assert!(message.contains("spawn onto a running pool"), "{message}");

    drop(pool);
    assert_eq!(
        handle
            .try_spawn(async { Ok::<_, TaskError>(1) })
            .unwrap_err(),
        error
    );
    assert!(handle.post(|| ()).is_err());
}

/// `spawn` on a pool that was shut down: a task that is already faulted with the
/// `SpawnError`, so the mistake surfaces wherever the task is awaited.
#[test]
fn spawn_on_a_shut_down_pool_gives_a_faulted_task() {
    let pool = ThreadPool::with_name("closed", 1);
    pool.shutdown();
    let ran = Counter::new();
    let task = pool.spawn({
        let ran = ran.clone();
        async move {
            ran.bump();
            Ok::<_, TaskError>(1)
        }
    });
    assert_eq!(task.status(), TaskStatus::Faulted);
    let error = task.wait().unwrap_err();
    let spawn_error = error.task_error().unwrap().downcast_ref::<SpawnError>();
    assert!(spawn_error.is_some(), "{error}");
    assert!(
        error.to_string().contains("thread pool 'closed'"),
        "{error}"
    );
    assert_eq!(ran.get(), 0);
}

/// Work queued before the shutdown still runs: dropping the pool drains its queues and
/// joins its workers, so every task is complete when the drop returns.
#[test]
fn work_queued_before_shutdown_still_runs() {
    let pool = ThreadPool::with_name("draining", 1);
    let ran = Counter::new();
    let tasks: Vec<Task<usize>> = (0..5)
        .map(|i| {
            let ran = ran.clone();
            pool.spawn(async move {
                ran.bump();
                Ok(i)
            })
        })
        .collect();
    drop(pool);
    assert_eq!(ran.get(), 5);
    for (i, task) in tasks.iter().enumerate() {
        assert_eq!(task.outcome().unwrap().unwrap(), i);
    }
}

/// A pool task suspends on a source, and the pool is dropped. When the source completes,
/// the task's next poll is refused by the gone pool: the task faults as abandoned, with a
/// message naming the pool and the fix, instead of hanging whoever awaits it.
#[test]
fn a_task_whose_pool_is_gone_before_it_resumes_is_abandoned() {
    let pool = ThreadPool::with_name("gone", 1);
    let source = TaskCompletionSource::<u32>::new();
    let resumed = Counter::new();
    let task = pool.spawn({
        let (awaited, resumed) = (source.task(), resumed.clone());
        async move {
            let value = awaited.await?;
            resumed.bump();
            Ok::<_, TaskError>(value)
        }
    });
    // The drain runs the first poll, which suspends capturing the pool.
    drop(pool);
    assert_eq!(task.status(), TaskStatus::Pending);

    source.set_result(1).unwrap();

    assert_eq!(resumed.get(), 0);
    let error = task.wait().unwrap_err();
    let error = error.task_error().unwrap();
    println!("{error}");
    assert!(error.is_abandoned(), "{error}");
    let message = error.to_string();
    assert!(message.contains("thread pool 'gone'"), "{message}");
    assert!(message.contains("keep the context alive"), "{message}");
}

/// A single-thread context owned by the calling thread and dropped with a task still
/// queued: nobody will pump it again, so the task faults as abandoned, naming the context.
#[test]
fn a_task_queued_on_a_dropped_ui_context_is_abandoned() {
    let ui = SingleThreadContext::new("ui");
    let ran = Counter::new();
    let task = ui.spawn({
        let ran = ran.clone();
        async move {
            ran.bump();
            Ok::<_, TaskError>(1)
        }
    });
    drop(ui);

    assert_eq!(ran.get(), 0);
    let error = task.wait().unwrap_err();
    assert!(error.task_error().unwrap().is_abandoned(), "{error}");
    assert!(
        error.to_string().contains("single-thread context 'ui'"),
        "{error}"
    );
}

/// A context with a dedicated thread drains its queue before the thread exits: dropping
/// it runs everything posted, then refuses more.
#[test]
fn a_dedicated_context_drains_before_its_thread_exits() {
    let ui = SingleThreadContext::spawn_thread("ui-loop");
    let handle = ui.context();
    let ran = Counter::new();
    let tasks: Vec<Task<()>> = (0..5)
        .map(|_| {
            let ran = ran.clone();
            ui.spawn(async move {
                ran.bump();
                Ok(())
            })
        })
        .collect();
    drop(ui);
    assert_eq!(ran.get(), 5);
    assert!(tasks.iter().all(|t| t.status() == TaskStatus::Succeeded));
    let error = handle.post(|| ()).unwrap_err();
    assert!(error.to_string().contains("'ui-loop'"), "{error}");
}

/// Only the owner thread may pump a single-thread context. Another thread that tries
/// `run_until_idle` or `enter` gets a `PumpError` naming the context, the owner, itself,
/// and what to do instead; posting from there is fine.
#[test]
fn only_the_owner_may_pump_a_single_thread_context() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let (pumped, entered) = thread::scope(|scope| {
            thread::Builder::new()
                .name("intruder".to_owned())
                .spawn_scoped(scope, || {
                    ui.post(|| ()).unwrap();
                    (ui.run_until_idle(), ui.enter(|| ()))
                })
                .unwrap()
                .join()
                .unwrap()
        });
        let error = pumped.unwrap_err();
        let message = error.to_string();
        println!("{message}");
        for needle in [
            "single-thread context 'ui'",
            "belongs to thread 'ui'",
            "thread 'intruder' tried",
            "post or spawn",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from: {message}"
            );
        }
        assert_eq!(entered.unwrap_err(), error);
        // The owner pumps the job the intruder posted.
        assert_eq!(ui.run_until_idle(), Ok(1));
    });

    // A dedicated thread owns its context: the creating thread may not pump it either.
    let ui = SingleThreadContext::spawn_thread("ui-loop");
    let message = ui.run_until_idle().unwrap_err().to_string();
    assert!(message.contains("belongs to thread 'ui-loop'"), "{message}");
}
