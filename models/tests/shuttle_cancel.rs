#![cfg(shuttle)]
//! # Cancellation under concurrency: linked trees and registration churn
//!
//! The rules of `runtime/src/cancellation.rs` (numbered 1–9 in its module docs), checked
//! against the real runtime under shuttle's PCT and random schedulers, and under DFS (every
//! schedule) for two small kernels.
//!
//! ## Scenario 1: a tree of linked sources canceled from several threads
//!
//! Nine sources, built on the main thread before any thread starts:
//!
//! ```text
//! 0 root
//! ├─ 1 ─┬─ 3 ── 8 (linked to 3 and 5)
//! │     ├─ 4 (linked to 1 and the root 0)
//! │     └─ 6 (linked to 2 and 1)
//! └─ 2 ─┬─ 5 ── 8
//!       ├─ 6
//!       └─ 7 (a leaf, disposed by a thread)
//! ```
//!
//! Source `i` gets `1 + i % 3` callbacks at set-up. Every callback yields (some "work", so
//! other threads run while a cancel is in the middle of its list) and records (source,
//! callback, thread) into one shared log. Then, concurrently: three threads each cancel one
//! source; a registrar thread creates a tenth source linked to 1 and 5, and registers
//! callbacks on 5, 1, its new source, 4 and 0 (in that order); a disposer thread disposes
//! leaf 7. Three plans say what is canceled:
//!
//! - [`ROOT_PLAN`]: leaf 3, child 2 and the root 0;
//! - [`SUBTREES_PLAN`]: leaf 3, child 2 and grandchild 4, so the root and child 1 stay
//!   uncanceled (and so do the callbacks registered on them);
//! - [`TWICE_PLAN`]: leaf 8 by two threads at once, and the root.
//!
//! Every thread is joined (shuttle drops pending work silently), and then, in every
//! schedule:
//!
//! 1. every cancel returned `Ok` and left its source canceled (rule 2: a concurrent or
//!    repeated cancel is no error);
//! 2. a source is canceled exactly when it was canceled directly or a parent of it is
//!    canceled (rule 6): every source below a canceled one is canceled, and no source without
//!    a canceled ancestor is. The disposed leaf keeps the state it had when its `dispose`
//!    returned (rule 8: a cancel reaching it over a disposed link does nothing) and, if it
//!    was canceled by then, all its callbacks had run (rule 5: dispose waits for the
//!    parent's link callback running on another thread);
//! 3. every callback of a canceled source ran exactly once, and none of an uncanceled one
//!    (including the disposed leaf's, when it was disposed first);
//! 4. the callbacks a cancel ran for one source all ran on one thread (rules 1 and 2: only
//!    the first cancel runs callbacks), and that thread canceled the source directly or ran
//!    a canceled parent's callbacks (rule 6: a linked source is canceled inside its parent's
//!    cancel);
//! 5. within one source they ran last registered first (rule 1);
//! 6. a callback registered on a source already canceled ran inline, inside `register`, on
//!    the registering thread (rule 3);
//! 7. at the end, `unregister` returns `true` exactly for the stored callbacks of uncanceled
//!    sources (rules 4 and 8: the disposed leaf's callbacks stay registered).
//!
//! DFS cannot exhaust even a two-source tree (every lock and atomic of the runtime is a
//! scheduling point: 300,000 schedules did not finish one), so the trees run under PCT and
//! random only.
//!
//! ## Scenario 2: register / unregister churn against cancel
//!
//! One source; cancel threads race registrar threads. Each registrar registers callbacks
//! and then, per registration, either unregisters it (keeping the handle until the end),
//! drops it, or leaves it to its callback, which drops its own registration while running on
//! the cancelling thread. A callback marks itself running, yields, counts its run and
//! unmarks itself. [`CHURN`] has two cancelers and two registrars with three registrations
//! each, all three kinds. Checked:
//!
//! 1. for each unregistered registration exactly one of {`unregister` returned `true`, the
//!    callback ran} (the XOR of rule 4), and no callback ran twice;
//! 2. once a drop returned, the callback is not running and never runs later (rule 5);
//! 3. a callback dropping its own registration on the cancelling thread does not deadlock
//!    (rule 5: it returns at once there), and it ran exactly once.
//!
//! Two kernels are small enough for DFS to try every schedule: [`XOR_KERNEL`] (one
//! unregistration against one cancel) and [`DROP_INSIDE_KERNEL`] (one callback dropping its
//! own registration).
//!
//! ## Breaking it on purpose
//!
//! Each property has a twin with a deliberate bug switched on (inside the model closure, so
//! every execution has it), which shuttle must catch under PCT and random with the
//! violation it breaks. Each twin's plan also passes without its bug.
//!
//! - `Knob::CancelFifo` (callbacks run first registered first), on [`ROOT_PLAN`]: tree
//!   property 5, LIFO.
//! - `Knob::CancelRacyTransition` (two concurrent cancels of one source both run
//!   callbacks), on [`TWICE_PLAN`]: tree property 4, one source's callbacks on two threads.
//! - `Knob::CancelRacyRegister` (register checks "canceled?" before taking the lock), on
//!   [`ROOT_PLAN`]: tree properties 2 and 3, a callback or linked source never canceled
//!   although its source is ("lost cancellation"), when the callback is stored after the
//!   cancel emptied the list; or property 5, when it is stored while the cancel is still
//!   working through the list (it then runs late, out of LIFO order, instead of inline).
//!   shuttle stops at whichever it meets first; both are accepted.
//! - `Knob::CancelRemoveAfterRun` (a running callback stays listed), on
//!   [`UNREGISTER_CHURN`]: churn property 1, the XOR.
//! - `Knob::CancelSkipDropWait` (drop does not wait for a running callback), on
//!   [`DROP_CHURN`]: churn property 2.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models \
//!     --target-dir target/shuttle --test shuttle_cancel -- --nocapture
//! ```

use shuttle::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread::{self, ThreadId};
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{CancellationToken, CancellationTokenRegistration, CancellationTokenSource};
use taskcheck_models::{
    shuttle_dfs, shuttle_expect_failure, shuttle_pct, shuttle_random, Strategy,
};

/// Executions per strategy.
const ITERATIONS: usize = 1_000;
/// PCT's bug depth.
const PCT_DEPTH: usize = 3;
/// The most schedules a broken twin may take to be caught. The run stops at the first
/// catch, so the budget costs nothing when it is met.
const TWIN_ITERATIONS: usize = 20_000;

// ---------------------------------------------------------------------------------------
// Scenario 1: a tree of linked sources.

/// In [`TreePlan::registers`]: the source the registrar creates.
const LATE: usize = usize::MAX;
/// The callback ids the registrar uses start here (set-up callbacks are 0, 1, 2), so ids
/// grow with registration order on every source.
const REGISTRAR_CALLBACKS: usize = 10;

/// One tree scenario.
struct TreePlan {
    /// The parents of each set-up source, by index; parents come before their children.
    parents: &'static [&'static [usize]],
    /// How many callbacks each set-up source gets at set-up.
    callbacks: &'static [usize],
    /// The sources canceled, one thread each.
    cancels: &'static [usize],
    /// The leaf a thread disposes.
    disposed: Option<usize>,
    /// The parents of the source the registrar creates (its index is `parents.len()`).
    late: Option<&'static [usize]>,
    /// The sources the registrar registers a callback on, in order ([`LATE`]: its own).
    registers: &'static [usize],
}

/// The tree of the module docs.
const TREE: &[&[usize]] = &[&[], &[0], &[0], &[1], &[1, 0], &[2], &[2, 1], &[2], &[3, 5]];

/// Callbacks per source of [`TREE`].
const TREE_CALLBACKS: &[usize] = &[1, 2, 3, 1, 2, 3, 1, 2, 3];

/// A leaf, a child and the root canceled at once.
const ROOT_PLAN: TreePlan = TreePlan {
    parents: TREE,
    callbacks: TREE_CALLBACKS,
    cancels: &[3, 2, 0],
    disposed: Some(7),
    late: Some(&[1, 5]),
    registers: &[5, 1, LATE, 4, 0],
};

/// A leaf, a child and a grandchild with two parents: the root and child 1 stay uncanceled.
const SUBTREES_PLAN: TreePlan = TreePlan {
    parents: TREE,
    callbacks: TREE_CALLBACKS,
    cancels: &[3, 2, 4],
    disposed: Some(7),
    late: Some(&[1, 5]),
    registers: &[5, 1, LATE, 4, 0],
};

/// Leaf 8 canceled by two threads at once (and the root, above it, by a third): the plan of
/// the racy-transition twin, which needs two cancels of one source to race.
const TWICE_PLAN: TreePlan = TreePlan {
    parents: TREE,
    callbacks: TREE_CALLBACKS,
    cancels: &[8, 8, 0],
    disposed: Some(7),
    late: Some(&[1, 5]),
    registers: &[5, 1, LATE, 4, 0],
};

/// One callback run, as the callback recorded it.
#[derive(Clone, Copy, Debug)]
struct Ran {
    source: usize,
    callback: usize,
    thread: ThreadId,
}

type Log = Arc<Mutex<Vec<Ran>>>;

/// A callback that records its run.
fn recorder(log: &Log, source: usize, callback: usize) -> impl FnOnce() + Send + 'static {
    let log = log.clone();
    move || {
        // Some work: other threads run while the cancel is in the middle of its list.
        thread::yield_now();
        log.lock().unwrap().push(Ran {
            source,
            callback,
            thread: thread::current().id(),
        });
    }
}

/// Whether `log` holds a run of `callback` of `source`.
fn has_run(log: &Log, source: usize, callback: usize) -> bool {
    log.lock()
        .unwrap()
        .iter()
        .any(|ran| ran.source == source && ran.callback == callback)
}

/// A registration the registrar thread made, and what it saw when it made it.
struct Registered {
    source: usize,
    callback: usize,
    registration: CancellationTokenRegistration,
    /// The source was canceled before `register` was called.
    canceled_before: bool,
    /// `register` ran the callback itself (it returned an empty registration).
    inline: bool,
    /// The callback had run when `register` returned.
    ran_by_return: bool,
}

/// What the disposer saw right after `dispose` returned.
struct Disposed {
    canceled: bool,
    callbacks_run: usize,
}

/// The tree scenario (see the module docs).
fn tree(plan: &TreePlan) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));

    // Set-up: the sources, in order, and their callbacks.
    let mut sources: Vec<Arc<CancellationTokenSource>> = Vec::new();
    let mut registrations: Vec<(usize, usize, CancellationTokenRegistration)> = Vec::new();
    for (id, parents) in plan.parents.iter().enumerate() {
        let source = if parents.is_empty() {
            CancellationTokenSource::new()
        } else {
            let tokens: Vec<CancellationToken> = parents
                .iter()
                .map(|&parent| sources[parent].token())
                .collect();
            CancellationTokenSource::linked(&tokens)
        };
        for callback in 0..plan.callbacks[id] {
            let registration = source.token().register(recorder(&log, id, callback));
            registrations.push((id, callback, registration));
        }
        sources.push(Arc::new(source));
    }
    if let Some(disposed) = plan.disposed {
        assert!(
            plan.parents
                .iter()
                .all(|parents| !parents.contains(&disposed)),
            "the plan disposes a leaf"
        );
    }
    let late_index = plan.parents.len();

    // The cancelers.
    let cancelers: Vec<_> = plan
        .cancels
        .iter()
        .map(|&target| {
            let source = sources[target].clone();
            thread::spawn(move || {
                let result = source.cancel();
                assert!(
                    result.is_ok(),
                    "violation: cancel of source {target} returned {result:?}"
                );
                assert!(
                    source.is_cancellation_requested(),
                    "violation: source {target} is not canceled after its cancel returned"
                );
            })
        })
        .collect();
    let cancel_threads: Vec<ThreadId> = cancelers
        .iter()
        .map(|handle| handle.thread().id())
        .collect();

    // The registrar: a new linked source, and callbacks registered meanwhile.
    let registrar = (plan.late.is_some() || !plan.registers.is_empty()).then(|| {
        let late_parents: Option<Vec<CancellationToken>> = plan
            .late
            .map(|parents| parents.iter().map(|&p| sources[p].token()).collect());
        let targets: Vec<(usize, Option<CancellationToken>)> = plan
            .registers
            .iter()
            .map(|&target| {
                if target == LATE {
                    (late_index, None)
                } else {
                    (target, Some(sources[target].token()))
                }
            })
            .collect();
        let log = log.clone();
        thread::spawn(move || {
            let late = late_parents.map(|tokens| CancellationTokenSource::linked(&tokens));
            let mut registered = Vec::new();
            for (k, (source, token)) in targets.into_iter().enumerate() {
                let token = token.unwrap_or_else(|| {
                    late.as_ref()
                        .expect("the plan registers on the late source only if it has one")
                        .token()
                });
                let callback = REGISTRAR_CALLBACKS + k;
                let canceled_before = token.is_cancellation_requested();
                let registration = token.register(recorder(&log, source, callback));
                let inline = !registration.token().can_be_canceled();
                let ran_by_return = has_run(&log, source, callback);
                registered.push(Registered {
                    source,
                    callback,
                    registration,
                    canceled_before,
                    inline,
                    ran_by_return,
                });
            }
            (late, registered)
        })
    });

    // The disposer.
    let disposer = plan.disposed.map(|target| {
        let source = sources[target].clone();
        let log = log.clone();
        thread::spawn(move || {
            source.dispose();
            Disposed {
                canceled: source.is_cancellation_requested(),
                callbacks_run: log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|ran| ran.source == target)
                    .count(),
            }
        })
    });

    // Join every thread.
    for handle in cancelers {
        handle.join().unwrap();
    }
    let registrar_thread = registrar.as_ref().map(|handle| handle.thread().id());
    let (late, registered) = match registrar {
        Some(handle) => handle.join().unwrap(),
        None => (None, Vec::new()),
    };
    let disposed = disposer.map(|handle| handle.join().unwrap());

    // The final states.
    let mut parents_of: Vec<&[usize]> = plan.parents.to_vec();
    let mut canceled: Vec<bool> = sources
        .iter()
        .map(|source| source.is_cancellation_requested())
        .collect();
    if let (Some(parents), Some(late)) = (plan.late, &late) {
        parents_of.push(parents);
        canceled.push(late.is_cancellation_requested());
    }
    let log = log.lock().unwrap().clone();

    // 2. Canceled exactly when canceled directly or through a live link.
    for (source, parents) in parents_of.iter().enumerate() {
        let direct = plan.cancels.contains(&source);
        let canceled_parent = parents.iter().copied().find(|&parent| canceled[parent]);
        if canceled[source] {
            assert!(
                direct || canceled_parent.is_some(),
                "violation: source {source} is canceled, but neither it nor a parent was"
            );
        }
        if plan.disposed == Some(source) {
            let seen = disposed.as_ref().expect("the disposer was joined");
            assert_eq!(
                canceled[source], seen.canceled,
                "violation: disposed source {source} changed state after dispose returned"
            );
            if seen.canceled {
                assert_eq!(
                    seen.callbacks_run, plan.callbacks[source],
                    "violation: dispose of source {source} returned while its cancel was \
                     still running its callbacks on another thread"
                );
            }
        } else if !canceled[source] {
            if let Some(parent) = canceled_parent {
                panic!(
                    "violation: lost cancellation: source {source} is not canceled although \
                     its parent {parent} is"
                );
            }
            assert!(
                !direct,
                "violation: source {source} is not canceled although it was canceled directly"
            );
        }
    }

    // 3. Every callback of a canceled source ran exactly once; none of an uncanceled one.
    let mut callbacks: Vec<(usize, usize)> = registrations
        .iter()
        .map(|(source, callback, _)| (*source, *callback))
        .collect();
    callbacks.extend(registered.iter().map(|r| (r.source, r.callback)));
    for &(source, callback) in &callbacks {
        let runs = log
            .iter()
            .filter(|ran| ran.source == source && ran.callback == callback)
            .count();
        match (canceled[source], runs) {
            (true, 1) | (false, 0) => {}
            (true, 0) => panic!(
                "violation: lost cancellation: callback {callback} of canceled source {source} \
                 never ran"
            ),
            (false, _) => panic!(
                "violation: callback {callback} of source {source} ran although the source is \
                 not canceled"
            ),
            (true, runs) => {
                panic!("violation: callback {callback} of source {source} ran {runs} times")
            }
        }
    }

    // 4 and 5. Per source: one thread; last registered first.
    let inline: Vec<(usize, usize)> = registered
        .iter()
        .filter(|r| r.inline)
        .map(|r| (r.source, r.callback))
        .collect();
    let mut thread_of: Vec<Option<ThreadId>> = vec![None; canceled.len()];
    for (source, thread) in thread_of.iter_mut().enumerate() {
        let runs: Vec<Ran> = log
            .iter()
            .filter(|ran| ran.source == source && !inline.contains(&(ran.source, ran.callback)))
            .copied()
            .collect();
        let Some(first) = runs.first() else { continue };
        let threads: Vec<ThreadId> = runs.iter().map(|ran| ran.thread).collect();
        assert!(
            threads.iter().all(|&thread| thread == first.thread),
            "violation: callbacks of source {source} ran on two threads: {threads:?}"
        );
        *thread = Some(first.thread);
        let order: Vec<usize> = runs.iter().map(|ran| ran.callback).collect();
        assert!(
            order.windows(2).all(|pair| pair[0] > pair[1]),
            "violation: callbacks of source {source} ran in the order {order:?}, not last \
             registered first"
        );
    }
    // 4. That thread is one canceling the source, or the one running a parent's cancel.
    for (source, parents) in parents_of.iter().enumerate() {
        let Some(thread) = thread_of[source] else {
            continue;
        };
        let mut allowed: Vec<ThreadId> = plan
            .cancels
            .iter()
            .zip(&cancel_threads)
            .filter(|(&target, _)| target == source)
            .map(|(_, &thread)| thread)
            .collect();
        allowed.extend(
            parents
                .iter()
                .filter(|&&parent| canceled[parent])
                .filter_map(|&parent| thread_of[parent]),
        );
        assert!(
            allowed.contains(&thread),
            "violation: callbacks of source {source} ran on {thread:?}, neither a thread \
             canceling it nor inside a parent's cancel ({allowed:?})"
        );
    }

    // 6. Registered on a canceled source: ran inline, on the registering thread.
    for r in &registered {
        if r.canceled_before {
            assert!(
                r.inline && r.ran_by_return,
                "violation: callback {} registered on already canceled source {} did not run \
                 inline (inline: {}, ran by return: {})",
                r.callback,
                r.source,
                r.inline,
                r.ran_by_return
            );
        }
        if r.inline {
            let ran = log
                .iter()
                .find(|ran| ran.source == r.source && ran.callback == r.callback);
            assert!(
                r.ran_by_return && ran.map(|ran| ran.thread) == registrar_thread,
                "violation: callback {} of source {} ran inline but not inside register on the \
                 registering thread ({ran:?})",
                r.callback,
                r.source
            );
        }
    }

    // 7. unregister is true exactly for callbacks of uncanceled sources.
    for (source, callback, registration) in &registrations {
        let removed = registration.unregister();
        assert_eq!(
            removed, !canceled[*source],
            "violation: unregister of callback {callback} of source {source} returned \
             {removed}, the source being canceled: {}",
            canceled[*source]
        );
    }
    for r in &registered {
        let removed = r.registration.unregister();
        assert_eq!(
            removed,
            !canceled[r.source] && !r.inline,
            "violation: unregister of callback {} of source {} returned {removed}, the source \
             being canceled: {}",
            r.callback,
            r.source,
            canceled[r.source]
        );
    }
}

#[test]
fn tree_canceled_at_a_leaf_a_child_and_the_root() {
    let name = "shuttle_cancel::tree_canceled_at_a_leaf_a_child_and_the_root";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || tree(&ROOT_PLAN));
    shuttle_random(name, ITERATIONS, || tree(&ROOT_PLAN));
}

#[test]
fn tree_leaf_canceled_twice_at_once() {
    let name = "shuttle_cancel::tree_leaf_canceled_twice_at_once";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || tree(&TWICE_PLAN));
    shuttle_random(name, ITERATIONS, || tree(&TWICE_PLAN));
}

#[test]
fn tree_canceled_in_subtrees_only() {
    let name = "shuttle_cancel::tree_canceled_in_subtrees_only";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || tree(&SUBTREES_PLAN));
    shuttle_random(name, ITERATIONS, || tree(&SUBTREES_PLAN));
}

// ---------------------------------------------------------------------------------------
// Scenario 2: register / unregister churn.

/// What a registrar does with one registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `unregister()`, keeping the handle (the main thread drops it after the checks).
    Unregister,
    /// Drop the registration.
    Drop,
    /// The callback drops its own registration (on the cancelling thread).
    DropInside,
}

/// One churn scenario.
struct ChurnPlan {
    cancelers: usize,
    /// Per registrar thread, its registrations in order.
    registrars: &'static [&'static [Mode]],
}

/// Two cancelers, two registrars, every kind of registration.
const CHURN: ChurnPlan = ChurnPlan {
    cancelers: 2,
    registrars: &[
        &[Mode::Unregister, Mode::Drop, Mode::Unregister],
        &[Mode::Drop, Mode::DropInside, Mode::Unregister],
    ],
};

/// Small enough for DFS to try every schedule: one unregistration against one cancel.
const XOR_KERNEL: ChurnPlan = ChurnPlan {
    cancelers: 1,
    registrars: &[&[Mode::Unregister]],
};

/// Small enough for DFS: a callback dropping its own registration on the cancelling thread.
const DROP_INSIDE_KERNEL: ChurnPlan = ChurnPlan {
    cancelers: 1,
    registrars: &[&[Mode::DropInside]],
};

/// Unregistrations only: the XOR twin.
const UNREGISTER_CHURN: ChurnPlan = ChurnPlan {
    cancelers: 1,
    registrars: &[&[Mode::Unregister, Mode::Unregister], &[Mode::Unregister]],
};

/// Drops only: the drop-wait twin.
const DROP_CHURN: ChurnPlan = ChurnPlan {
    cancelers: 1,
    registrars: &[&[Mode::Drop, Mode::Drop], &[Mode::Drop]],
};

/// What one callback did.
#[derive(Default)]
struct Probe {
    ran: AtomicUsize,
    running: AtomicBool,
}

/// A callback that marks itself running, yields, counts its run and unmarks itself.
fn probed(probe: &Arc<Probe>) -> impl FnOnce() + Send + 'static {
    let probe = probe.clone();
    move || {
        probe.running.store(true, Ordering::SeqCst);
        thread::yield_now();
        probe.ran.fetch_add(1, Ordering::SeqCst);
        probe.running.store(false, Ordering::SeqCst);
    }
}

/// One registration's story, for the final checks.
struct Outcome {
    name: String,
    mode: Mode,
    probe: Arc<Probe>,
    /// What `unregister` returned ([`Mode::Unregister`]).
    removed: bool,
    /// Runs counted when the drop returned ([`Mode::Drop`]).
    ran_at_drop: usize,
}

/// The churn scenario (see the module docs).
fn churn(plan: &ChurnPlan) {
    let source = Arc::new(CancellationTokenSource::new());

    let cancelers: Vec<_> = (0..plan.cancelers)
        .map(|_| {
            let source = source.clone();
            thread::spawn(move || {
                let result = source.cancel();
                assert!(result.is_ok(), "violation: cancel returned {result:?}");
            })
        })
        .collect();

    let registrars: Vec<_> = plan
        .registrars
        .iter()
        .enumerate()
        .map(|(r, modes)| {
            let token = source.token();
            thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut kept = Vec::new();
                let mut slots = Vec::new();
                for (k, &mode) in modes.iter().enumerate() {
                    let name = format!("registration {r}.{k}");
                    let probe = Arc::new(Probe::default());
                    let mut outcome = Outcome {
                        name,
                        mode,
                        probe: probe.clone(),
                        removed: false,
                        ran_at_drop: 0,
                    };
                    match mode {
                        Mode::Unregister => {
                            let registration = token.register(probed(&probe));
                            outcome.removed = registration.unregister();
                            kept.push(registration);
                        }
                        Mode::Drop => {
                            let registration = token.register(probed(&probe));
                            drop(registration);
                            assert!(
                                !probe.running.load(Ordering::SeqCst),
                                "violation: the callback of {} was still running after its \
                                 drop returned",
                                outcome.name
                            );
                            outcome.ran_at_drop = probe.ran.load(Ordering::SeqCst);
                        }
                        Mode::DropInside => {
                            let slot: Arc<Mutex<Option<CancellationTokenRegistration>>> =
                                Arc::new(Mutex::new(None));
                            let inside = slot.clone();
                            let counted = probe.clone();
                            let registration = token.register(move || {
                                counted.ran.fetch_add(1, Ordering::SeqCst);
                                let own = inside.lock().unwrap().take();
                                // On the cancelling thread: must return at once (rule 5).
                                drop(own);
                            });
                            *slot.lock().unwrap() = Some(registration);
                            slots.push(slot);
                        }
                    }
                    outcomes.push(outcome);
                }
                // Handed to the main thread, which drops them after the checks.
                (outcomes, kept, slots)
            })
        })
        .collect();

    for handle in cancelers {
        handle.join().unwrap();
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut handles = Vec::new();
    for handle in registrars {
        let (done, kept, slots) = handle.join().unwrap();
        outcomes.extend(done);
        handles.push((kept, slots));
    }
    assert!(source.is_cancellation_requested());

    for outcome in &outcomes {
        let ran = outcome.probe.ran.load(Ordering::SeqCst);
        assert!(
            ran <= 1,
            "violation: the callback of {} ran {ran} times",
            outcome.name
        );
        match outcome.mode {
            Mode::Unregister => assert!(
                outcome.removed != (ran == 1),
                "violation: XOR broken: {}: unregister returned {} and the callback ran {ran} \
                 times",
                outcome.name,
                outcome.removed
            ),
            Mode::Drop => assert_eq!(
                ran, outcome.ran_at_drop,
                "violation: the callback of {} ran after its drop returned",
                outcome.name
            ),
            Mode::DropInside => assert_eq!(
                ran, 1,
                "violation: the callback of {} (never unregistered) did not run",
                outcome.name
            ),
        }
    }
}

#[test]
fn register_unregister_churn() {
    let name = "shuttle_cancel::register_unregister_churn";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || churn(&CHURN));
    shuttle_random(name, ITERATIONS, || churn(&CHURN));
    // The twins' scenarios pass too without their bug.
    let name = "shuttle_cancel::unregister_churn";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || churn(&UNREGISTER_CHURN));
    shuttle_random(name, ITERATIONS, || churn(&UNREGISTER_CHURN));
    let name = "shuttle_cancel::drop_churn";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, || churn(&DROP_CHURN));
    shuttle_random(name, ITERATIONS, || churn(&DROP_CHURN));
}

#[test]
fn churn_kernels_every_schedule() {
    shuttle_dfs(
        "shuttle_cancel::unregister_against_cancel_every_schedule",
        None,
        || churn(&XOR_KERNEL),
    );
    shuttle_dfs(
        "shuttle_cancel::drop_inside_own_callback_every_schedule",
        None,
        || churn(&DROP_INSIDE_KERNEL),
    );
}

// ---------------------------------------------------------------------------------------
// Broken twins.

/// The strategies every twin must be caught by.
fn twin_strategies() -> [Strategy; 2] {
    [
        Strategy::Pct {
            iterations: TWIN_ITERATIONS,
            depth: PCT_DEPTH,
        },
        Strategy::Random(TWIN_ITERATIONS),
    ]
}

/// Runs `scenario` with `knob` on under PCT and random; each must catch it with a violation
/// whose message contains one of `expected` (a bug may show in more than one way, and
/// shuttle stops at the first it meets).
fn expect_caught(name: &str, knob: Knob, expected: &[&str], scenario: fn()) {
    for strategy in twin_strategies() {
        let failure = shuttle_expect_failure(name, strategy, "violation", move || {
            with_knob(knob, scenario)
        });
        assert!(
            expected.iter().any(|text| failure.contains(text)),
            "{name} was caught by another property than {expected:?}:\n{failure}"
        );
        println!("{failure}");
    }
}

#[test]
fn fifo_is_caught() {
    expect_caught(
        "shuttle_cancel::fifo_is_caught",
        Knob::CancelFifo,
        &["not last registered first"],
        || tree(&ROOT_PLAN),
    );
}

#[test]
fn racy_transition_is_caught() {
    expect_caught(
        "shuttle_cancel::racy_transition_is_caught",
        Knob::CancelRacyTransition,
        &["ran on two threads"],
        || tree(&TWICE_PLAN),
    );
}

#[test]
fn racy_register_is_caught() {
    // A callback stored after the cancel took its list never runs ("lost cancellation": a
    // callback, or a linked source, of a canceled source); one stored while the cancel is
    // still working through its list runs late, out of LIFO order, instead of inline.
    expect_caught(
        "shuttle_cancel::racy_register_is_caught",
        Knob::CancelRacyRegister,
        &["lost cancellation", "not last registered first"],
        || tree(&ROOT_PLAN),
    );
}

#[test]
fn remove_after_run_is_caught() {
    expect_caught(
        "shuttle_cancel::remove_after_run_is_caught",
        Knob::CancelRemoveAfterRun,
        &["XOR broken"],
        || churn(&UNREGISTER_CHURN),
    );
}

#[test]
fn skip_drop_wait_is_caught() {
    expect_caught(
        "shuttle_cancel::skip_drop_wait_is_caught",
        Knob::CancelSkipDropWait,
        &["after its drop returned"],
        || churn(&DROP_CHURN),
    );
}
