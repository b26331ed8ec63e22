//! Combinator scenarios against the reference model: `cargo +nightly fuzz run combinators`.
//!
//! Each input is a `taskcheck_props::combinators::Scenario`: completion sources with
//! arbitrary outcomes (cancellations with or without a token), complete before the call or
//! later in an arbitrary order, an input list with duplicates, `when_all` / `when_any` /
//! `when_each`, when the test drops its handles and when it drops the sources (each a
//! handle of its task), and `when_each`'s cancellation and polling. `Scenario::plan` caps it at
//! `MAX_SOURCES` sources and `MAX_INPUTS` inputs, so a run is a few dozen steps and never
//! blocks. Any divergence from the model (outcome, error order, winner, items, wakes,
//! unobserved-error reports, registered continuations, a runtime panic) is a crash whose
//! message names the point and both sides.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcheck_props::combinators::{run_against_runtime, Scenario};

fuzz_target!(|scenario: Scenario| {
    if let Err(divergence) = run_against_runtime(&scenario) {
        panic!(
            "{divergence}\nscenario: {scenario:?}\nplan: {:?}",
            scenario.plan()
        );
    }
});
