//! The real `ManualResetValueTaskSourceCore` matches the sequential model, op by op, and the
//! property comparing them can fail: deliberately flawed models are caught and shrunk to a
//! minimal sequence.

#![cfg(not(any(loom, shuttle)))]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestError, TestRunner};
use taskcheck::{SourceErrorKind, TaskStatus};
use taskcheck_props::value_task_source::{
    op_strategy, ops_strategy, run_against_model, run_against_runtime, Failure, Flaw, Model, Op,
    Outcome, Token,
};
use taskcheck_props::DivergenceKind;

/// The longest sequence the properties generate.
const MAX_OPS: usize = 64;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn runtime_matches_model(ops in ops_strategy(MAX_OPS)) {
        if let Err(divergence) = run_against_runtime(&ops) {
            return Err(TestCaseError::fail(divergence.to_string()));
        }
    }
}

/// Every sequence of up to three ops over a small alphabet (tokens current, previous, next
/// and one far away; both completion forms; every kind of failure).
#[test]
fn runtime_matches_model_on_every_short_sequence() {
    let tokens = [
        Token::Current,
        Token::Previous,
        Token::Next,
        Token::Raw(u64::MAX),
    ];
    let owner_or_producer = [None, Some(Token::Current), Some(Token::Previous)];
    let mut alphabet = vec![Op::Reset];
    for token in owner_or_producer {
        alphabet.push(Op::SetResult { token, value: 7 });
        alphabet.push(Op::SetException {
            token,
            failure: Failure::Faulted(3),
        });
        alphabet.push(Op::SetException {
            token,
            failure: Failure::Canceled,
        });
        alphabet.push(Op::SetException {
            token,
            failure: Failure::Abandoned,
        });
    }
    for token in tokens {
        alphabet.extend([
            Op::GetResult(token),
            Op::OnCompleted(token),
            Op::Status(token),
        ]);
    }
    let mut sequences: Vec<Vec<Op>> = vec![Vec::new()];
    let mut checked = 0;
    for _ in 0..3 {
        let mut longer = Vec::new();
        for sequence in &sequences {
            for &op in &alphabet {
                let mut next = sequence.clone();
                next.push(op);
                if let Err(divergence) = run_against_runtime(&next) {
                    panic!("{next:?}: {divergence}");
                }
                checked += 1;
                longer.push(next);
            }
        }
        sequences = longer;
    }
    assert!(checked > 10_000, "{checked}");
}

/// A consumer and a producer through two operations, as a pooled source runs them.
#[test]
fn the_pooled_protocol_in_order() {
    let ops = [
        Op::OnCompleted(Token::Current), // the consumer suspends
        Op::SetResult {
            token: Some(Token::Current),
            value: 1,
        }, // the producer completes: wakes #0
        Op::Status(Token::Current),      // Succeeded
        Op::GetResult(Token::Current),   // the consumer takes 1
        Op::Reset,                       // the slot goes back to the pool
        Op::SetResult {
            token: Some(Token::Previous),
            value: 2,
        }, // a stale producer: refused
        Op::GetResult(Token::Previous),  // a stale consumer: refused
        Op::SetException {
            token: Some(Token::Current),
            failure: Failure::Faulted(9),
        },
        Op::OnCompleted(Token::Current), // completed: resumed at once
        Op::GetResult(Token::Current),   // the fault
        Op::GetResult(Token::Current),   // taken already
    ];
    let mut model = Model::new();
    let steps: Vec<_> = ops
        .iter()
        .enumerate()
        .map(|(index, &op)| model.apply(index, op))
        .collect();
    let stale = SourceErrorKind::StaleToken {
        token: 0,
        current: 1,
    };
    assert_eq!(steps[1].woken, Some(0));
    assert_eq!(steps[2].outcome, Outcome::Status(Ok(TaskStatus::Succeeded)));
    assert_eq!(steps[3].outcome, Outcome::GetResult(Ok(Ok(1))));
    assert_eq!(steps[4].outcome, Outcome::Reset(1));
    assert_eq!(steps[5].outcome, Outcome::Set(Err(stale)));
    assert_eq!(steps[6].outcome, Outcome::GetResult(Err(stale)));
    assert_eq!(steps[8].woken, Some(8));
    assert_eq!(
        steps[9].outcome,
        Outcome::GetResult(Ok(Err(Failure::Faulted(9))))
    );
    assert_eq!(
        steps[10].outcome,
        Outcome::GetResult(Err(SourceErrorKind::ResultAlreadyTaken))
    );
    run_against_runtime(&ops).unwrap();
}

/// The strategy makes every variant of `Op` and every kind of token. `variant` does not
/// compile when `Op` grows a variant: widen `VARIANTS` and `op_strategy` with it.
#[test]
fn the_strategy_makes_every_op_and_token() {
    const VARIANTS: usize = 6;
    fn variant(op: &Op) -> usize {
        match op {
            Op::Reset => 0,
            Op::SetResult { .. } => 1,
            Op::SetException { .. } => 2,
            Op::GetResult(_) => 3,
            Op::OnCompleted(_) => 4,
            Op::Status(_) => 5,
        }
    }
    fn token_kind(token: Token) -> usize {
        match token {
            Token::Current => 0,
            Token::Previous => 1,
            Token::Next => 2,
            Token::Raw(_) => 3,
        }
    }
    let mut runner = TestRunner::deterministic();
    let mut variants = [false; VARIANTS];
    let mut tokens = [false; 4];
    let mut bound = [false; 2];
    let mut failures = [false; 3];
    for _ in 0..2_000 {
        let op = op_strategy()
            .new_tree(&mut runner)
            .expect("ops never reject")
            .current();
        variants[variant(&op)] = true;
        match op {
            Op::GetResult(token) | Op::OnCompleted(token) | Op::Status(token) => {
                tokens[token_kind(token)] = true;
            }
            Op::SetResult { token, .. } => bound[usize::from(token.is_some())] = true,
            Op::SetException { token, failure } => {
                bound[usize::from(token.is_some())] = true;
                failures[match failure {
                    Failure::Faulted(_) => 0,
                    Failure::Canceled => 1,
                    Failure::Abandoned => 2,
                }] = true;
            }
            Op::Reset => {}
        }
    }
    assert_eq!(variants, [true; VARIANTS]);
    assert_eq!(tokens, [true; 4]);
    assert_eq!(bound, [true; 2]);
    assert_eq!(failures, [true; 3]);
}

/// Runs the property against a flawed model and returns the shrunk failing sequence.
fn minimal_failure(flaw: Flaw) -> Vec<Op> {
    let config = Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&ops_strategy(MAX_OPS), |ops| {
        run_against_model(Model::with_flaw(flaw), &ops)
            .map_err(|divergence| TestCaseError::fail(divergence.to_string()))
    });
    match result {
        Err(TestError::Fail(_, ops)) => ops,
        other => panic!("the property missed {flaw:?}: {other:?}"),
    }
}

#[test]
fn a_model_that_accepts_stale_tokens_is_caught() {
    let ops = minimal_failure(Flaw::AcceptStaleTokens);
    // Shrunk to one op with a wrong token, which the runtime refuses and the model accepts.
    assert_eq!(ops.len(), 1, "{ops:?}");
    let divergence = run_against_model(Model::with_flaw(Flaw::AcceptStaleTokens), &ops)
        .expect_err("the shrunk sequence still fails");
    match divergence.kind {
        DivergenceKind::Outcome { runtime, .. } => assert!(
            matches!(
                runtime,
                Outcome::Set(Err(SourceErrorKind::StaleToken { .. }))
                    | Outcome::GetResult(Err(SourceErrorKind::StaleToken { .. }))
                    | Outcome::OnCompleted(Err(SourceErrorKind::StaleToken { .. }))
                    | Outcome::Status(Err(SourceErrorKind::StaleToken { .. }))
            ),
            "{divergence}"
        ),
        _ => panic!("{divergence}"),
    }
}

#[test]
fn a_model_whose_reset_keeps_the_continuation_is_caught() {
    let ops = minimal_failure(Flaw::ResetKeepsContinuation);
    // Shrunk to: register, reset. The runtime drops the continuation; the model keeps it.
    assert_eq!(ops, [Op::OnCompleted(Token::Current), Op::Reset]);
    let divergence = run_against_model(Model::with_flaw(Flaw::ResetKeepsContinuation), &ops)
        .expect_err("the shrunk sequence still fails");
    assert_eq!(
        divergence.kind,
        DivergenceKind::Held {
            model: vec![0],
            runtime: vec![]
        },
        "{divergence}"
    );
}
