//! A real one-slot `ValueTaskSourcePool`, its producers and its consumers (value tasks:
//! status, await, drop) match the sequential model, op by op.

#![cfg(not(any(loom, shuttle)))]

use proptest::prelude::*;
use taskcheck::{SourceErrorKind, TaskStatus};
use taskcheck_props::value_task_pool::{
    pool_ops_strategy, run_against_runtime, PoolModel, PoolOp, PoolOutcome,
};
use taskcheck_props::value_task_source::Failure;

/// The longest sequence the property generates.
const MAX_OPS: usize = 64;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn runtime_matches_model(ops in pool_ops_strategy(MAX_OPS)) {
        if let Err(divergence) = run_against_runtime(&ops) {
            return Err(TestCaseError::fail(divergence.to_string()));
        }
    }
}

/// Every sequence of up to four ops over the first producer and consumer.
#[test]
fn runtime_matches_model_on_every_short_sequence() {
    let alphabet = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::SetResult {
            producer: 0,
            value: 5,
        },
        PoolOp::SetException {
            producer: 0,
            failure: Failure::Canceled,
        },
        PoolOp::DropProducer { producer: 0 },
        PoolOp::Status { consumer: 0 },
        PoolOp::Poll { consumer: 0 },
        PoolOp::DropConsumer { consumer: 0 },
        PoolOp::Poll { consumer: 1 },
    ];
    let mut sequences: Vec<Vec<PoolOp>> = vec![Vec::new()];
    for _ in 0..4 {
        let mut longer = Vec::new();
        for sequence in &sequences {
            for &op in &alphabet {
                let mut next = sequence.clone();
                next.push(op);
                if let Err(divergence) = run_against_runtime(&next) {
                    panic!("{next:?}: {divergence}");
                }
                longer.push(next);
            }
        }
        sequences = longer;
    }
}

fn outcomes(ops: &[PoolOp]) -> Vec<PoolOutcome> {
    let mut model = PoolModel::new();
    let outcomes = ops
        .iter()
        .enumerate()
        .map(|(index, &op)| model.apply(index, op).outcome)
        .collect();
    run_against_runtime(ops).unwrap();
    outcomes
}

/// Suspend, complete, resume: the slot comes back with a new version and is rented again.
#[test]
fn an_operation_returns_its_slot_when_awaited() {
    use PoolOutcome::*;
    let ops = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::Poll { consumer: 0 },
        PoolOp::SetResult {
            producer: 0,
            value: 7,
        },
        PoolOp::Poll { consumer: 0 },
        PoolOp::Rent,
    ];
    assert_eq!(
        outcomes(&ops),
        [
            Rented(0),
            Made,
            Poll(None),
            Set(Ok(())),
            Poll(Some(Ok(Ok(7)))),
            Rented(1)
        ]
    );
}

/// A consumer that gives up leaves the slot to the producer, which returns it on completion.
#[test]
fn an_abandoned_operation_returns_its_slot_on_completion() {
    use PoolOutcome::*;
    let ops = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::Poll { consumer: 0 },
        PoolOp::DropConsumer { consumer: 0 },
        PoolOp::Rent, // the slot is out: overflow, token 0
        PoolOp::SetResult {
            producer: 0,
            value: 1,
        },
        PoolOp::Rent, // the slot is back, at version 1
    ];
    assert_eq!(
        outcomes(&ops),
        [
            Rented(0),
            Made,
            Poll(None),
            Dropped,
            Rented(0),
            Set(Ok(())),
            Rented(1)
        ]
    );
}

/// An operation has one consumer: a second value task is already faulted with a typed
/// error, and dropping it does not give up the operation.
#[test]
fn a_second_value_task_of_one_operation_is_faulted() {
    use PoolOutcome::*;
    let ops = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::ValueTask { producer: 0 },
        PoolOp::Status { consumer: 1 },
        PoolOp::DropConsumer { consumer: 1 },
        PoolOp::Poll { consumer: 0 },
        PoolOp::SetResult {
            producer: 0,
            value: 3,
        },
        PoolOp::Poll { consumer: 0 },
    ];
    assert_eq!(
        outcomes(&ops),
        [
            Rented(0),
            Made,
            Made,
            Status(TaskStatus::Faulted),
            Dropped,
            Poll(None),
            Set(Ok(())),
            Poll(Some(Ok(Ok(3))))
        ]
    );
    let twice = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::ValueTask { producer: 0 },
        PoolOp::Poll { consumer: 1 },
    ];
    assert_eq!(
        outcomes(&twice)[3],
        Poll(Some(Err(SourceErrorKind::ConsumerAlreadyHandedOut)))
    );
}

/// A producer dropped uncompleted faults its operation as abandoned.
#[test]
fn a_dropped_producer_abandons_its_operation() {
    use PoolOutcome::*;
    let ops = [
        PoolOp::Rent,
        PoolOp::ValueTask { producer: 0 },
        PoolOp::DropProducer { producer: 0 },
        PoolOp::Status { consumer: 0 },
        PoolOp::Poll { consumer: 0 },
    ];
    assert_eq!(
        outcomes(&ops),
        [
            Rented(0),
            Made,
            Dropped,
            Status(TaskStatus::Faulted),
            Poll(Some(Ok(Err(Failure::Abandoned))))
        ]
    );
}
