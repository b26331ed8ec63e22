//! Pool, producer and consumer operation sequences against the reference model:
//! `cargo +nightly fuzz run value_task_pool`.
//!
//! Each input is a sequence of `taskcheck_props::value_task_pool::PoolOp`s (at most 256 are
//! used), applied to a real one-slot `ValueTaskSourcePool<u32>` (its producers and the
//! consumers' value tasks: status, await, drop) and to the sequential model; any divergence
//! (outcome, rented count, continuation woken or held, runtime panic) is a crash whose
//! message names the op and both sides.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcheck_props::value_task_pool::{run_against_runtime, PoolOp};

fuzz_target!(|ops: Vec<PoolOp>| {
    let ops = &ops[..ops.len().min(256)];
    if let Err(divergence) = run_against_runtime(ops) {
        panic!("{divergence}\nops: {ops:?}");
    }
});
