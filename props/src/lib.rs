//! Sequential reference models of taskcheck's semantics, and drivers that run the real
//! runtime next to them and report the first divergence.
//!
//! A model here is deliberately small and plain: it states a contract of `taskcheck` (the
//! rules in the runtime's module docs and in `DESIGN.md`) as a state machine with no
//! concurrency and no cleverness, so that it can be checked by reading. The drivers are
//! what the proptest properties (`tests/`) and the cargo-fuzz targets (`fuzz/`) call: they
//! take a sequence of generated operations, apply each to the runtime and to the model, and
//! return a typed [`Divergence`] instead of panicking.
//!
//! | module | contract | driver |
//! |---|---|---|
//! | [`value_task_source`] | `ManualResetValueTaskSourceCore`: tokens, one completion, one continuation, one take, reset | [`value_task_source::run_against_runtime`] |
//! | [`value_task_pool`] | `ValueTaskSourcePool`: rent, producer, consumer (`ValueTask` status, await, drop), return of the slot | [`value_task_pool::run_against_runtime`] |
//!
//! Operations derive [`arbitrary::Arbitrary`] (fuzzing) and implement proptest's
//! `Arbitrary` (properties) from the same enum.
//!
//! The crate runs the std build of the runtime. Under `--cfg loom` / `--cfg shuttle` it is
//! empty, so a model build of the whole workspace skips it.

#![warn(missing_docs)]

#[cfg(not(any(loom, shuttle)))]
mod harness;
#[cfg(not(any(loom, shuttle)))]
pub mod value_task_pool;
#[cfg(not(any(loom, shuttle)))]
pub mod value_task_source;

#[cfg(not(any(loom, shuttle)))]
pub use harness::{Divergence, DivergenceKind};
