//! Whole programs against the reference model: `cargo +nightly fuzz run program`.
//!
//! Each input decodes (with `arbitrary`) to a `taskcheck_props::program::Program`: the
//! same DSL the proptest properties generate. It is resolved and bounded by `Plan::new` (at
//! most 12 driver ops, 4 steps per body, a few slots of each kind, so a run never hangs),
//! the model lists every outcome the semantics allow, and the program runs on the real
//! runtime (2-worker pool, real threads, a manual clock). A crash is any of: a record the
//! model does not allow (op results, callback order, final states, unobserved reports), a
//! leaked or missing continuation at quiescence, a task that never completes, a body
//! future never dropped, a panic escaping the runtime. Its message shows the resolved
//! program, what the runtime did and the closest records the model allows.
//!
//! Seeds: `fuzz/seeds/program/` (committed; `fuzz/corpus` is not). Run
//! `cargo +nightly fuzz run program fuzz/corpus/program fuzz/seeds/program` so new inputs
//! go to the corpus and the seeds are read too.
//!
//! `TASKCHECK_PROGRAM_FLAW=CallbacksFifo` (or `WhenAllDoesNotObserve`, `WhenAnyPicksLast`,
//! `CanceledIsReported`, `WhenAllCanceledWithoutToken`) fuzzes against a deliberately wrong
//! model: the fuzzer finds the planted bug within seconds, which shows the target can fail.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use taskcheck_props::program::{
    check_program, install_panic_filter, Flaw, Model, ModelError, Problem, Program,
};

/// The model, flawed on purpose if `TASKCHECK_PROGRAM_FLAW` names a flaw.
fn model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    *MODEL.get_or_init(|| {
        let flaw = match std::env::var("TASKCHECK_PROGRAM_FLAW").as_deref() {
            Ok("CallbacksFifo") => Some(Flaw::CallbacksFifo),
            Ok("WhenAllDoesNotObserve") => Some(Flaw::WhenAllDoesNotObserve),
            Ok("WhenAnyPicksLast") => Some(Flaw::WhenAnyPicksLast),
            Ok("CanceledIsReported") => Some(Flaw::CanceledIsReported),
            Ok("WhenAllCanceledWithoutToken") => Some(Flaw::WhenAllCanceledWithoutToken),
            Ok(other) => panic!("TASKCHECK_PROGRAM_FLAW={other}: not a flaw"),
            Err(_) => None,
        };
        flaw.map_or_else(Model::new, Model::with_flaw)
    })
}

fuzz_target!(|program: Program| {
    // libFuzzer's panic hook aborts on any panic, even a caught one: let planted panics
    // (body steps, cancellation callbacks) through silently, abort on everything else.
    install_panic_filter();
    match check_program(&model(), &program) {
        Ok(_) => {}
        // Too many interleavings for the model's budget: not a finding.
        Err(error) if matches!(*error.problem, Problem::Model(ModelError::TooManyStates(_))) => {}
        Err(error) => panic!("{error}\nprogram: {program:?}"),
    }
});
