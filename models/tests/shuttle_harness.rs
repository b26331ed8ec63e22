#![cfg(shuttle)]
//! The shuttle harness checks itself: it must pass a correct scenario under every strategy,
//! catch a broken one, and hand back a schedule string that reproduces the failure.
//!
//! The scenarios use shuttle's primitives directly, not the runtime, so that a failure here
//! points at the harness.

use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;
use taskcheck_models::{
    schedule_from_failure, shuttle_dfs, shuttle_expect_failure, shuttle_pct, shuttle_random,
    Strategy,
};

/// Two threads each add one to a shared counter with `increment`; `check` judges the total.
fn race(increment: fn(&AtomicUsize), check: fn(usize)) -> impl Fn() + Send + Sync + 'static {
    move || {
        let counter = Arc::new(AtomicUsize::new(0));
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || increment(&counter))
        };
        increment(&counter);
        other.join().unwrap();
        check(counter.load(Ordering::SeqCst));
    }
}

/// The race, asserting that both additions count.
fn two_increments(increment: fn(&AtomicUsize)) -> impl Fn() + Send + Sync + 'static {
    race(increment, |total| assert_eq!(total, 2, "lost update"))
}

fn fetch_add(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// The bug: read, then write back one more, losing the other thread's update if it writes
/// in between.
fn load_then_store(counter: &AtomicUsize) {
    let seen = counter.load(Ordering::SeqCst);
    counter.store(seen + 1, Ordering::SeqCst);
}

#[test]
fn fetch_add_never_loses_an_update() {
    let name = "shuttle_harness::fetch_add_never_loses_an_update";
    shuttle_random(name, 1_000, two_increments(fetch_add));
    shuttle_pct(name, 1_000, 2, two_increments(fetch_add));
    shuttle_dfs(name, None, two_increments(fetch_add));
}

#[test]
fn load_then_store_loses_an_update() {
    let name = "shuttle_harness::load_then_store_loses_an_update";
    shuttle_expect_failure(
        name,
        Strategy::Random(1_000),
        "lost update",
        two_increments(load_then_store),
    );
    shuttle_expect_failure(
        name,
        Strategy::Pct {
            iterations: 1_000,
            depth: 2,
        },
        "lost update",
        two_increments(load_then_store),
    );
    let failure = shuttle_expect_failure(
        name,
        Strategy::Dfs(None),
        "lost update",
        two_increments(load_then_store),
    );

    // The schedule the failure carries replays exactly that interleaving: the same failure,
    // in one execution...
    let schedule = schedule_from_failure(&failure).expect("a failure carries its schedule");
    shuttle_expect_failure(
        name,
        Strategy::Replay(schedule.clone()),
        "lost update",
        two_increments(load_then_store),
    );
    // ...in which the total is 1, whatever the assertion says about it.
    shuttle_expect_failure(
        name,
        Strategy::Replay(schedule),
        "the replayed interleaving counts one update",
        race(load_then_store, |total| {
            assert_ne!(total, 1, "the replayed interleaving counts one update")
        }),
    );
}

/// The bug: two threads take two locks in opposite orders; shuttle must report the deadlock.
#[test]
fn lock_order_inversion_deadlocks() {
    let failure = shuttle_expect_failure(
        "shuttle_harness::lock_order_inversion_deadlocks",
        Strategy::Pct {
            iterations: 1_000,
            depth: 2,
        },
        "deadlock",
        || {
            let first = Arc::new(Mutex::new(()));
            let second = Arc::new(Mutex::new(()));
            let other = {
                let (first, second) = (Arc::clone(&first), Arc::clone(&second));
                thread::spawn(move || {
                    let _second = second.lock().unwrap();
                    let _first = first.lock().unwrap();
                })
            };
            {
                let _first = first.lock().unwrap();
                let _second = second.lock().unwrap();
            }
            other.join().unwrap();
        },
    );
    assert!(
        failure.starts_with("deadlock! blocked tasks: ["),
        "{failure}"
    );
    assert!(schedule_from_failure(&failure).is_some(), "{failure}");
}

#[test]
fn the_schedule_is_read_from_shuttles_own_output() {
    let printed = "test panicked in task 'main-thread'\nfailing schedule:\n\"\n91021c0d\n8e01\n\"\npass that string to `shuttle::replay` to replay the failure";
    assert_eq!(
        schedule_from_failure(printed).as_deref(),
        Some("91021c0d8e01")
    );
    assert_eq!(schedule_from_failure("assertion failed: lost update"), None);
    assert_eq!(schedule_from_failure("failing schedule:\n\"\n\"\n"), None);
}
