//! # `Task.Run` layered around an async body
//!
//! **.NET.** Code wraps async methods in `Task.Run` for many reasons — to get them off the
//! UI thread, out of habit — and in several shapes: `FooAsync()`,
//! `Task.Run(() => FooAsync())`, `Task.Run(async () => await FooAsync())`. `Task.Run`'s
//! `Func<Task<T>>` overload unwraps the inner task, and `await` rethrows the inner
//! exception itself, so every layering has the same outcome: the same result, the same
//! exception object, and a canceled body gives a Canceled task — not a Faulted one. (What
//! differs is where the synchronous part of `FooAsync` runs and when its errors surface;
//! see the `panics` scenario.)
//!
//! **taskcheck.** The layerings are `start(body)` (calling the async method),
//! `Task::run(body)` (the default pool), `pool.spawn(body)` (an explicit pool),
//! `pool.spawn(async move { inner.await })` (awaiting a task from a pool task) and
//! `Task::run(async { start(body).await })` (the async lambda). For a value, a fault, a
//! panic and a cancellation, each with a body that suspends first and one that completes
//! synchronously, all five end with the same status and outcome, and a wrapper that awaits
//! an inner task hands on the very same error object.

use std::error::Error;

use taskcheck::{start, Task, TaskCompletionSource, TaskError, TaskStatus, ThreadPool};
use taskcheck_tests::{quiet_expected_panics, Boom, EXPECTED_PANIC};

/// What the body ends with.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Value,
    Fault,
    Panic,
    Cancel,
}

/// The async method: awaits `release` (suspending unless it is complete), then ends as
/// told.
async fn body(release: Task<()>, ending: Ending) -> Result<u32, TaskError> {
    release.await?;
    match ending {
        Ending::Value => Ok(42),
        Ending::Fault => Err(Boom("no such customer").into()),
        Ending::Panic => panic!("{EXPECTED_PANIC} index out of range"),
        Ending::Cancel => Err(TaskError::canceled()),
    }
}

/// One way of running the body, and the inner task it wraps, if it wraps one.
struct Layering {
    name: &'static str,
    outer: Task<u32>,
    inner: Option<Task<u32>>,
}

#[allow(
    clippy::redundant_async_block,
    reason = "`async { inner.await }` is the layering under test, written as users write it"
)]
fn layerings(pool: &ThreadPool, release: &Task<()>, ending: Ending) -> Vec<Layering> {
    let make = || body(release.clone(), ending);
    let awaited_inner = start(make());
    vec![
        Layering {
            name: "start(body)",
            outer: start(make()),
            inner: None,
        },
        Layering {
            name: "Task::run(body)",
            outer: Task::run(make()),
            inner: None,
        },
        Layering {
            name: "pool.spawn(body)",
            outer: pool.spawn(make()),
            inner: None,
        },
        Layering {
            name: "pool.spawn(async { inner.await })",
            outer: pool.spawn({
                let inner = awaited_inner.clone();
                async move { inner.await }
            }),
            inner: Some(awaited_inner),
        },
        Layering {
            name: "Task::run(async { start(body).await })",
            outer: Task::run({
                let body = make();
                async move { start(body).await }
            }),
            inner: None,
        },
    ]
}

/// Runs every layering to completion, the body suspending first (`suspend`) or not, and
/// returns them.
fn run_all(ending: Ending, suspend: bool) -> Vec<Layering> {
    let pool = ThreadPool::with_name("layering", 2);
    let release = TaskCompletionSource::<()>::new();
    if !suspend {
        release.set_result(()).unwrap();
    }
    let all = layerings(&pool, &release.task(), ending);
    if suspend {
        // Nothing can have finished: every body waits for the release.
        for layering in &all {
            assert_eq!(
                layering.outer.status(),
                TaskStatus::Pending,
                "{}",
                layering.name
            );
        }
        release.set_result(()).unwrap();
    }
    for layering in &all {
        let _ = layering.outer.wait();
    }
    all
}

/// The address of an error's first fault (equal: the same object).
fn fault_address(error: &TaskError) -> *const () {
    let fault: &(dyn Error + Send + Sync) = error.errors().next().expect("a faulted error");
    fault as *const (dyn Error + Send + Sync) as *const ()
}

fn error_of(task: &Task<u32>) -> TaskError {
    task.outcome().expect("complete").expect_err("an error")
}

/// Checks that a wrapper hands on its inner task's error object itself.
fn assert_same_error_object_as_inner(layering: &Layering) {
    if let Some(inner) = &layering.inner {
        assert_eq!(
            fault_address(&error_of(&layering.outer)),
            fault_address(&error_of(inner)),
            "{}",
            layering.name
        );
    }
}

#[test]
fn the_same_value_whatever_the_layering() {
    for suspend in [true, false] {
        for layering in run_all(Ending::Value, suspend) {
            assert_eq!(
                layering.outer.status(),
                TaskStatus::Succeeded,
                "{}",
                layering.name
            );
            assert_eq!(layering.outer.wait().unwrap(), 42, "{}", layering.name);
        }
    }
}

#[test]
fn the_same_fault_whatever_the_layering() {
    for suspend in [true, false] {
        for layering in run_all(Ending::Fault, suspend) {
            assert_eq!(
                layering.outer.status(),
                TaskStatus::Faulted,
                "{}",
                layering.name
            );
            let error = error_of(&layering.outer);
            assert_eq!(error.errors().count(), 1, "{}: not wrapped", layering.name);
            assert_eq!(
                error.downcast_ref::<Boom>(),
                Some(&Boom("no such customer")),
                "{}",
                layering.name
            );
            assert_same_error_object_as_inner(&layering);
        }
    }
}

#[test]
fn the_same_panic_whatever_the_layering() {
    quiet_expected_panics();
    let expected = format!("{EXPECTED_PANIC} index out of range");
    for suspend in [true, false] {
        for layering in run_all(Ending::Panic, suspend) {
            assert_eq!(
                layering.outer.status(),
                TaskStatus::Faulted,
                "{}",
                layering.name
            );
            let error = error_of(&layering.outer);
            assert!(error.is_panic(), "{}", layering.name);
            assert_eq!(
                error.panic_message(),
                Some(expected.as_str()),
                "{}",
                layering.name
            );
            assert_same_error_object_as_inner(&layering);
        }
    }
}

/// A canceled body gives a Canceled task through every layering: a wrapper that awaits a
/// canceled task and propagates the error with `?` is canceled too, not faulted.
#[test]
fn the_same_cancellation_whatever_the_layering() {
    for suspend in [true, false] {
        for layering in run_all(Ending::Cancel, suspend) {
            assert_eq!(
                layering.outer.status(),
                TaskStatus::Canceled,
                "{}",
                layering.name
            );
            let error = error_of(&layering.outer);
            assert!(
                error.is_canceled() && !error.is_faulted(),
                "{}",
                layering.name
            );
            assert_eq!(error.errors().count(), 0, "{}", layering.name);
        }
    }
}

/// Calling an async method that completes synchronously with a cacheable result gives the
/// cached task, as C# does for `true`, `false`, small integers and the completed task.
#[test]
fn a_synchronous_cacheable_result_is_the_cached_task() {
    let from_method = start(async { Ok::<_, TaskError>(true) });
    assert_eq!(from_method.id(), Task::from_result(true).id());
    let unit = start(async { Ok::<_, TaskError>(()) });
    assert_eq!(unit.id(), Task::completed().id());
    // Not cacheable: a fresh task, with the same value.
    let large = start(async { Ok::<_, TaskError>(1_000u32) });
    assert_ne!(large.id(), Task::from_result(1_000u32).id());
    assert_eq!(large.wait().unwrap(), 1_000);
}
