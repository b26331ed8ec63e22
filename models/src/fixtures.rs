//! Small pieces the model files share: an error to fault tasks with, a fault's messages
//! in order, and a counter showing that a model reached both sides of its race.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use taskcheck::TaskError;

/// The error a model's tasks fault with; it displays as `"<what> failed"`.
#[derive(Debug)]
pub struct Boom(pub &'static str);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.0)
    }
}

impl Error for Boom {}

/// The messages of a fault's errors, in order (none for a cancellation).
pub fn messages(error: &TaskError) -> Vec<String> {
    error.errors().map(ToString::to_string).collect()
}

/// How often each of two cases happened across the executions of one model: a model shows
/// with it that the checker explored both (a model that never reached one would pass
/// vacuously). Plain std atomics on purpose: it outlives each execution.
#[derive(Clone, Debug, Default)]
pub struct Cases(Arc<[AtomicUsize; 2]>);

impl Cases {
    /// Counts one execution that took the first (`false`) or second (`true`) case.
    pub fn hit(&self, second: bool) {
        self.0[usize::from(second)].fetch_add(1, Ordering::SeqCst);
    }

    /// Asserts that both cases happened, after the model ran.
    pub fn assert_both(&self, names: [&str; 2]) {
        for (count, name) in self.0.iter().zip(names) {
            assert!(
                count.load(Ordering::SeqCst) > 0,
                "the checker never explored an execution where {name}"
            );
        }
    }
}
