//! `when_all`, `when_any` and `when_each` over completion sources, and the unobserved-error
//! reports around them, match the sequential model point by point; and the property
//! comparing them can fail: deliberately flawed models are caught and shrunk.

#![cfg(not(any(loom, shuttle)))]

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestError, TestRng, TestRunner};
use taskcheck::TaskStatus;
use taskcheck_props::combinators::{
    run_against_model, run_against_runtime, scenario_strategy, AllOutcome, Cancel, Combinator,
    ErrorId, Flaw, Item, Model, Observation, Point, Scenario, SourceOutcome, SourceSpec, TaskRef,
    Winners, MAX_INPUTS, MAX_SOURCES,
};
use taskcheck_props::DivergenceKind;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn runtime_matches_model(scenario in scenario_strategy(MAX_SOURCES, MAX_INPUTS)) {
        if let Err(divergence) = run_against_runtime(&scenario) {
            return Err(TestCaseError::fail(divergence.to_string()));
        }
    }
}

fn source(outcome: SourceOutcome, complete_at_call: bool, rank: u8) -> SourceSpec {
    SourceSpec {
        outcome,
        complete_at_call,
        rank,
    }
}

fn scenario(combinator: Combinator, sources: Vec<SourceSpec>, inputs: Vec<u8>) -> Scenario {
    let drop_after = sources.len() as u8;
    Scenario {
        combinator,
        sources,
        inputs,
        drop_after,
        // The sources live until the end.
        drop_sources_after: u8::MAX,
        observe: true,
        cancel: Cancel::Never,
        polls: u16::MAX,
    }
}

fn injected(source: usize, index: usize) -> ErrorId {
    ErrorId::Injected { source, index }
}

/// Every scenario over two sources (each outcome, complete at the call or not, both
/// completion orders), every input list of up to three inputs, dropping the handles at the
/// call or at the end and the sources from the first completion on or at the end,
/// observing or not, and for `when_each` three cancellations and two polling patterns.
#[test]
fn runtime_matches_model_on_every_small_scenario() {
    let outcomes = [
        SourceOutcome::Value(7),
        SourceOutcome::Faulted(1), // two errors
        SourceOutcome::Canceled,
        SourceOutcome::CanceledWithToken,
        SourceOutcome::Abandoned,
    ];
    let mut sources = Vec::new();
    for a in outcomes {
        for b in outcomes {
            for (a_at_call, b_at_call) in
                [(false, false), (false, true), (true, false), (true, true)]
            {
                for rank in [0, 2] {
                    sources.push(vec![source(a, a_at_call, rank), source(b, b_at_call, 1)]);
                }
            }
        }
    }
    let mut input_lists: Vec<Vec<u8>> = vec![Vec::new()];
    let mut shorter = vec![Vec::new()];
    for _ in 0..3 {
        let mut longer = Vec::new();
        for list in &shorter {
            for i in 0..2u8 {
                let mut next: Vec<u8> = list.clone();
                next.push(i);
                longer.push(next);
            }
        }
        input_lists.extend(longer.iter().cloned());
        shorter = longer;
    }
    let mut checked = 0;
    for combinator in [
        Combinator::WhenAll,
        Combinator::WhenAny,
        Combinator::WhenEach,
    ] {
        let (cancels, polls): (&[Cancel], &[u16]) = match combinator {
            Combinator::WhenEach => (
                &[Cancel::Never, Cancel::BeforeCall, Cancel::AfterPoint(1)],
                &[u16::MAX, 0],
            ),
            _ => (&[Cancel::Never], &[0]),
        };
        for sources in &sources {
            for inputs in &input_lists {
                for (drop_after, drop_sources_after) in [(0, 1), (0, u8::MAX), (2, 1), (2, u8::MAX)]
                {
                    for observe in [false, true] {
                        for &cancel in cancels {
                            for &polls in polls {
                                let scenario = Scenario {
                                    combinator,
                                    sources: sources.clone(),
                                    inputs: inputs.clone(),
                                    drop_after,
                                    drop_sources_after,
                                    observe,
                                    cancel,
                                    polls,
                                };
                                if let Err(divergence) = run_against_runtime(&scenario) {
                                    panic!("{scenario:?}: {divergence}");
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 200 * 15 * 4 * 2 * (1 + 1 + 3 * 2));
}

/// Rule 1: errors in input order, each input's own errors spliced in, a duplicate counted
/// twice, whatever the completion order; the task waits for the last input.
#[test]
fn when_all_lists_errors_in_input_order() {
    let scenario = scenario(
        Combinator::WhenAll,
        vec![
            source(SourceOutcome::Faulted(1), false, 1), // two errors, completes second
            source(SourceOutcome::Faulted(0), false, 0), // one error, completes first
            source(SourceOutcome::Value(3), true, 0),
        ],
        vec![1, 2, 0, 1],
    );
    let model = Model::new(scenario.plan());
    assert_eq!(
        model.when_all_outcome(),
        AllOutcome::Faulted(vec![
            injected(1, 0),
            injected(0, 0),
            injected(0, 1),
            injected(1, 0)
        ])
    );
    assert_eq!(model.when_all_completes_at(), 2);
    // Observed by `when_all`: nothing is ever reported, the `when_all` task's error was read.
    assert_eq!(model.unobserved_reports(), vec![]);
    run_against_runtime(&scenario).unwrap();

    // Not read: the `when_all` task's error is reported once, when the test drops it.
    let unread = Scenario {
        observe: false,
        ..scenario
    };
    let reports = Model::new(unread.plan()).unobserved_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].1.task, TaskRef::Combinator);
    run_against_runtime(&unread).unwrap();
}

/// Rule 1: canceled only when nothing faulted, with the first canceled input's
/// cancellation in input order (its token, or none), whatever the completion order; values
/// in input order; an empty list is complete at the call.
#[test]
fn when_all_cancellation_values_and_empty() {
    let canceled = scenario(
        Combinator::WhenAll,
        vec![
            source(SourceOutcome::Value(1), false, 0),
            source(SourceOutcome::Canceled, false, 1),
        ],
        vec![0, 1],
    );
    assert_eq!(
        Model::new(canceled.plan()).when_all_outcome(),
        AllOutcome::Canceled(None)
    );
    run_against_runtime(&canceled).unwrap();
    let tokens = vec![
        source(SourceOutcome::Canceled, false, 1), // no token, completes last
        source(SourceOutcome::CanceledWithToken, false, 0), // its own token, completes first
        source(SourceOutcome::CanceledWithToken, true, 0), // its own token, before the call
        source(SourceOutcome::Value(4), false, 0),
    ];
    for (inputs, first) in [
        (vec![3, 1, 0, 2], Some(1)),
        (vec![0, 1, 2], None),
        (vec![3, 2, 1, 3], Some(2)),
    ] {
        let canceled = scenario(Combinator::WhenAll, tokens.clone(), inputs);
        assert_eq!(
            Model::new(canceled.plan()).when_all_outcome(),
            AllOutcome::Canceled(first),
            "{canceled:?}"
        );
        run_against_runtime(&canceled).unwrap();
    }
    let values = scenario(
        Combinator::WhenAll,
        vec![
            source(SourceOutcome::Value(1), false, 1),
            source(SourceOutcome::Value(2), true, 0),
        ],
        vec![0, 1, 0],
    );
    assert_eq!(
        Model::new(values.plan()).when_all_outcome(),
        AllOutcome::Values(vec![1, 2, 1])
    );
    run_against_runtime(&values).unwrap();
    let empty = scenario(
        Combinator::WhenAll,
        vec![source(SourceOutcome::Faulted(0), false, 0)],
        vec![],
    );
    let model = Model::new(empty.plan());
    assert_eq!(model.when_all_outcome(), AllOutcome::Values(vec![]));
    assert_eq!(model.when_all_completes_at(), 0);
    // The source nobody waits for is reported when its last handle goes: the source
    // itself, at the end (point 2), after the test's drop (point 1).
    let reports = model.unobserved_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!((reports[0].0, reports[0].1.task), (2, TaskRef::Source(0)));
    run_against_runtime(&empty).unwrap();
}

/// Rule 2: the first input complete at the call wins (input order, not index order);
/// otherwise the first to complete, from a set the schedule chooses in; empty is refused.
#[test]
fn when_any_winners() {
    let at_call = scenario(
        Combinator::WhenAny,
        vec![
            source(SourceOutcome::Value(1), true, 0),
            source(SourceOutcome::Faulted(0), true, 0),
            source(SourceOutcome::Value(3), false, 0),
        ],
        vec![2, 1, 0],
    );
    let model = Model::new(at_call.plan());
    assert_eq!(model.when_any_winners(), Some(Winners::AtCall(1)));
    assert_eq!(model.when_any_winner(), Some((1, 0)));
    run_against_runtime(&at_call).unwrap();

    let pending = scenario(
        Combinator::WhenAny,
        vec![
            source(SourceOutcome::Faulted(2), false, 2),
            source(SourceOutcome::Value(2), false, 1),
            source(SourceOutcome::Canceled, false, 0), // completes first, not an input
        ],
        vec![0, 1, 0],
    );
    let model = Model::new(pending.plan());
    let winners = model.when_any_winners().unwrap();
    assert_eq!(winners, Winners::FirstToComplete(BTreeSet::from([0, 1])));
    assert!(winners.allows(0) && winners.allows(1) && !winners.allows(2));
    assert_eq!(model.when_any_winner(), Some((1, 2)));
    // The loser faults after the win: nothing observes it, so it is reported once, when
    // its last handle (its source) goes at the end (point 4).
    let reports = model.unobserved_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!((reports[0].0, reports[0].1.task), (4, TaskRef::Source(0)));
    run_against_runtime(&pending).unwrap();

    let empty = scenario(
        Combinator::WhenAny,
        vec![source(SourceOutcome::Value(1), false, 0)],
        vec![],
    );
    let model = Model::new(empty.plan());
    assert_eq!(model.when_any_winners(), None);
    assert_eq!(
        model.expectations()[0][0],
        Observation::AnyCall { empty: true }
    );
    run_against_runtime(&empty).unwrap();
}

/// Rule 2 and unobserved rules 1–2: winning does not observe. A faulted winner is
/// reported exactly once, when its last handle goes: the later of the test's drop (its
/// handle, and the `when_any` task holding the winner) and its source's drop.
#[test]
fn a_faulted_winner_is_reported_once_at_the_last_drop() {
    let mut winner = scenario(
        Combinator::WhenAny,
        vec![
            source(SourceOutcome::Faulted(0), false, 0), // completes at point 1: wins
            source(SourceOutcome::Value(5), false, 1),   // completes at point 2
        ],
        vec![1, 0],
    );
    winner.drop_after = 1;
    // (the sources' drop point, the report's point): the source goes right after its
    // completion, at point 2, at the end (point 3).
    for (drop_sources_after, reported_at) in [(0, 1), (2, 2), (u8::MAX, 3)] {
        winner.drop_sources_after = drop_sources_after;
        let model = Model::new(winner.plan());
        assert_eq!(model.when_any_winner(), Some((0, 1)));
        let reports = model.unobserved_reports();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(
            (reports[0].0, reports[0].1.task),
            (reported_at, TaskRef::Source(0))
        );
        run_against_runtime(&winner).unwrap();
    }
    winner.drop_sources_after = u8::MAX;
    let model = Model::new(winner.plan());
    // The loser's continuation is gone at the win.
    let registered = model.expectations()[1]
        .iter()
        .find_map(|observation| match observation {
            Observation::Registered(counts) => Some(counts.clone()),
            _ => None,
        });
    assert_eq!(registered, Some(vec![Some(0), Some(0)]));
    run_against_runtime(&winner).unwrap();
}

/// Rule 3: complete inputs first in input order, then completion order, once per
/// occurrence; a canceled token ends the stream with a cancellation, even with items
/// ready; dropping the stream removes its continuations.
#[test]
fn when_each_order_cancellation_and_drop() {
    let each = scenario(
        Combinator::WhenEach,
        vec![
            source(SourceOutcome::Value(1), false, 1),
            source(SourceOutcome::Faulted(0), true, 0),
            source(SourceOutcome::Canceled, false, 0),
            source(SourceOutcome::Value(4), true, 0),
        ],
        vec![0, 3, 2, 1, 0],
    );
    let model = Model::new(each.plan());
    assert_eq!(model.when_each_sequence(), vec![3, 1, 2, 0, 0]);
    let polled: Vec<Item> = model
        .expectations()
        .iter()
        .flatten()
        .filter_map(|observation| match observation {
            Observation::Polled(items) => Some(items.clone()),
            _ => None,
        })
        .flatten()
        .filter(|item| *item != Item::Pending)
        .collect();
    assert_eq!(
        polled,
        [3, 1, 2, 0, 0]
            .into_iter()
            .map(|i| Item::Task(Some(i)))
            .chain([Item::End])
            .collect::<Vec<_>>()
    );
    run_against_runtime(&each).unwrap();

    let canceled = Scenario {
        cancel: Cancel::BeforeCall,
        ..each.clone()
    };
    let first_poll = Model::new(canceled.plan()).expectations()[0]
        .iter()
        .find_map(|observation| match observation {
            Observation::Polled(items) => Some(items.clone()),
            _ => None,
        });
    assert_eq!(first_poll, Some(vec![Item::Canceled, Item::End]));
    run_against_runtime(&canceled).unwrap();

    let dropped = Scenario {
        drop_after: 0,
        ..each
    };
    let model = Model::new(dropped.plan());
    let registered: Vec<Vec<Option<usize>>> = model.expectations()[0]
        .iter()
        .filter_map(|observation| match observation {
            Observation::Registered(counts) => Some(counts.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(registered, vec![vec![Some(0); 4]]);
    run_against_runtime(&dropped).unwrap();
}

/// Unobserved rule 2: an abandoned source is reported only if some handle saw it go.
#[test]
fn abandonment_is_reported_only_with_a_handle() {
    // `when_all` holds its input: the abandonment is a fault it observes.
    let held = scenario(
        Combinator::WhenAll,
        vec![
            source(SourceOutcome::Abandoned, false, 0),
            source(SourceOutcome::Abandoned, false, 1),
        ],
        vec![0],
    );
    let dropped_early = Scenario {
        drop_after: 0,
        observe: false,
        ..held
    };
    let model = Model::new(dropped_early.plan());
    assert_eq!(
        model.when_all_outcome(),
        AllOutcome::Faulted(vec![ErrorId::Abandoned { source: 0 }])
    );
    // Source 1 had no handle when it was dropped: never reported. The `when_all` task is
    // reported at its completion (the test dropped it before).
    let reports: Vec<(usize, TaskRef)> = model
        .unobserved_reports()
        .into_iter()
        .map(|(point, report)| (point, report.task))
        .collect();
    assert_eq!(reports, vec![(1, TaskRef::Combinator)]);
    run_against_runtime(&dropped_early).unwrap();

    // The test still holds source 0's task when it is abandoned: a fault, reported when
    // the test drops it (point 2; nothing observes it: no combinator input).
    let held_by_the_test = Scenario {
        combinator: Combinator::WhenAll,
        sources: vec![
            source(SourceOutcome::Abandoned, false, 0),
            source(SourceOutcome::Value(2), false, 1),
        ],
        inputs: vec![],
        drop_after: 2,
        ..dropped_early
    };
    let reports: Vec<(usize, TaskRef)> = Model::new(held_by_the_test.plan())
        .unobserved_reports()
        .into_iter()
        .map(|(point, report)| (point, report.task))
        .collect();
    assert_eq!(reports, vec![(2, TaskRef::Source(0))]);
    run_against_runtime(&held_by_the_test).unwrap();
}

/// Unobserved rule 2, task_core rule 5: a completion source is a handle of its task. An
/// unobserved fault is reported when the last of the test's handle and the source goes:
/// with the test's drop at the call, at the source's drop, whenever that is.
#[test]
fn a_completion_source_is_a_handle_of_its_task() {
    let mut faulted = scenario(
        Combinator::WhenAll,
        vec![
            source(SourceOutcome::Faulted(0), true, 0), // set before the call, no input
            source(SourceOutcome::Value(1), false, 0),  // completes at point 1
        ],
        vec![],
    );
    // (the test's drop, the sources' drop, the report's point); the end is point 2.
    for (drop_after, drop_sources_after, reported_at) in [
        (0, 0, 0),
        (0, 1, 1),
        (0, u8::MAX, 2),
        (1, 0, 1),
        (1, u8::MAX, 2),
    ] {
        faulted.drop_after = drop_after;
        faulted.drop_sources_after = drop_sources_after;
        let model = Model::new(faulted.plan());
        let reports: Vec<(usize, TaskRef)> = model
            .unobserved_reports()
            .into_iter()
            .map(|(point, report)| (point, report.task))
            .collect();
        assert_eq!(
            reports,
            vec![(reported_at, TaskRef::Source(0))],
            "{faulted:?}"
        );
        run_against_runtime(&faulted).unwrap();
    }
}

/// The strategy reaches every combinator, outcome and interesting observation.
#[test]
fn the_strategy_makes_every_kind_of_scenario() {
    let mut runner = TestRunner::deterministic();
    let strategy = scenario_strategy(MAX_SOURCES, MAX_INPUTS);
    let mut seen = BTreeSet::new();
    for _ in 0..3_000 {
        let scenario = strategy
            .new_tree(&mut runner)
            .expect("scenarios never reject")
            .current();
        let plan = scenario.plan();
        seen.insert(format!("{:?}", plan.combinator));
        for outcome in &plan.outcomes {
            let name = format!("{outcome:?}");
            seen.insert(name[..name.find('(').unwrap_or(name.len())].to_owned());
        }
        if plan.inputs.len() > plan.inputs.iter().collect::<BTreeSet<_>>().len() {
            seen.insert("duplicate input".into());
        }
        if plan.drop_sources_after <= plan.order.len() {
            seen.insert("sources dropped before the end".into());
        }
        let expectations = Model::new(plan.clone()).expectations();
        let end = expectations.len() - 1;
        let observations = expectations
            .iter()
            .enumerate()
            .flat_map(|(point, observations)| observations.iter().map(move |o| (point, o)));
        for (point, observation) in observations {
            match observation {
                Observation::AnyCall { empty: true } => seen.insert("when_any empty".into()),
                Observation::AllOutcome(AllOutcome::Canceled(Some(_))) => {
                    seen.insert("when_all Canceled with a token".into())
                }
                Observation::AllOutcome(outcome) => {
                    let name = format!("{outcome:?}");
                    seen.insert(format!(
                        "when_all {}",
                        &name[..name.find('(').unwrap_or(name.len())]
                    ))
                }
                Observation::Winner { status, .. } => seen.insert(format!("winner {status:?}")),
                Observation::Polled(items) => {
                    for item in items {
                        let name = format!("{item:?}");
                        seen.insert(format!(
                            "item {}",
                            &name[..name.find('(').unwrap_or(name.len())]
                        ));
                    }
                    true
                }
                Observation::Waker { wakes, held } => {
                    seen.insert(format!("{:?} woken {}", plan.combinator, wakes > &0));
                    seen.insert(format!("{:?} waker held {held}", plan.combinator))
                }
                Observation::Reports(reports) => {
                    for report in reports {
                        seen.insert(
                            format!("report {:?}", report.task)
                                .replace(|c: char| c.is_ascii_digit(), ""),
                        );
                        if matches!(report.task, TaskRef::Source(_)) {
                            seen.insert(if point == end {
                                "report Source() at the end".into()
                            } else {
                                "report Source() before the end".into()
                            });
                        }
                        if matches!(report.errors[..], [ErrorId::Abandoned { .. }])
                            && report.task != TaskRef::Combinator
                        {
                            seen.insert("abandoned reported".into());
                        }
                    }
                    true
                }
                Observation::Registered(counts) => {
                    if counts.iter().any(|count| count.unwrap_or(0) > 1) {
                        seen.insert("two continuations on one source".into());
                    }
                    true
                }
                _ => true,
            };
        }
        if plan.cancel.is_some() {
            seen.insert("when_each canceled".into());
        }
    }
    let expected = [
        "WhenAll",
        "WhenAny",
        "WhenEach",
        "Value",
        "Faulted",
        "Canceled",
        "CanceledWithToken",
        "Abandoned",
        "duplicate input",
        "sources dropped before the end",
        "when_any empty",
        "when_all Values",
        "when_all Faulted",
        "when_all Canceled",
        "when_all Canceled with a token",
        "winner Succeeded",
        "winner Faulted",
        "winner Canceled",
        "item Task",
        "item Canceled",
        "item End",
        "item Pending",
        "report Source()",
        "report Source() at the end",
        "report Source() before the end",
        "report Combinator",
        "abandoned reported",
        "two continuations on one source",
        "when_each canceled",
        "WhenAll woken true",
        "WhenAny woken true",
        "WhenEach woken true",
        "WhenAll waker held true",
        "WhenAny waker held true",
        "WhenEach waker held true",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|name| !seen.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "never generated: {missing:?}; seen {seen:?}"
    );
}

/// Runs the property against a flawed model and returns the shrunk failing scenario.
fn minimal_failure(flaw: Flaw) -> Scenario {
    let config = Config {
        cases: 4_000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&scenario_strategy(MAX_SOURCES, MAX_INPUTS), |scenario| {
        run_against_model(&Model::with_flaw(scenario.plan(), flaw))
            .map_err(|divergence| TestCaseError::fail(divergence.to_string()))
    });
    match result {
        Err(TestError::Fail(_, scenario)) => scenario,
        other => panic!("the property missed {flaw:?}: {other:?}"),
    }
}

/// The divergence of the flawed model on its shrunk scenario: (model, runtime).
fn divergence(flaw: Flaw, scenario: &Scenario) -> (Point, Observation, Observation) {
    let divergence = run_against_model(&Model::with_flaw(scenario.plan(), flaw))
        .expect_err("the shrunk scenario still fails");
    println!("{flaw:?}: {scenario:?}\n  {divergence}");
    match divergence.kind {
        DivergenceKind::Outcome { model, runtime } => (divergence.op, model, runtime),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_model_listing_when_all_errors_in_completion_order_is_caught() {
    let flaw = Flaw::WhenAllErrorsInCompletionOrder;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    // Shrunk to two faulted inputs completing in the reverse of input order.
    assert_eq!(plan.combinator, Combinator::WhenAll);
    assert_eq!(plan.inputs.len(), 2, "{plan:?}");
    let (_, model, runtime) = divergence(flaw, &scenario);
    // The runtime's list (read, or in the `when_all` task's report) is the faithful one.
    let AllOutcome::Faulted(faithful) = Model::new(plan).when_all_outcome() else {
        panic!("not faulted");
    };
    let errors = |observation: &Observation| match observation {
        Observation::AllOutcome(AllOutcome::Faulted(errors)) => errors.clone(),
        Observation::Reports(reports) => reports[0].errors.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(errors(&runtime), faithful);
    let mut flawed = errors(&model);
    assert_ne!(flawed, faithful);
    flawed.sort();
    let mut sorted = faithful;
    sorted.sort();
    assert_eq!(flawed, sorted, "the same errors, in another order");
}

#[test]
fn a_model_picking_the_last_complete_input_is_caught() {
    let flaw = Flaw::WhenAnyPicksLastComplete;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    let (point, model, runtime) = divergence(flaw, &scenario);
    // At the call: two different sources complete at the call among the inputs; the
    // runtime picks the first in input order.
    assert_eq!(point, Point::Call);
    let first = Model::new(plan.clone()).when_any_winner().unwrap().0;
    assert_eq!(plan.inputs.iter().find(|&&i| plan.at_call[i]), Some(&first));
    assert!(matches!(runtime, Observation::Winner { source: Some(s), .. } if s == first));
    assert!(matches!(model, Observation::Winner { source: Some(s), .. } if s != first));
}

#[test]
fn a_model_whose_when_any_observes_its_winner_is_caught() {
    let flaw = Flaw::WhenAnyObservesWinner;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    let (_, model, runtime) = divergence(flaw, &scenario);
    // The faulted winner is reported by the runtime, once; the flawed model says never.
    let winner = Model::new(plan).when_any_winner().unwrap().0;
    assert_eq!(model, Observation::Reports(vec![]));
    let Observation::Reports(reports) = runtime else {
        panic!("{runtime:?}");
    };
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].task, TaskRef::Source(winner));
}

#[test]
fn a_model_whose_dropped_stream_keeps_continuations_is_caught() {
    let flaw = Flaw::WhenEachDropKeepsContinuations;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    // Shrunk to one pending input and a drop at the call.
    assert_eq!(plan.combinator, Combinator::WhenEach);
    assert_eq!(plan.inputs.len(), 1, "{plan:?}");
    let (point, model, runtime) = divergence(flaw, &scenario);
    assert_eq!(point, Point::Call);
    let input = plan.inputs[0];
    let count = |observation: &Observation| match observation {
        Observation::Registered(counts) => counts[input],
        other => panic!("{other:?}"),
    };
    assert_eq!((count(&model), count(&runtime)), (Some(1), Some(0)));
}

#[test]
fn a_model_whose_when_all_cancellation_has_no_token_is_caught() {
    let flaw = Flaw::WhenAllCanceledWithoutToken;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    // Shrunk to `when_all` over one input canceled with its token, its outcome read.
    assert_eq!(plan.combinator, Combinator::WhenAll);
    assert_eq!(plan.inputs.len(), 1, "{plan:?}");
    let input = plan.inputs[0];
    assert_eq!(plan.outcomes[input], SourceOutcome::CanceledWithToken);
    let (_, model, runtime) = divergence(flaw, &scenario);
    assert_eq!(model, Observation::AllOutcome(AllOutcome::Canceled(None)));
    assert_eq!(
        runtime,
        Observation::AllOutcome(AllOutcome::Canceled(Some(input)))
    );
}

#[test]
fn a_model_where_a_source_is_not_a_handle_is_caught() {
    let flaw = Flaw::SourceIsNotAHandle;
    let scenario = minimal_failure(flaw);
    let plan = scenario.plan();
    let (point, model, runtime) = divergence(flaw, &scenario);
    // The flawed model reports a source's fault once the test's handles are gone; the
    // runtime waits for the source's drop, later.
    let Observation::Reports(flawed) = model else {
        panic!("{model:?}");
    };
    assert_eq!(runtime, Observation::Reports(vec![]));
    assert_eq!(flawed.len(), 1, "{flawed:?}");
    let TaskRef::Source(source) = flawed[0].task else {
        panic!("{flawed:?}");
    };
    let index = match point {
        Point::Call => 0,
        Point::Complete { step, .. } => step,
        Point::End => plan.points() - 1,
    };
    let faithful = Model::new(plan).unobserved_reports();
    assert!(
        faithful
            .iter()
            .any(|(at, report)| report.task == TaskRef::Source(source) && *at > index),
        "{faithful:?}"
    );
}

/// Rule 2: the `when_any` task succeeds whatever its winner's outcome (here canceled).
#[test]
fn a_winner_carries_its_status() {
    let scenario = scenario(
        Combinator::WhenAny,
        vec![source(SourceOutcome::Canceled, true, 0)],
        vec![0],
    );
    let expectations = Model::new(scenario.plan()).expectations();
    assert!(expectations[0].contains(&Observation::Status(TaskStatus::Succeeded)));
    assert!(expectations[0].contains(&Observation::Winner {
        source: Some(0),
        status: TaskStatus::Canceled
    }));
    run_against_runtime(&scenario).unwrap();
}
