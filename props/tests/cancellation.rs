//! The real cancellation sources, tokens, registrations and manual clock match the
//! sequential model, op by op, and the property comparing them can fail: deliberately
//! flawed models are caught and shrunk to a minimal sequence.

#![cfg(not(any(loom, shuttle)))]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use taskcheck_props::cancellation::{
    minimize, op_strategy, ops_strategy, run_against_model, run_against_runtime, Action,
    CancelFailure, Delay, Entry, Failed, Flaw, Model, Observed, Op, Outcome, Target,
};
use taskcheck_props::DivergenceKind;

/// The longest sequence the properties generate.
const MAX_OPS: usize = 64;

/// Checks `cases` random sequences of up to `max_len` ops. A failure is reported with
/// proptest's shrunk sequence and, shorter, the one [`minimize`] makes of it.
fn check_random_sequences(cases: u32, max_len: usize) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&ops_strategy(max_len), |ops| {
        run_against_runtime(&ops).map_err(|divergence| TestCaseError::fail(divergence.to_string()))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(_, ops)) => {
            let minimal = minimize(&ops, |ops| run_against_runtime(ops).is_err());
            let divergence = run_against_runtime(&minimal).expect_err("minimize keeps failing");
            panic!("{divergence}\nminimal ops: {minimal:?}\nshrunk by proptest: {ops:?}");
        }
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn runtime_matches_model() {
    check_random_sequences(20_000, MAX_OPS);
}

/// Fewer, longer sequences: many sources, links, timers and registrations at once.
#[test]
fn runtime_matches_model_on_long_sequences() {
    check_random_sequences(1_000, 256);
}

/// Three sources (plain, on a 5 ms timer, linked to both), then every sequence of up to
/// three ops over a small alphabet that reaches every op and action.
#[test]
fn runtime_matches_model_on_every_short_sequence() {
    let prefix = [
        Op::NewSource { delay: None },
        Op::NewSource {
            delay: Some(Delay::Millis(5)),
        },
        Op::Linked {
            parents: vec![Target::Source(0), Target::Source(1)],
        },
    ];
    let mut alphabet = vec![
        Op::NewSource { delay: None },
        Op::NewSource {
            delay: Some(Delay::Millis(0)),
        },
        Op::NewSource {
            delay: Some(Delay::Max),
        },
        Op::Linked {
            parents: vec![Target::Source(2), Target::None],
        },
        Op::Register {
            target: Target::None,
            action: Action::Record,
        },
        Op::Unregister { registration: 0 },
        Op::Unregister { registration: 1 },
        Op::DropRegistration { registration: 0 },
        Op::Detach { registration: 1 },
        Op::IsRegistered { registration: 0 },
        Op::Advance(Delay::Millis(0)),
        Op::Advance(Delay::Millis(5)),
        Op::Advance(Delay::Max),
    ];
    for source in 0..3 {
        alphabet.extend([
            Op::Cancel { source },
            Op::CancelThrowOnFirst { source },
            Op::CancelAfter {
                source,
                delay: Delay::Millis(0),
            },
            Op::CancelAfter {
                source,
                delay: Delay::Max,
            },
            Op::TryReset { source },
            Op::Dispose { source },
            Op::IsCancellationRequested { source },
        ]);
        for action in [
            Action::Record,
            Action::Panic,
            Action::Cancel(source + 1),
            Action::Unregister(0),
            Action::DropRegistration(0),
        ] {
            alphabet.push(Op::Register {
                target: Target::Source(source),
                action,
            });
        }
    }
    let mut sequences: Vec<Vec<Op>> = vec![prefix.to_vec()];
    let mut checked = 0;
    for _ in 0..3 {
        let mut longer = Vec::new();
        for sequence in &sequences {
            for op in &alphabet {
                let mut next = sequence.clone();
                next.push(op.clone());
                if let Err(divergence) = run_against_runtime(&next) {
                    panic!("{next:?}: {divergence}");
                }
                checked += 1;
                longer.push(next);
            }
        }
        sequences = longer;
    }
    assert!(checked > 100_000, "{checked}");
}

/// The model says what the rules say, on a hand-written sequence, and so does the runtime.
/// (`Source(n)` names the n-th newest source.)
#[test]
fn the_rules_in_order() {
    let ops = [
        Op::NewSource { delay: None }, // 0: source 0
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        }, // 1
        Op::Register {
            target: Target::Source(0),
            action: Action::Panic,
        }, // 2
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        }, // 3
        Op::Register {
            target: Target::Source(0),
            action: Action::Panic,
        }, // 4
        Op::Cancel { source: 0 },      // 5: LIFO 4, 3, 2, 1; failures of 4 then 2
        Op::Cancel { source: 0 },      // 6: idempotent
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        }, // 7: runs inline
        Op::NewSource {
            delay: Some(Delay::Millis(3)),
        }, // 8: source 1, timer at 3 ms
        Op::Linked {
            parents: vec![Target::Source(0)],
        }, // 9: source 2, linked to 1
        Op::Register {
            target: Target::Source(1),
            action: Action::Cancel(0),
        }, // 10: on source 1; cancels source 2
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        }, // 11: on source 2
        Op::Advance(Delay::Millis(3)), // 12: the timer cancels 1: 10 (which cancels 2: 11), the link
        Op::CancelAfter {
            source: 2,
            delay: Delay::Max,
        }, // 13: source 0 is canceled already: no-op
        Op::Dispose { source: 2 },     // 14: source 0
        Op::Cancel { source: 2 },      // 15: disposed
        Op::TryReset { source: 0 },    // 16: source 2 is canceled: false
    ];
    let mut model = Model::new();
    let steps: Vec<_> = ops
        .iter()
        .enumerate()
        .map(|(index, op)| model.apply(index, op))
        .collect();
    assert_eq!(
        steps[5].outcome,
        Outcome::Canceled(Err(CancelFailure::CallbacksFailed(vec![
            Failed {
                source: 0,
                callback: 4
            },
            Failed {
                source: 0,
                callback: 2
            },
        ])))
    );
    assert_eq!(
        steps[5].log,
        [Entry::Ran(4), Entry::Ran(3), Entry::Ran(2), Entry::Ran(1)]
    );
    assert_eq!(steps[6].outcome, Outcome::Canceled(Ok(())));
    assert!(steps[6].log.is_empty());
    assert_eq!(steps[7].log, [Entry::Ran(7)]);
    assert_eq!(steps[7].outcome, Outcome::Registered { stored: false });
    assert_eq!(steps[12].outcome, Outcome::Advanced(Ok(1)));
    assert_eq!(
        steps[12].log,
        [
            Entry::Ran(10),
            Entry::Ran(11),
            Entry::Canceled {
                by: 10,
                source: 2,
                result: Ok(())
            }
        ]
    );
    assert_eq!(steps[13].outcome, Outcome::CancelAfter(Ok(())));
    assert_eq!(
        steps[15].outcome,
        Outcome::Canceled(Err(CancelFailure::Disposed { source: 0 }))
    );
    assert_eq!(steps[16].outcome, Outcome::TryReset(Ok(false)));
    run_against_runtime(&ops).unwrap();
}

/// `Duration::MAX` is "never", also when the clock is at zero (where `now + MAX` does not
/// overflow): the source is not canceled by advancing the clock by `Duration::MAX`.
#[test]
fn a_duration_max_delay_never_fires() {
    for ops in [
        vec![
            Op::NewSource { delay: None },
            Op::CancelAfter {
                source: 0,
                delay: Delay::Max,
            },
            Op::Advance(Delay::Max),
        ],
        vec![
            Op::NewSource {
                delay: Some(Delay::Max),
            },
            Op::Advance(Delay::Max),
        ],
        vec![
            Op::Advance(Delay::Millis(1)),
            Op::NewSource {
                delay: Some(Delay::Max),
            },
            Op::Advance(Delay::Secs(u64::MAX / 2)),
        ],
    ] {
        if let Err(divergence) = run_against_runtime(&ops) {
            panic!("{ops:?}: {divergence}");
        }
    }
}

/// The strategy makes every variant of `Op` and `Action`. `variant` does not compile when
/// `Op` grows a variant: widen `VARIANTS` and `op_strategy` with it.
#[test]
fn the_strategy_makes_every_op_and_action() {
    const VARIANTS: usize = 14;
    fn variant(op: &Op) -> usize {
        match op {
            Op::NewSource { .. } => 0,
            Op::Linked { .. } => 1,
            Op::Register { .. } => 2,
            Op::Unregister { .. } => 3,
            Op::DropRegistration { .. } => 4,
            Op::Detach { .. } => 5,
            Op::IsRegistered { .. } => 6,
            Op::Cancel { .. } => 7,
            Op::CancelThrowOnFirst { .. } => 8,
            Op::CancelAfter { .. } => 9,
            Op::Advance(_) => 10,
            Op::TryReset { .. } => 11,
            Op::Dispose { .. } => 12,
            Op::IsCancellationRequested { .. } => 13,
        }
    }
    fn action(action: Action) -> usize {
        match action {
            Action::Record => 0,
            Action::Panic => 1,
            Action::Cancel(_) => 2,
            Action::Unregister(_) => 3,
            Action::DropRegistration(_) => 4,
        }
    }
    fn delay(delay: Delay) -> usize {
        match delay {
            Delay::Millis(_) => 0,
            Delay::Max => 1,
            Delay::Secs(_) => 2,
        }
    }
    let mut runner = TestRunner::deterministic();
    let mut variants = [false; VARIANTS];
    let mut actions = [false; 5];
    let mut delays = [false; 3];
    let mut targets = [false; 2];
    for _ in 0..2_000 {
        let op = op_strategy()
            .new_tree(&mut runner)
            .expect("ops never reject")
            .current();
        variants[variant(&op)] = true;
        match op {
            Op::Register { target, action: a } => {
                actions[action(a)] = true;
                targets[usize::from(target == Target::None)] = true;
            }
            Op::CancelAfter { delay: d, .. } | Op::Advance(d) => delays[delay(d)] = true,
            _ => {}
        }
    }
    assert_eq!(variants, [true; VARIANTS]);
    assert_eq!(actions, [true; 5]);
    assert_eq!(delays, [true; 3]);
    assert_eq!(targets, [true; 2]);
}

/// Runs the property against a flawed model (with a fixed seed, so the result is stable)
/// and returns the failing sequence, shrunk by proptest and then by [`minimize`].
fn minimal_failure(flaw: Flaw) -> Vec<Op> {
    let config = Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let fails = |ops: &[Op]| run_against_model(Model::with_flaw(flaw), ops).is_err();
    let result = TestRunner::new_with_rng(config, rng).run(&ops_strategy(MAX_OPS), |ops| {
        run_against_model(Model::with_flaw(flaw), &ops)
            .map_err(|divergence| TestCaseError::fail(divergence.to_string()))
    });
    match result {
        Err(TestError::Fail(_, ops)) => minimize(&ops, fails),
        other => panic!("the property missed {flaw:?}: {other:?}"),
    }
}

/// The divergence of the flawed model on `ops` (which the faithful model passes).
fn divergence(flaw: Flaw, ops: &[Op]) -> DivergenceKind<Box<Observed>> {
    run_against_runtime(ops).expect("the faithful model agrees with the runtime");
    run_against_model(Model::with_flaw(flaw), ops)
        .expect_err("the minimal sequence still fails")
        .kind
}

/// A source and two callbacks on it.
fn two_callbacks(second: Action) -> Vec<Op> {
    vec![
        Op::NewSource { delay: None },
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        },
        Op::Register {
            target: Target::Source(0),
            action: second,
        },
    ]
}

#[test]
fn a_fifo_model_is_caught() {
    let ops = minimal_failure(Flaw::Fifo);
    // Two callbacks and a cancel: the log shows the order.
    let mut expected = two_callbacks(Action::Record);
    expected.push(Op::Cancel { source: 0 });
    assert_eq!(ops, expected);
    assert_eq!(
        divergence(Flaw::Fifo, &ops),
        DivergenceKind::Outcome {
            model: Box::new(Observed::Log(vec![Entry::Ran(1), Entry::Ran(2)])),
            runtime: Box::new(Observed::Log(vec![Entry::Ran(2), Entry::Ran(1)])),
        }
    );
}

#[test]
fn a_model_whose_cancel_is_not_idempotent_is_caught() {
    let ops = minimal_failure(Flaw::CancelNotIdempotent);
    // The last callback cancels its own source again from inside the cancel in progress:
    // the flawed model runs the remaining callback in that nested cancel, the runtime's
    // nested cancel returns at once and the outer one runs it afterwards.
    let mut expected = two_callbacks(Action::Cancel(0));
    expected.push(Op::Cancel { source: 0 });
    assert_eq!(ops, expected);
    let nested = Entry::Canceled {
        by: 2,
        source: 0,
        result: Ok(()),
    };
    assert_eq!(
        divergence(Flaw::CancelNotIdempotent, &ops),
        DivergenceKind::Outcome {
            model: Box::new(Observed::Log(vec![
                Entry::Ran(2),
                Entry::Ran(1),
                nested.clone()
            ])),
            runtime: Box::new(Observed::Log(vec![Entry::Ran(2), nested, Entry::Ran(1)])),
        }
    );
}

#[test]
fn a_model_that_stores_on_a_canceled_source_is_caught() {
    let ops = minimal_failure(Flaw::RegisterOnCanceledStores);
    // A canceled source (canceled, or made with a zero delay) and a register on it: the
    // runtime runs the callback inline and stores nothing.
    let register = Op::Register {
        target: Target::Source(0),
        action: Action::Record,
    };
    let canceled_at_creation = vec![
        Op::NewSource {
            delay: Some(Delay::Millis(0)),
        },
        register.clone(),
    ];
    let canceled = vec![
        Op::NewSource { delay: None },
        Op::Cancel { source: 0 },
        register,
    ];
    assert!(ops == canceled_at_creation || ops == canceled, "{ops:?}");
    assert_eq!(
        divergence(Flaw::RegisterOnCanceledStores, &ops),
        DivergenceKind::Outcome {
            model: Box::new(Observed::Outcome(Outcome::Registered { stored: true })),
            runtime: Box::new(Observed::Outcome(Outcome::Registered { stored: false })),
        }
    );
}

#[test]
fn a_model_whose_dispose_keeps_closures_is_caught() {
    let ops = minimal_failure(Flaw::DisposeKeepsClosures);
    // A callback registered on a source, then the source disposed: the callback stays
    // registered (`unregister` would return `true`), but its closure is gone.
    let mut expected = vec![
        Op::NewSource { delay: None },
        Op::Register {
            target: Target::Source(0),
            action: Action::Record,
        },
    ];
    expected.push(Op::Dispose { source: 0 });
    assert_eq!(ops, expected);
    let DivergenceKind::Outcome { model, runtime } = divergence(Flaw::DisposeKeepsClosures, &ops)
    else {
        panic!("not a state divergence");
    };
    let registration = |observed: &Observed| match observed {
        Observed::State(state) => {
            let registration = state.registrations[0];
            (registration.registered, registration.closure_dropped)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(registration(&model), (true, false));
    assert_eq!(registration(&runtime), (true, true));
}
