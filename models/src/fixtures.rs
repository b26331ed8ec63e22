//! Small pieces the model files share: an error to fault tasks with, and a fault's
//! messages in order.

use std::error::Error;
use std::fmt;

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
