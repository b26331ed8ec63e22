//! Cancellation sources, tokens, registrations and a manual clock against the reference
//! model: `cargo +nightly fuzz run cancellation`.
//!
//! Each input is a sequence of `taskcheck_props::cancellation::Op`s (at most 256 are used),
//! applied to the real runtime (one thread, one manual clock) and to the sequential model;
//! any divergence (an op's outcome, the callback log, the sources', clock's and
//! registrations' state afterwards with whether each callback's closure is alive, a runtime
//! panic) is a crash whose message names the op and both sides, and gives the sequence
//! minimized.
//!
//! Callbacks panic on purpose; the driver keeps those panics (and only those) from
//! reaching libFuzzer's panic hook, which aborts. Callbacks that fail under a timer are
//! reported by the runtime on stderr.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcheck_props::cancellation::{minimize, run_against_runtime, Op};

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(256)];
    if let Err(divergence) = run_against_runtime(ops) {
        let minimal = minimize(ops, |ops| run_against_runtime(ops).is_err());
        panic!("{divergence}\nminimal ops: {minimal:?}\nops: {ops:?}");
    }
});
