//! The whole-program property under shuttle: proptest chooses the program *and* the
//! shuttle seed, so a failure shrinks to a minimal program and a replayable schedule.
//!
//! Run with `RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-props
//! --target-dir target/shuttle --test program_shuttle`.
//!
//! Each case computes the model's expectation once (outside shuttle), then runs
//! [`SCHEDULES_PER_CASE`] random schedules derived from the case's seed, each running the
//! same driver as the std property inside a shuttle execution (the runtime's pool workers
//! are shuttle threads; there is no default pool, so a continuation that captured nothing
//! runs on the waking thread). A failing case is replayed with [`replay`]: the same
//! program, seed and schedule count give the same schedules.
//!
//! The planted-bug tests switch on a runtime knob (`taskcheck::knobs`, model builds only)
//! and show that the property catches it.

#![cfg(shuttle)]

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use shuttle::scheduler::RandomScheduler;
use shuttle::{FailurePersistence, Runner};
use taskcheck::knobs::{with_knob, Knob};
use taskcheck_props::program::dsl::{program_strategy, MAX_OPS};
use taskcheck_props::program::{
    expect, run_expectation, Expectation, Model, ModelError, Problem, Program,
};

/// Schedules tried per generated program.
const SCHEDULES_PER_CASE: usize = 8;
/// Programs the property generates.
const CASES: u32 = 20_000;

/// Runs `SCHEDULES_PER_CASE` shuttle schedules of `expectation`'s plan from `seed`, with
/// `knob` switched on if given; the first failure's message.
fn run_schedules(
    expectation: Arc<Expectation>,
    seed: u64,
    knob: Option<Knob>,
    persistence: FailurePersistence,
) -> Result<(), String> {
    let mut config = shuttle::Config::new();
    config.failure_persistence = persistence;
    // Planted panics unwind through nested inline polls: more room than the 60 KiB default.
    config.stack_size = 1 << 20;
    let runner = Runner::new(
        RandomScheduler::new_from_seed(seed, SCHEDULES_PER_CASE),
        config,
    );
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        runner.run(move || {
            let check = || run_expectation(&expectation);
            let result = match knob {
                Some(knob) => with_knob(knob, check),
                None => check(),
            };
            if let Err(error) = result {
                panic!("{error}");
            }
        })
    }));
    run.map(|_| ()).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
    })
}

/// Checks one (program, seed) case.
fn check_case(program: &Program, seed: u64, knob: Option<Knob>) -> Result<(), TestCaseError> {
    let expectation = match expect(&Model::new(), program) {
        Ok(expectation) => expectation,
        // More interleavings than the model's budget: not a finding.
        Err(error) if matches!(*error.problem, Problem::Model(ModelError::TooManyStates(_))) => {
            return Err(TestCaseError::reject(
                "too many interleavings for the model",
            ));
        }
        Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
    };
    run_schedules(Arc::new(expectation), seed, knob, FailurePersistence::None).map_err(|message| {
        TestCaseError::fail(format!(
            "{message}\nreplay: program_shuttle::replay(&{program:?}, {seed})"
        ))
    })
}

/// Replays a failing case with shuttle printing the failing schedule (for
/// `shuttle::replay`). Use it from a scratch test while debugging.
#[allow(dead_code)]
pub fn replay(program: &Program, seed: u64) {
    let expectation = expect(&Model::new(), program).expect("the model answers");
    if let Err(message) =
        run_schedules(Arc::new(expectation), seed, None, FailurePersistence::Print)
    {
        panic!("{message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn shuttle_schedules_have_outcomes_the_model_allows(
        program in program_strategy(MAX_OPS),
        seed in any::<u64>(),
    ) {
        check_case(&program, seed, None)?;
    }
}

/// Runs the property with `knob` on and returns the shrunk failing case and its message.
fn minimal_failure(knob: Knob, cases: u32) -> (Program, u64, String) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let strategy = (program_strategy(MAX_OPS), any::<u64>());
    let result = TestRunner::new_with_rng(config, rng).run(&strategy, |(program, seed)| {
        check_case(&program, seed, Some(knob))
    });
    match result {
        Err(TestError::Fail(message, (program, seed))) => (program, seed, message.to_string()),
        other => panic!("the property missed {knob:?}: {other:?}"),
    }
}

/// The last handle's drop racing the completion reports one fault twice.
#[test]
fn a_double_report_is_caught() {
    let (program, seed, message) = minimal_failure(Knob::UnobservedDoubleReport, 2_000);
    println!("caught, shrunk to {program:?}, seed {seed}:\n{message}");
    assert!(program.ops.len() <= 4, "{program:?}\n{message}");
    assert!(message.contains("reports"), "{message}");
}

/// `when_all` counting arrivals racily completes early (with an input still pending) or
/// never (the driver's final wait is then a deadlock shuttle reports).
#[test]
fn a_racy_when_all_count_is_caught() {
    let (program, seed, message) = minimal_failure(Knob::WhenAllRacyCount, 2_000);
    println!("caught, shrunk to {program:?}, seed {seed}:\n{message}");
    // The seed shrinks with the program (a smaller program replays other schedules), so
    // the shrunk case keeps a few bystander ops; the when_all is always there.
    assert!(program.ops.len() <= 8, "{program:?}\n{message}");
    assert!(
        program
            .ops
            .iter()
            .any(|op| matches!(op, taskcheck_props::program::Op::WhenAll { .. })),
        "{program:?}"
    );
}

/// `when_any` keeping its continuations on the losers: the quiescence check sees a
/// continuation the model does not have.
#[test]
fn a_when_any_that_keeps_its_losers_is_caught() {
    let (program, seed, message) = minimal_failure(Knob::WhenAnyKeepLosers, 500);
    println!("caught, shrunk to {program:?}, seed {seed}:\n{message}");
    assert!(program.ops.len() <= 4, "{program:?}\n{message}");
    assert!(message.contains("quiescent"), "{message}");
}
