#![cfg(shuttle)]
//! # Pooled value tasks at scale
//!
//! The loom kernels (`loom_value_task.rs`) check one race at a time, exhaustively. Here
//! shuttle checks the whole pooled value-task life cycle with more parties than loom can
//! afford, under random and PCT schedules:
//!
//! - a **2-slot** `ValueTaskSourcePool<u64>`, so slots are reused constantly and rentals
//!   beyond two overflow to unpooled sources;
//! - **2 consumer tasks** on a **2-worker** `ThreadPool`; each runs [`OPERATIONS`]
//!   operations in turn: it rents a source, hands the producer side to a producer thread,
//!   and awaits the value task (resuming on the pool when the producer completes);
//! - **3 producer threads**, each completing whatever it is handed, in order.
//!
//! To cover every way an operation ends, operation `k` of a consumer ends in one of four
//! ways (`k % 4`): completed with a value and awaited; completed with a value after the
//! consumer dropped its value task without awaiting it (the slot must still come back);
//! its producer dropped without completing (the await faults as abandoned); completed and
//! awaited, but with the value task converted by `as_task()` first.
//!
//! Checked in every schedule:
//!
//! 1. Every awaited value is delivered exactly once, to the consumer and operation it was
//!    produced for (values encode both), and each producer's completion is accepted.
//! 2. An operation whose producer was dropped faults as abandoned; nothing hangs.
//! 3. At the end every slot is back (`rented() == 0`) and every task is terminal (shuttle
//!    drops whatever is still pending when the main thread ends, so this is asserted).
//!
//! The broken twin, [`racy_rent_is_caught`], turns on `Knob::RacyRent` (renting checks and
//! takes a slot in two steps): two rentals share a slot and a token, and shuttle finds a
//! schedule where a producer's completion is refused or a consumer reads the wrong value.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models \
//!     --target-dir target/shuttle --test shuttle_value_task -- --nocapture
//! ```

use shuttle::sync::mpsc;
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{Task, TaskError, TaskStatus, ThreadPool, ValueTaskProducer, ValueTaskSourcePool};
use taskcheck_models::{shuttle_expect_failure, shuttle_pct, shuttle_random, Strategy};

/// Schedules per strategy.
const ITERATIONS: usize = 1_000;
/// PCT's bug depth.
const PCT_DEPTH: usize = 3;
/// PCT schedules the broken twin may take to be caught. Its double rent needs two
/// rentals of one slot interleaved between their check and their take; PCT found one
/// after 30 to 1,500 schedules in repeated runs (so 1,000 sometimes misses it), random after
/// 1 to 20. The run stops at the first catch, so the budget costs nothing when it is met.
const TWIN_PCT_ITERATIONS: usize = 20_000;
/// Consumer tasks.
const CONSUMERS: u64 = 2;
/// Operations per consumer.
const OPERATIONS: u64 = 4;
/// Producer threads.
const PRODUCERS: usize = 3;
/// Slots in the source pool.
const SLOTS: usize = 2;

/// The value operation `op` of consumer `consumer` is completed with.
fn value_for(consumer: u64, op: u64) -> u64 {
    consumer * 1_000 + op
}

/// How operation `op` ends (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Awaited,
    ConsumerDropsValueTask,
    ProducerDropped,
    AwaitedAsTask,
}

fn ending(op: u64) -> Ending {
    match op % 4 {
        0 => Ending::Awaited,
        1 => Ending::ConsumerDropsValueTask,
        2 => Ending::ProducerDropped,
        _ => Ending::AwaitedAsTask,
    }
}

/// What a producer thread is handed: the producer side and what to do with it.
struct Job {
    producer: ValueTaskProducer<u64>,
    value: u64,
    complete: bool,
}

/// One consumer: its operations in turn.
async fn consume(
    consumer: u64,
    sources: ValueTaskSourcePool<u64>,
    producers: Vec<mpsc::Sender<Job>>,
    delivered: Arc<Mutex<Vec<u64>>>,
) -> Result<u64, TaskError> {
    let mut sum = 0;
    for op in 0..OPERATIONS {
        let producer = sources.rent();
        let value_task = producer.value_task();
        let value = value_for(consumer, op);
        let how = ending(op);
        let to = usize::try_from(consumer + op).unwrap() % PRODUCERS;
        producers[to]
            .send(Job {
                producer,
                value,
                complete: how != Ending::ProducerDropped,
            })
            .expect("the producer threads outlive the consumers");
        let outcome = match how {
            Ending::ConsumerDropsValueTask => {
                drop(value_task);
                continue;
            }
            Ending::AwaitedAsTask => value_task.as_task().await,
            Ending::Awaited | Ending::ProducerDropped => value_task.await,
        };
        match (how, outcome) {
            (Ending::ProducerDropped, Err(error)) if error.is_abandoned() => {}
            (Ending::ProducerDropped, other) => {
                panic!("violation: a dropped producer must fault its operation as abandoned, got {other:?}")
            }
            (_, Ok(read)) => {
                assert_eq!(
                    read, value,
                    "violation: consumer {consumer} operation {op} read another operation's value"
                );
                delivered.lock().unwrap().push(read);
                sum += read;
            }
            (_, Err(error)) => {
                panic!("violation: consumer {consumer} operation {op} failed: {error}")
            }
        }
    }
    Ok(sum)
}

/// The scenario (see the module docs).
fn scenario() {
    let workers = ThreadPool::with_name("workers", 2);
    let sources = ValueTaskSourcePool::<u64>::new(SLOTS);
    let delivered = Arc::new(Mutex::new(Vec::new()));

    let mut senders = Vec::new();
    let mut producer_threads = Vec::new();
    for _ in 0..PRODUCERS {
        let (sender, jobs) = mpsc::channel::<Job>();
        senders.push(sender);
        producer_threads.push(thread::spawn(move || {
            while let Ok(job) = jobs.recv() {
                if job.complete {
                    if let Err(error) = job.producer.set_result(job.value) {
                        panic!(
                            "violation: the completion of operation {} was refused (double rent?): {error}",
                            job.value
                        );
                    }
                } else {
                    drop(job.producer);
                }
            }
        }));
    }

    let consumers: Vec<Task<u64>> = (0..CONSUMERS)
        .map(|consumer| {
            workers.spawn(consume(
                consumer,
                sources.clone(),
                senders.clone(),
                delivered.clone(),
            ))
        })
        .collect();
    // The consumers hold the only senders now: the producers stop once both are done.
    drop(senders);

    for (consumer, task) in consumers.iter().enumerate() {
        let consumer = consumer as u64;
        let expected: u64 = (0..OPERATIONS)
            .filter(|op| matches!(ending(*op), Ending::Awaited | Ending::AwaitedAsTask))
            .map(|op| value_for(consumer, op))
            .sum();
        match task.wait() {
            Ok(sum) => assert_eq!(sum, expected, "violation: consumer {consumer}'s sum"),
            Err(error) => panic!("violation: consumer {consumer} failed: {error}"),
        }
    }
    for producer in producer_threads {
        producer.join().unwrap();
    }

    // Exactly once, to the right consumer.
    let mut delivered = delivered.lock().unwrap().clone();
    delivered.sort_unstable();
    let mut expected: Vec<u64> = (0..CONSUMERS)
        .flat_map(|consumer| {
            (0..OPERATIONS)
                .filter(|op| matches!(ending(*op), Ending::Awaited | Ending::AwaitedAsTask))
                .map(move |op| value_for(consumer, op))
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(
        delivered, expected,
        "violation: every awaited value delivered exactly once"
    );

    // Every slot back, every task terminal.
    assert_eq!(
        sources.rented(),
        0,
        "violation: every slot is back in the pool"
    );
    for task in &consumers {
        assert_ne!(
            task.status(),
            TaskStatus::Pending,
            "violation: every task is terminal"
        );
    }
    workers.shutdown();
}

#[test]
fn pooled_sources_shared_by_many_producers_and_consumers() {
    let name = "shuttle_value_task::pooled_sources_shared_by_many_producers_and_consumers";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, scenario);
    shuttle_random(name, ITERATIONS, scenario);
}

#[test]
fn racy_rent_is_caught() {
    let name = "shuttle_value_task::racy_rent_is_caught";
    for strategy in [
        Strategy::Pct {
            iterations: TWIN_PCT_ITERATIONS,
            depth: PCT_DEPTH,
        },
        Strategy::Random(ITERATIONS),
    ] {
        let failure = shuttle_expect_failure(name, strategy, "violation", || {
            with_knob(Knob::RacyRent, scenario)
        });
        println!("{failure}");
    }
}
