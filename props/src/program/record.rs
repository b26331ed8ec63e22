//! What a run of a program shows: the [`Record`] that the runtime produces and the model
//! predicts (a set of them), and the quiescence [`Snapshot`].

use std::fmt;

/// A task's value, abstracted over the slot types.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// A `Task<i64>`'s value.
    Int(i64),
    /// A `when_all`'s values, in input order.
    List(Vec<i64>),
    /// A `when_any`'s winner: the first input slot holding the winning task (inputs are
    /// compared by task identity: two slots holding `start`'s same cached task are one).
    Winner(usize),
    /// A delay's `()`.
    Unit,
}

/// One error of a fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// [`Planted`](super::Planted)`(code)`: a body's `Fail` or a source's `SetException`.
    Planted(u8),
    /// A body's planted panic.
    Panic(u8),
    /// An abandoned task (its completion source was dropped unset).
    Abandoned,
    /// Anything else: an error no program makes, displayed.
    Other(String),
}

/// Why a task has no value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// Faulted with these errors, in order.
    Faulted(Vec<Fault>),
    /// Canceled, carrying cancellation source `n`'s token (`None`: no token;
    /// `Some(usize::MAX)`: a token the run did not make).
    Canceled(Option<usize>),
}

/// A task's outcome.
pub type Outcome = Result<Value, Failure>;

/// What a driver op returned, in op order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpResult {
    /// `try_set_*`: whether it won.
    TrySet(bool),
    /// `register`: `Ok(stored)` (`false`: the token was canceled and the callback ran
    /// inline), or `Err(())` when the inline callback's panic reached the caller.
    Register(Result<bool, ()>),
    /// `cancel()`: how many callback failures it returned (`usize::MAX`: another error).
    Cancel(usize),
    /// `advance`: how many timers fired.
    Advance(usize),
    /// `when_any` of nothing returned its error.
    WhenAnyEmpty(bool),
    /// A blocking wait's outcome (it observes the task).
    Wait(Outcome),
}

/// A slot's final state, read without observing a fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Final {
    /// The driver no longer holds the slot.
    Unheld,
    /// Still pending (a task that never completed: always wrong).
    Pending,
    /// Succeeded with this value.
    Succeeded(Value),
    /// Faulted (the errors are not read: that would observe them).
    Faulted,
    /// Canceled, with the token it carries (see [`Failure::Canceled`]).
    Canceled(Option<usize>),
}

/// Which hook a report went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookKind {
    /// The pool context's hook (tasks spawned onto the pool).
    Pool,
    /// The process-wide hook (completion sources, eager starts off any context,
    /// combinators).
    Global,
}

/// One unobserved-error report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Report {
    /// The reported task's slot.
    pub slot: usize,
    /// Which hook received it.
    pub hook: HookKind,
    /// Its errors.
    pub faults: Vec<Fault>,
}

/// Everything a run shows, compared as a whole with the model's set of allowed records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Record {
    /// What the driver's ops returned, in order.
    pub results: Vec<OpResult>,
    /// The cancellation callbacks that ran, by number, in the order they ran.
    pub callbacks: Vec<usize>,
    /// Each slot's final state.
    pub finals: Vec<Final>,
    /// The unobserved-error reports, sorted.
    pub reports: Vec<Report>,
}

/// At quiescence, for each slot the driver holds: (completed?, registered continuations).
pub type Snapshot = Vec<Option<(bool, usize)>>;

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    results:   {:?}", self.results)?;
        writeln!(f, "    callbacks: {:?}", self.callbacks)?;
        writeln!(f, "    finals:    {:?}", self.finals)?;
        write!(f, "    reports:   {:?}", self.reports)
    }
}

impl Record {
    /// The names of the fields that differ from `other`.
    pub fn differences(&self, other: &Record) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.results != other.results {
            fields.push("results");
        }
        if self.callbacks != other.callbacks {
            fields.push("callbacks");
        }
        if self.finals != other.finals {
            fields.push("finals");
        }
        if self.reports != other.reports {
            fields.push("reports");
        }
        fields
    }
}
