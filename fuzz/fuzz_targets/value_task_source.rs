//! Value-task source operation sequences (with stale and future tokens) against the
//! reference model: `cargo +nightly fuzz run value_task_source`.
//!
//! Each input is a sequence of `taskcheck_props::value_task_source::Op`s (at most 256 are
//! used), applied to a real `ManualResetValueTaskSourceCore<u32>` and to the sequential
//! model; any divergence (outcome, version, continuation woken or held, runtime panic) is a
//! crash whose message names the op and both sides.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcheck_props::value_task_source::{run_against_runtime, Op};

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(256)];
    if let Err(divergence) = run_against_runtime(ops) {
        panic!("{divergence}\nops: {ops:?}");
    }
});
