#![cfg(loom)]
//! The loom harness checks itself: it must pass a correct model, and it must catch a broken
//! one. Without the second half, a harness that never fails would make every bug model look
//! caught... or, worse, every model look correct.
//!
//! The models use loom's primitives directly, not the runtime, so that a failure here points
//! at the harness.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use taskcheck_models::{loom_expect_failure, loom_model};

/// Two threads each add one to a shared counter with `increment`; the model asserts that
/// both additions count.
fn two_increments(increment: fn(&AtomicUsize)) -> impl Fn() + Sync + Send + 'static {
    move || {
        let counter = Arc::new(AtomicUsize::new(0));
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || increment(&counter))
        };
        increment(&counter);
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 2, "lost update");
    }
}

#[test]
fn fetch_add_never_loses_an_update() {
    loom_model(
        "loom_harness::fetch_add_never_loses_an_update",
        two_increments(|counter| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
}

/// The bug: read, then write back one more. If the other thread writes in between, its
/// update is overwritten. loom must find that interleaving.
#[test]
fn load_then_store_loses_an_update() {
    loom_expect_failure(
        "loom_harness::load_then_store_loses_an_update",
        "load_then_store_loses_an_update",
        "lost update",
        two_increments(|counter| {
            let seen = counter.load(Ordering::SeqCst);
            counter.store(seen + 1, Ordering::SeqCst);
        }),
    );
}

/// The bug: two threads take two locks in opposite orders. loom must report the deadlock,
/// which it does by stopping the execution while `Arc`s are alive: the case that can abort
/// the test process (loom issue 291) and the reason bug models run in a child process.
#[test]
fn lock_order_inversion_deadlocks() {
    loom_expect_failure(
        "loom_harness::lock_order_inversion_deadlocks",
        "lock_order_inversion_deadlocks",
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
}
