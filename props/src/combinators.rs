//! A sequential reference model of the combinators ([`when_all`], [`when_any`],
//! [`when_each`]) and of the unobserved-error reports around them, and a driver that builds
//! each scenario on the real runtime and compares every observable, point by point.
//!
//! # Scenarios
//!
//! A [`Scenario`] is a handful of [`TaskCompletionSource`]s ("sources"), each with the
//! [`SourceOutcome`] it will end with (a value, a fault of one to three errors, a
//! cancellation with or without a token, or abandonment: the source dropped unset) and
//! whether it is complete before the combinator is called; the combinator's input list,
//! indices into the sources (duplicates allowed, in any order, possibly empty); the
//! completion order of the other sources (by `rank`, ties by index); the point after which
//! the test drops every handle it holds; the point from which it drops the sources
//! themselves (each one once its task is complete; at the end at the latest); and, for
//! `when_each`, whether and when its token is canceled, and after which completions the
//! stream is polled. [`Scenario::plan`] normalizes any value (indices modulo the number of
//! sources, sizes capped at [`MAX_SOURCES`] and [`MAX_INPUTS`]) into a [`Plan`], so every
//! generated value is a valid scenario. [`Scenario`] derives [`arbitrary::Arbitrary`]
//! (cargo-fuzz) and implements proptest's `Arbitrary` through [`scenario_strategy`], from
//! the same definition.
//!
//! The timeline has [`Plan::points`] points: the call ([`Point::Call`]; the sources complete
//! at the call were completed just before it), one per completion of a pending source, in
//! the plan's order ([`Point::Complete`]), and the end ([`Point::End`]). At each point the
//! event happens (then, for `when_each`, the token is canceled if this is its point), then
//! the test observes the combinator, then it drops all its handles if this is the drop
//! point, then, from the sources' drop point on, every source whose task is complete, then
//! reports are compared, then each source's registered continuations.
//!
//! # The model
//!
//! [`Model`] answers the headline questions with pure functions of the plan (rules 1–3 of
//! `taskcheck`'s `when` module):
//!
//! - [`Model::when_all_outcome`]: any faulted input → the faulted inputs' errors in input
//!   order, each input's own errors spliced in, duplicates counted per occurrence; else any
//!   canceled → the first canceled input's cancellation, in input order, with its token if
//!   it carries one ([`AllOutcome::Canceled`]); else the values in input order.
//!   [`Model::when_all_completes_at`]: the point of the last input's completion (the call
//!   when none is pending, or no input).
//! - [`Model::when_any_winners`]: no input → `None` (`WhenAnyError::Empty`); an input
//!   complete at the call → exactly the first such in input order; otherwise the schedule's
//!   choice among the pending inputs ([`Winners::FirstToComplete`], a set: any of them may
//!   win under a concurrent schedule). [`Model::when_any_winner`] narrows the set with the
//!   plan's sequential order: the first input to complete.
//! - [`Model::when_each_sequence`]: the inputs complete at the call in input order, then
//!   each completing source once per occurrence, in completion order.
//!
//! and [`Model::expectations`] plays the timeline with plain counters, rules 1–2 of the
//! `unobserved` module and task_core rule 5: every source task has handles (the source
//! itself until the test drops it — a completion source is a handle of its task; the
//! test's own until its drop point; `when_all`'s input list until it completes;
//! `when_any`'s callbacks until the win, and then the winner inside the `when_any` task
//! until both the win and the drop of that task; `when_each`'s callbacks until arrival,
//! then its ready queue until the item is polled out or the stream dropped), and whether
//! its error was observed (`when_all` observes its inputs when it completes; reading an
//! item's outcome observes it; `when_any` never observes its winner). A faulted task whose
//! error was not observed is reported once, at the point of the later of its completion
//! and the loss of its last handle: with the source counted, that is never before the
//! source's drop. An abandoned source that is the only handle of its task when it is
//! dropped is never reported; with any other handle left, its abandonment is a fault like
//! any other. The `when_all` task itself is reported if it faulted and the test dropped it
//! without reading its outcome. The same counters give each source's registered
//! continuations: one per occurrence of a pending input while the combinator waits for it,
//! none on `when_any`'s losers after the win, none after `when_each` is dropped. And the
//! test's waker: registered by the await of a pending `when_all` / `when_any` task, woken
//! once at its completion (rule 4: inline, the continuation captured nothing) unless the
//! await was dropped first; registered on the stream by a `Pending` poll, woken once by the
//! next arrival or cancellation.
//!
//! # The driver
//!
//! [`run_against_runtime`] builds the scenario on the real runtime on one thread, with no
//! context (completion-source tasks have none), completing the sources in the plan's order
//! and dropping them from the sources' drop point on, and compares at each point the list
//! of [`Observation`]s the model predicts with the one the runtime gives: `when_any`'s
//! refusal of an empty list; the combinator task's status
//! and, when it was pending at the call, an await of it (polled once there, with a
//! continuation that captured nothing: rule 4 runs it inline, so the test's waker is woken
//! exactly at the completion, unless the await was dropped first);
//! `when_all`'s values, or its errors in order (matched by their `Display` text:
//! [`InjectedError`] and the runtime's abandonment text), or its cancellation and whose
//! token it carries (each `CanceledWithToken` source has its own token source);
//! `when_any`'s winner (the source whose task id it has) and its status; each `when_each`
//! poll session (items until `Pending` or the end, the cancellation carrying the token),
//! the stream's wakes and whether it holds the waker; the unobserved-error reports since
//! the previous check (task, kind, errors); and `registered_continuations()` on each live
//! source.
//!
//! Reports of completion-source tasks go to the **process-wide** hook. The driver installs
//! (at every run, the same function) a hook that records reports of the tasks a run is
//! watching, keyed by task id, and prints any other report to stderr as the default hook
//! does; runs on parallel test threads only ever see their own tasks' reports.
//!
//! The driver never panics (a panic in the runtime is caught and reported as
//! [`DivergenceKind::RuntimePanicked`]) and never blocks (no waits; every poll session is
//! bounded).
//!
//! [`Model::with_flaw`] makes a deliberately wrong model ([`Flaw`]), to show that the
//! comparison can fail (`tests/combinators.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use futures_core::Stream;
use proptest::prelude::*;
use taskcheck::{
    when_all, when_any, when_each, CancellationToken, CancellationTokenSource, Task,
    TaskCompletionSource, TaskError, TaskId, TaskStatus, UnhandledKind, UnhandledTaskError,
    WhenAnyError, WhenEach,
};

use crate::harness::{self, Wakers};
use crate::{Divergence, DivergenceKind};

/// The most sources a plan keeps.
pub const MAX_SOURCES: usize = 6;
/// The most inputs a plan keeps.
pub const MAX_INPUTS: usize = 10;
/// The most errors a faulted source carries.
pub const MAX_ERRORS: usize = 3;

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Which combinator a scenario calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Combinator {
    /// [`when_all`], its task's outcome read if the scenario observes.
    WhenAll,
    /// [`when_any`], its winner read as soon as there is one.
    WhenAny,
    /// [`when_each`] on a token of a fresh [`CancellationTokenSource`].
    WhenEach,
}

/// How a source's task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum SourceOutcome {
    /// `set_result(value)`.
    Value(u32),
    /// `set_exception` with `1 + n % MAX_ERRORS` errors ([`InjectedError`]s); a [`Plan`]
    /// holds the count itself.
    Faulted(u8),
    /// `set_canceled()`: canceled without a token.
    Canceled,
    /// `set_exception(TaskError::canceled_by(&token))`, `token` a token of the source's own
    /// `CancellationTokenSource`: canceled, carrying that token.
    CanceledWithToken,
    /// The source is dropped unset: the task faults as abandoned (one error).
    Abandoned,
}

impl SourceOutcome {
    /// The status of a task that ended so.
    pub fn status(self) -> TaskStatus {
        match self {
            SourceOutcome::Value(_) => TaskStatus::Succeeded,
            SourceOutcome::Faulted(_) | SourceOutcome::Abandoned => TaskStatus::Faulted,
            SourceOutcome::Canceled | SourceOutcome::CanceledWithToken => TaskStatus::Canceled,
        }
    }
}

/// One source of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct SourceSpec {
    /// How its task ends.
    pub outcome: SourceOutcome,
    /// Completed before the combinator is called.
    pub complete_at_call: bool,
    /// Otherwise, its place in the completion order: ascending rank, ties by index.
    pub rank: u8,
}

/// When `when_each`'s token is canceled (ignored by the other combinators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Cancel {
    /// Never.
    Never,
    /// Before the call: the token is canceled when the stream registers on it.
    BeforeCall,
    /// Right after the event of this point (0: the call; capped at the last completion).
    AfterPoint(u8),
}

/// A generated scenario (see the module docs); [`Scenario::plan`] normalizes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub struct Scenario {
    /// The combinator called.
    pub combinator: Combinator,
    /// The sources (the first [`MAX_SOURCES`] are kept).
    pub sources: Vec<SourceSpec>,
    /// The inputs: indices into the sources, modulo their number (the first
    /// [`MAX_INPUTS`] are kept; none if there is no source).
    pub inputs: Vec<u8>,
    /// The point after whose checks the test drops every handle it holds: the sources'
    /// tasks, the combinator's task or stream (capped at the last completion).
    pub drop_after: u8,
    /// The point from which the test drops the sources themselves: at that point each
    /// source whose task is complete, after it each source once its task completes
    /// (capped at the end, where every source left goes). An abandoned source goes at its
    /// completion whatever this says.
    pub drop_sources_after: u8,
    /// `when_all`: read its outcome (observing it) once it is complete. `when_each`: read
    /// each item's outcome (observing it) as it is polled out.
    pub observe: bool,
    /// When `when_each`'s token is canceled.
    pub cancel: Cancel,
    /// `when_each`: poll after the point `p` if bit `p % 16` is set, and always after the
    /// last completion.
    pub polls: u16,
}

/// When a plan's `when_each` token is canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelPoint {
    /// Before the call.
    BeforeCall,
    /// Right after the event of this point.
    AfterPoint(usize),
}

/// A normalized scenario: what the model and the driver run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Plan {
    /// The combinator called.
    pub combinator: Combinator,
    /// Each source's outcome (`Faulted(k)` holds the number of errors, 1..=[`MAX_ERRORS`]).
    pub outcomes: Vec<SourceOutcome>,
    /// Whether each source is complete at the call.
    pub at_call: Vec<bool>,
    /// The inputs, as source indices.
    pub inputs: Vec<usize>,
    /// The sources pending at the call, in completion order.
    pub order: Vec<usize>,
    /// The point after which the test drops its handles (at most `order.len()`).
    pub drop_after: usize,
    /// The point from which the test drops each source whose task is complete (at most
    /// `order.len() + 1`: the end).
    pub drop_sources_after: usize,
    /// See [`Scenario::observe`].
    pub observe: bool,
    /// `when_each` only.
    pub cancel: Option<CancelPoint>,
    /// `when_each`: whether the stream is polled at each point `0..=order.len()`.
    pub polls: Vec<bool>,
}

impl Scenario {
    /// The plan this scenario stands for (any value is a valid scenario).
    pub fn plan(&self) -> Plan {
        let sources: Vec<SourceSpec> = self.sources.iter().take(MAX_SOURCES).copied().collect();
        let count = sources.len();
        let outcomes = sources
            .iter()
            .map(|source| match source.outcome {
                SourceOutcome::Faulted(n) => {
                    SourceOutcome::Faulted(1 + (n as usize % MAX_ERRORS) as u8)
                }
                other => other,
            })
            .collect();
        let at_call: Vec<bool> = sources.iter().map(|s| s.complete_at_call).collect();
        let inputs = if count == 0 {
            Vec::new()
        } else {
            let index = |&i: &u8| usize::from(i) % count;
            self.inputs.iter().take(MAX_INPUTS).map(index).collect()
        };
        let mut order: Vec<usize> = (0..count).filter(|&i| !at_call[i]).collect();
        order.sort_by_key(|&i| (sources[i].rank, i));
        let last = order.len();
        let cancel = match (self.combinator, self.cancel) {
            (Combinator::WhenEach, Cancel::BeforeCall) => Some(CancelPoint::BeforeCall),
            (Combinator::WhenEach, Cancel::AfterPoint(p)) => {
                Some(CancelPoint::AfterPoint(usize::from(p).min(last)))
            }
            _ => None,
        };
        let polls = (0..=last)
            .map(|p| p == last || (self.polls >> (p % 16)) & 1 == 1)
            .collect();
        Plan {
            combinator: self.combinator,
            outcomes,
            at_call,
            inputs,
            order,
            drop_after: usize::from(self.drop_after).min(last),
            drop_sources_after: usize::from(self.drop_sources_after).min(last + 1),
            observe: self.observe,
            cancel,
            polls,
        }
    }
}

impl Plan {
    /// How many points the timeline has: the call, one per pending source, the end.
    pub fn points(&self) -> usize {
        self.order.len() + 2
    }

    /// The point at `index`.
    pub fn point(&self, index: usize) -> Point {
        match index {
            0 => Point::Call,
            i if i <= self.order.len() => Point::Complete {
                step: i,
                source: self.order[i - 1],
            },
            _ => Point::End,
        }
    }

    /// The point at which source `i` completes (0: before the call).
    pub fn completion_point(&self, source: usize) -> usize {
        match self.order.iter().position(|&s| s == source) {
            Some(position) => position + 1,
            None => 0,
        }
    }

    /// How many times source `i` is an input.
    pub fn occurrences(&self, source: usize) -> usize {
        self.inputs.iter().filter(|&&i| i == source).count()
    }

    /// Whether source `i` is an input.
    pub fn is_input(&self, source: usize) -> bool {
        self.inputs.contains(&source)
    }

    /// The errors source `i`'s task faults with (none if it does not fault).
    pub fn errors_of(&self, source: usize) -> Vec<ErrorId> {
        match self.outcomes[source] {
            SourceOutcome::Faulted(k) => (0..usize::from(k))
                .map(|index| ErrorId::Injected { source, index })
                .collect(),
            SourceOutcome::Abandoned => vec![ErrorId::Abandoned { source }],
            SourceOutcome::Value(_)
            | SourceOutcome::Canceled
            | SourceOutcome::CanceledWithToken => Vec::new(),
        }
    }
}

/// A point of a scenario's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// The combinator is called (the sources complete at the call completed just before).
    Call,
    /// The `step`-th pending source completes.
    Complete {
        /// 1-based.
        step: usize,
        /// The source.
        source: usize,
    },
    /// After the last completion and the drop: the sources left are dropped.
    End,
}

/// An error a source faults with, identified by its `Display` text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorId {
    /// The `index`-th [`InjectedError`] of `source`.
    Injected {
        /// The source.
        source: usize,
        /// Its position in the source's errors.
        index: usize,
    },
    /// The abandonment of `source` (the runtime's text, naming the source's task).
    Abandoned {
        /// The source.
        source: usize,
    },
    /// A text no source faults with.
    Foreign(String),
}

/// The error a faulted source carries: its `Display` text is what the driver matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedError {
    /// The source.
    pub source: usize,
    /// Its position in the source's errors.
    pub index: usize,
}

impl fmt::Display for InjectedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "source {} error {}", self.source, self.index)
    }
}

impl Error for InjectedError {}

impl InjectedError {
    /// The error whose text is `text`, if any.
    fn parse(text: &str) -> Option<InjectedError> {
        let rest = text.strip_prefix("source ")?;
        let (source, index) = rest.split_once(" error ")?;
        let error = InjectedError {
            source: source.parse().ok()?,
            index: index.parse().ok()?,
        };
        // Only the canonical spelling (no leading zeros or signs).
        (error.to_string() == text).then_some(error)
    }
}

// ---------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------

/// `when_all`'s outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllOutcome {
    /// The values in input order.
    Values(Vec<u32>),
    /// The errors, in order.
    Faulted(Vec<ErrorId>),
    /// Canceled, carrying the token of this source (`None`: no token).
    Canceled(Option<usize>),
}

impl AllOutcome {
    /// The status of a task with this outcome.
    pub fn status(&self) -> TaskStatus {
        match self {
            AllOutcome::Values(_) => TaskStatus::Succeeded,
            AllOutcome::Faulted(_) => TaskStatus::Faulted,
            AllOutcome::Canceled(_) => TaskStatus::Canceled,
        }
    }
}

/// A task a report can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskRef {
    /// Source `i`'s task.
    Source(usize),
    /// The combinator's task.
    Combinator,
}

/// One report to the unobserved-error hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The task reported.
    pub task: TaskRef,
    /// How it went unhandled.
    pub kind: UnhandledKind,
    /// Its errors, in order.
    pub errors: Vec<ErrorId>,
}

fn sort_reports(reports: &mut [Report]) {
    reports.sort_by(|a, b| (a.task, &a.errors).cmp(&(b.task, &b.errors)));
}

/// One poll of a `when_each` stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// `Ready(Some(Ok(task)))`: the source whose task it is (`None`: no source's).
    Task(Option<usize>),
    /// `Ready(Some(Err(e)))` with `e` a cancellation carrying the stream's token.
    Canceled,
    /// `Ready(Some(Err(e)))` with any other error.
    Unexpected(String),
    /// `Ready(None)`.
    End,
    /// `Pending`.
    Pending,
}

/// What the driver looks at, in order, at each point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `when_any`'s call: refused as empty or not.
    AnyCall {
        /// `Err(WhenAnyError::Empty)`.
        empty: bool,
    },
    /// The combinator task's status (while the test holds it).
    Status(TaskStatus),
    /// `when_all`'s outcome, read once when it is complete (if the scenario observes).
    AllOutcome(AllOutcome),
    /// `when_any`'s winner, read once when there is one.
    Winner {
        /// The source whose task won (`None`: no source's).
        source: Option<usize>,
        /// The winner's status.
        status: TaskStatus,
    },
    /// A `when_each` poll session: items until `Pending` or `End` (at most
    /// `MAX_INPUTS + 3` polls).
    Polled(Vec<Item>),
    /// The test's waker: on the `when_each` stream (polled), or on the `when_all` /
    /// `when_any` task (awaited once at the call, if it was pending then).
    Waker {
        /// How many times it was woken so far.
        wakes: usize,
        /// Whether the runtime holds it now.
        held: bool,
    },
    /// The reports since the previous `Reports`, sorted by task.
    Reports(Vec<Report>),
    /// `registered_continuations()` of each source still alive (`None`: dropped).
    Registered(Vec<Option<usize>>),
    /// Something the combinator returned that it never should (described).
    Unexpected(String),
    /// One side observed less than the other.
    Missing,
}

/// The divergence of the runtime from [`Model`]: at which point, what differed.
pub type CombinatorDivergence = Divergence<Point, Observation>;

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// Which inputs may win a `when_any` (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Winners {
    /// Some input was complete at the call: exactly this source (the first such input).
    AtCall(usize),
    /// None was: the first of these sources to complete, whichever the schedule picks.
    FirstToComplete(BTreeSet<usize>),
}

impl Winners {
    /// Whether `source` may win.
    pub fn allows(&self, source: usize) -> bool {
        match self {
            Winners::AtCall(winner) => *winner == source,
            Winners::FirstToComplete(set) => set.contains(&source),
        }
    }
}

/// A deliberate mistake in the model, to show the comparison with the runtime can fail
/// (`Model::with_flaw`). A faithful model has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// `when_all` lists its errors in completion order instead of input order.
    WhenAllErrorsInCompletionOrder,
    /// `when_any` picks the last input complete at the call instead of the first.
    WhenAnyPicksLastComplete,
    /// `when_any` observes its winner's error (so it is never reported).
    WhenAnyObservesWinner,
    /// Dropping a `when_each` stream leaves its continuations on the pending inputs.
    WhenEachDropKeepsContinuations,
    /// `when_all` over a canceled input (and no faulted one) ends with a cancellation
    /// without a token, whatever its inputs carry (the rule before the review).
    WhenAllCanceledWithoutToken,
    /// A completion source is not a handle of its task: a fault is reported once the last
    /// `Task` handle goes, the source alive or not (the rule before the review).
    SourceIsNotAHandle,
}

/// The reference model of a combinator scenario (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    plan: Plan,
    flaw: Option<Flaw>,
}

impl Model {
    /// The model of `plan`.
    pub fn new(plan: Plan) -> Self {
        Model { plan, flaw: None }
    }

    /// A model with a deliberate mistake (see [`Flaw`]).
    pub fn with_flaw(plan: Plan, flaw: Flaw) -> Self {
        Model {
            plan,
            flaw: Some(flaw),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `when_all`'s outcome (rule 1).
    pub fn when_all_outcome(&self) -> AllOutcome {
        let plan = &self.plan;
        let mut faulted: Vec<usize> = plan.inputs.clone();
        if self.flaw == Some(Flaw::WhenAllErrorsInCompletionOrder) {
            faulted.sort_by_key(|&i| plan.completion_point(i));
        }
        let errors: Vec<ErrorId> = faulted.iter().flat_map(|&i| plan.errors_of(i)).collect();
        // The first canceled input in input order: its cancellation, with its token.
        let canceled = plan.inputs.iter().find_map(|&i| match plan.outcomes[i] {
            SourceOutcome::Canceled => Some(None),
            SourceOutcome::CanceledWithToken => Some(Some(i)),
            _ => None,
        });
        if !errors.is_empty() {
            AllOutcome::Faulted(errors)
        } else if let Some(token) = canceled {
            if self.flaw == Some(Flaw::WhenAllCanceledWithoutToken) {
                AllOutcome::Canceled(None)
            } else {
                AllOutcome::Canceled(token)
            }
        } else {
            AllOutcome::Values(
                plan.inputs
                    .iter()
                    .map(|&i| match plan.outcomes[i] {
                        SourceOutcome::Value(value) => value,
                        _ => unreachable!("neither faulted nor canceled"),
                    })
                    .collect(),
            )
        }
    }

    /// The point at which `when_all` completes: its last input's completion (rule 1).
    pub fn when_all_completes_at(&self) -> usize {
        let plan = &self.plan;
        plan.inputs
            .iter()
            .map(|&i| plan.completion_point(i))
            .max()
            .unwrap_or(0)
    }

    /// Which inputs may win a `when_any`; `None` when it refuses an empty list (rule 2).
    pub fn when_any_winners(&self) -> Option<Winners> {
        let plan = &self.plan;
        if plan.inputs.is_empty() {
            return None;
        }
        let mut complete = plan.inputs.iter().copied().filter(|&i| plan.at_call[i]);
        let at_call = if self.flaw == Some(Flaw::WhenAnyPicksLastComplete) {
            complete.next_back()
        } else {
            complete.next()
        };
        Some(match at_call {
            Some(winner) => Winners::AtCall(winner),
            None => Winners::FirstToComplete(plan.inputs.iter().copied().collect()),
        })
    }

    /// The winner under the plan's (sequential) completion order and the point at which
    /// it wins; `None` for an empty list.
    pub fn when_any_winner(&self) -> Option<(usize, usize)> {
        Some(match self.when_any_winners()? {
            Winners::AtCall(winner) => (winner, 0),
            Winners::FirstToComplete(set) => {
                let plan = &self.plan;
                let winner = set
                    .into_iter()
                    .min_by_key(|&i| plan.completion_point(i))
                    .expect("a non-empty input list");
                (winner, plan.completion_point(winner))
            }
        })
    }

    /// `when_each`'s items when it is polled without a cancellation (rule 3): the inputs
    /// complete at the call in input order, then each completing input once per
    /// occurrence, in completion order.
    pub fn when_each_sequence(&self) -> Vec<usize> {
        let plan = &self.plan;
        let mut sequence: Vec<usize> = plan
            .inputs
            .iter()
            .copied()
            .filter(|&i| plan.at_call[i])
            .collect();
        for &source in &plan.order {
            sequence.extend(plan.inputs.iter().copied().filter(|&i| i == source));
        }
        sequence
    }

    /// The observations the driver must make at each point (see the module docs).
    pub fn expectations(&self) -> Vec<Vec<Observation>> {
        Sim::new(self).run()
    }

    /// Every unobserved-error report, with the point at which it happens.
    pub fn unobserved_reports(&self) -> Vec<(usize, Report)> {
        let mut reports = Vec::new();
        for (point, observations) in self.expectations().into_iter().enumerate() {
            for observation in observations {
                if let Observation::Reports(at) = observation {
                    reports.extend(at.into_iter().map(|report| (point, report)));
                }
            }
        }
        reports
    }
}

/// The timeline of a [`Model`], with counters (see the module docs).
struct Sim<'m> {
    model: &'m Model,
    plan: &'m Plan,
    complete: Vec<bool>,
    /// The source is alive (not dropped: not abandoned, not past the sources' drop point
    /// with its task complete, not at the end). It is a handle of its task.
    alive: Vec<bool>,
    /// The test holds its handles (each source's task, the combinator's task or stream).
    test_holds: bool,
    /// Handles of each source's task held by the combinator.
    internal: Vec<usize>,
    observed: Vec<bool>,
    reported: Vec<bool>,
    /// Continuations registered on each source's task.
    registered: Vec<usize>,
    all: Option<AllOutcome>,
    all_read: bool,
    all_reported: bool,
    any_empty: bool,
    winner: Option<usize>,
    winner_read: bool,
    /// The `when_any` task holds its winner.
    result_holds_winner: bool,
    each_alive: bool,
    queue: VecDeque<usize>,
    remaining: usize,
    canceled: bool,
    ended: bool,
    /// The test's waker is registered: on the stream (after a `Pending` poll), or on the
    /// combinator's task (awaited at the call while pending).
    waiting: bool,
    wakes: usize,
}

impl<'m> Sim<'m> {
    fn new(model: &'m Model) -> Self {
        let plan = &model.plan;
        let n = plan.outcomes.len();
        Sim {
            model,
            plan,
            complete: vec![false; n],
            alive: vec![true; n],
            test_holds: true,
            internal: vec![0; n],
            observed: vec![false; n],
            reported: vec![false; n],
            registered: vec![0; n],
            all: None,
            all_read: false,
            all_reported: false,
            any_empty: false,
            winner: None,
            winner_read: false,
            result_holds_winner: false,
            each_alive: false,
            queue: VecDeque::new(),
            remaining: 0,
            canceled: false,
            ended: false,
            waiting: false,
            wakes: 0,
        }
    }

    fn run(mut self) -> Vec<Vec<Observation>> {
        let plan = self.plan;
        for source in 0..plan.outcomes.len() {
            if plan.at_call[source] {
                self.complete(source);
            }
        }
        let mut points = Vec::new();
        let mut call = self.call();
        self.cancel_at(0);
        call.extend(self.checks(0));
        points.push(call);
        for (index, &source) in plan.order.iter().enumerate() {
            let point = index + 1;
            self.complete(source);
            self.cancel_at(point);
            points.push(self.checks(point));
        }
        // The end: every source is complete; the registered probe, then the sources left
        // go, each the last handle of its task (the test's and the combinator's are gone).
        let registered = self.registered();
        self.alive.fill(false);
        let reports = self.reports();
        points.push(vec![registered, Observation::Reports(reports)]);
        points
    }

    /// The handles of source `i`'s task: the source itself while it is alive (task_core
    /// rule 5), the test's, the combinator's.
    fn holds(&self, source: usize) -> usize {
        let by_source = self.alive[source] && self.model.flaw != Some(Flaw::SourceIsNotAHandle);
        usize::from(by_source) + usize::from(self.test_holds) + self.internal[source]
    }

    fn call(&mut self) -> Vec<Observation> {
        let plan = self.plan;
        let mut observations = Vec::new();
        let mut inputs: Vec<usize> = plan.inputs.clone();
        inputs.sort_unstable();
        inputs.dedup();
        match plan.combinator {
            Combinator::WhenAll => {
                for &i in &inputs {
                    self.internal[i] += plan.occurrences(i);
                    if !self.complete[i] {
                        self.registered[i] = plan.occurrences(i);
                    }
                }
                if self.model.when_all_completes_at() == 0 {
                    self.finish_all();
                } else {
                    // The test awaits the pending `when_all` task.
                    self.waiting = true;
                }
            }
            Combinator::WhenAny => match self.model.when_any_winners() {
                None => {
                    self.any_empty = true;
                    observations.push(Observation::AnyCall { empty: true });
                }
                Some(winners) => {
                    observations.push(Observation::AnyCall { empty: false });
                    match winners {
                        Winners::AtCall(winner) => self.win(winner),
                        Winners::FirstToComplete(_) => {
                            for &i in &inputs {
                                self.registered[i] = plan.occurrences(i);
                                self.internal[i] += plan.occurrences(i);
                            }
                            // The test awaits the pending `when_any` task.
                            self.waiting = true;
                        }
                    }
                }
            },
            Combinator::WhenEach => {
                self.each_alive = true;
                self.canceled = plan.cancel == Some(CancelPoint::BeforeCall);
                for &i in &plan.inputs {
                    if self.complete[i] {
                        self.queue.push_back(i);
                        self.internal[i] += 1;
                    }
                }
                for &i in &inputs {
                    if !self.complete[i] {
                        self.registered[i] = plan.occurrences(i);
                        self.internal[i] += plan.occurrences(i);
                        self.remaining += plan.occurrences(i);
                    }
                }
            }
        }
        observations
    }

    fn complete(&mut self, source: usize) {
        if self.plan.outcomes[source] == SourceOutcome::Abandoned {
            // Dropped unset while it is the only handle of its task: nobody can ever see
            // the abandonment, it is not reported.
            self.alive[source] = false;
            if self.holds(source) == 0 {
                self.observed[source] = true;
            }
        }
        self.complete[source] = true;
        let waiting = std::mem::take(&mut self.registered[source]);
        if waiting == 0 {
            return;
        }
        match self.plan.combinator {
            Combinator::WhenAll => {
                if self.plan.inputs.iter().all(|&i| self.complete[i]) {
                    self.finish_all();
                }
            }
            Combinator::WhenAny => {
                // The callbacks on the winner were taken by its completion.
                self.internal[source] -= waiting;
                if self.winner.is_none()
                    && self.model.when_any_winner().map(|(w, _)| w) == Some(source)
                {
                    self.win(source);
                }
            }
            Combinator::WhenEach => {
                if self.each_alive {
                    for _ in 0..waiting {
                        self.queue.push_back(source);
                        self.remaining -= 1;
                    }
                    self.wake();
                }
            }
        }
    }

    fn finish_all(&mut self) {
        let plan = self.plan;
        self.all = Some(self.model.when_all_outcome());
        // Its continuation (captured nothing) runs inline: the waker is woken now.
        self.wake();
        for &i in &plan.inputs {
            // The input list goes after its errors are observed.
            self.observed[i] = true;
            self.internal[i] -= 1;
        }
    }

    fn win(&mut self, winner: usize) {
        self.winner = Some(winner);
        self.wake();
        // The losers' continuations (and the handles they hold) are removed.
        for source in 0..self.registered.len() {
            self.internal[source] -= self.registered[source];
            self.registered[source] = 0;
        }
        // The `when_any` task holds its winner for as long as it exists.
        if self.test_holds {
            self.internal[winner] += 1;
            self.result_holds_winner = true;
        }
        if self.model.flaw == Some(Flaw::WhenAnyObservesWinner) {
            self.observed[winner] = true;
        }
    }

    fn wake(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.wakes += 1;
        }
    }

    fn cancel_at(&mut self, point: usize) {
        if self.plan.cancel == Some(CancelPoint::AfterPoint(point)) && self.each_alive {
            self.canceled = true;
            self.wake();
        }
    }

    fn checks(&mut self, point: usize) -> Vec<Observation> {
        let mut observations = self.observe(point);
        if point == self.plan.drop_after {
            self.drop_handles();
        }
        if point >= self.plan.drop_sources_after {
            for source in 0..self.alive.len() {
                if self.complete[source] {
                    self.alive[source] = false;
                }
            }
        }
        observations.push(Observation::Reports(self.reports()));
        observations.push(self.registered());
        observations.push(Observation::Reports(Vec::new()));
        observations
    }

    fn observe(&mut self, point: usize) -> Vec<Observation> {
        let plan = self.plan;
        let mut observations = Vec::new();
        match plan.combinator {
            Combinator::WhenAll if self.test_holds => {
                let status = self
                    .all
                    .as_ref()
                    .map_or(TaskStatus::Pending, AllOutcome::status);
                observations.push(Observation::Status(status));
                if let Some(outcome) = &self.all {
                    if plan.observe && !self.all_read {
                        self.all_read = true;
                        observations.push(Observation::AllOutcome(outcome.clone()));
                    }
                }
            }
            Combinator::WhenAny if self.test_holds && !self.any_empty => {
                let status = match self.winner {
                    Some(_) => TaskStatus::Succeeded,
                    None => TaskStatus::Pending,
                };
                observations.push(Observation::Status(status));
                if let Some(winner) = self.winner {
                    if !self.winner_read {
                        self.winner_read = true;
                        observations.push(Observation::Winner {
                            source: Some(winner),
                            status: plan.outcomes[winner].status(),
                        });
                    }
                }
            }
            Combinator::WhenEach if self.each_alive && plan.polls[point] => {
                observations.push(Observation::Polled(self.poll_session()));
            }
            _ => {}
        }
        observations.push(Observation::Waker {
            wakes: self.wakes,
            held: self.waiting,
        });
        observations
    }

    fn poll_session(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        loop {
            if self.ended {
                items.push(Item::End);
                return items;
            }
            if self.canceled {
                items.push(Item::Canceled);
                self.ended = true;
                continue;
            }
            if let Some(source) = self.queue.pop_front() {
                items.push(Item::Task(Some(source)));
                // Handed to the test, which drops it at once (after reading its outcome).
                self.internal[source] -= 1;
                if self.plan.observe {
                    self.observed[source] = true;
                }
                continue;
            }
            if self.remaining == 0 {
                items.push(Item::End);
                self.ended = true;
                return items;
            }
            items.push(Item::Pending);
            self.waiting = true;
            return items;
        }
    }

    fn drop_handles(&mut self) {
        self.test_holds = false;
        // The await (or the stream) goes, and with it the registered waker.
        self.waiting = false;
        match self.plan.combinator {
            Combinator::WhenAll => {}
            Combinator::WhenAny => {
                if let Some(winner) = self.winner.filter(|_| self.result_holds_winner) {
                    self.internal[winner] -= 1;
                    self.result_holds_winner = false;
                }
            }
            Combinator::WhenEach => {
                self.each_alive = false;
                for source in 0..self.registered.len() {
                    self.internal[source] -= self.registered[source];
                    if self.model.flaw != Some(Flaw::WhenEachDropKeepsContinuations) {
                        self.registered[source] = 0;
                    }
                }
                while let Some(source) = self.queue.pop_front() {
                    self.internal[source] -= 1;
                }
            }
        }
    }

    fn reports(&mut self) -> Vec<Report> {
        let plan = self.plan;
        let mut reports = Vec::new();
        for source in 0..plan.outcomes.len() {
            let faults = matches!(
                plan.outcomes[source],
                SourceOutcome::Faulted(_) | SourceOutcome::Abandoned
            );
            if faults
                && self.complete[source]
                && self.holds(source) == 0
                && !self.observed[source]
                && !self.reported[source]
            {
                self.reported[source] = true;
                reports.push(Report {
                    task: TaskRef::Source(source),
                    kind: UnhandledKind::Unobserved,
                    errors: plan.errors_of(source),
                });
            }
        }
        if let Some(AllOutcome::Faulted(errors)) = &self.all {
            if !self.test_holds && !self.all_read && !self.all_reported {
                self.all_reported = true;
                reports.push(Report {
                    task: TaskRef::Combinator,
                    kind: UnhandledKind::Unobserved,
                    errors: errors.clone(),
                });
            }
        }
        sort_reports(&mut reports);
        reports
    }

    fn registered(&self) -> Observation {
        Observation::Registered(
            (0..self.plan.outcomes.len())
                .map(|source| self.alive[source].then_some(self.registered[source]))
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------------------

/// Values 3, faults 3 (1 to 3 errors), cancellations without a token 1, with one 1,
/// abandonments 1. Shrinks toward a value.
pub fn source_outcome_strategy() -> impl Strategy<Value = SourceOutcome> {
    // A range picks the variant rather than `prop_oneof!` (cheaper `new_tree`).
    (0u8..9, 0u32..1_000, 0u8..MAX_ERRORS as u8).prop_map(|(pick, value, errors)| match pick {
        0..=2 => SourceOutcome::Value(value),
        3..=5 => SourceOutcome::Faulted(errors),
        6 => SourceOutcome::Canceled,
        7 => SourceOutcome::CanceledWithToken,
        _ => SourceOutcome::Abandoned,
    })
}

/// A source: complete at the call one time in four; ranks 0..8.
pub fn source_strategy() -> impl Strategy<Value = SourceSpec> {
    (source_outcome_strategy(), 0u8..4, 0u8..8).prop_map(|(outcome, at_call, rank)| SourceSpec {
        outcome,
        complete_at_call: at_call == 3,
        rank,
    })
}

/// Never 2, before the call 1, after a point 3.
pub fn cancel_strategy() -> impl Strategy<Value = Cancel> {
    (0u8..6, 0u8..=MAX_SOURCES as u8).prop_map(|(pick, point)| match pick {
        0 | 1 => Cancel::Never,
        2 => Cancel::BeforeCall,
        _ => Cancel::AfterPoint(point),
    })
}

/// Scenarios of up to `max_sources` sources and `max_inputs` inputs (each capped at
/// [`MAX_SOURCES`] / [`MAX_INPUTS`]), every combinator evenly. Shrinks toward `when_all`,
/// fewer sources and inputs, the first source, an early drop (of the test's handles and
/// of the sources).
pub fn scenario_strategy(max_sources: usize, max_inputs: usize) -> impl Strategy<Value = Scenario> {
    let max_sources = max_sources.min(MAX_SOURCES);
    let max_inputs = max_inputs.min(MAX_INPUTS);
    let index = 0..(max_sources.max(1) as u8);
    // The inputs shrink before the sources: with the inputs at their smallest, removing a
    // source they do not name keeps them naming the same ones more often.
    (
        0u8..3,
        proptest::collection::vec(index, 0..=max_inputs),
        proptest::collection::vec(source_strategy(), 0..=max_sources),
        0u8..=(max_sources as u8),
        0u8..=(max_sources as u8 + 1),
        any::<bool>(),
        cancel_strategy(),
        any::<u16>(),
    )
        .prop_map(
            |(pick, inputs, sources, drop_after, drop_sources_after, observe, cancel, polls)| {
                Scenario {
                    combinator: match pick {
                        0 => Combinator::WhenAll,
                        1 => Combinator::WhenAny,
                        _ => Combinator::WhenEach,
                    },
                    sources,
                    inputs,
                    drop_after,
                    drop_sources_after,
                    observe,
                    cancel,
                    polls,
                }
            },
        )
}

impl proptest::arbitrary::Arbitrary for Scenario {
    type Parameters = ();
    type Strategy = BoxedStrategy<Scenario>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        scenario_strategy(MAX_SOURCES, MAX_INPUTS).boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The unobserved-error hook
// ---------------------------------------------------------------------------------------

/// The reports of the watched tasks: (kind, error texts), in arrival order.
type Recorded = Vec<(UnhandledKind, Vec<String>)>;

static WATCHED: Mutex<BTreeMap<TaskId, Recorded>> = Mutex::new(BTreeMap::new());

fn watched() -> MutexGuard<'static, BTreeMap<TaskId, Recorded>> {
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process-wide hook the driver installs: records the watched tasks' reports.
fn record(report: &UnhandledTaskError) {
    let texts = report.error().errors().map(|e| e.to_string()).collect();
    let mut watched = watched();
    match watched.get_mut(&report.task()) {
        Some(recorded) => recorded.push((report.kind(), texts)),
        None => {
            drop(watched);
            eprintln!("taskcheck: {report}");
        }
    }
}

/// The tasks one run watches; they are forgotten when it is dropped.
#[derive(Debug, Default)]
struct Watch {
    ids: Vec<TaskId>,
}

impl Watch {
    fn add(&mut self, id: TaskId) {
        watched().insert(id, Vec::new());
        self.ids.push(id);
    }

    /// The reports recorded since the last call, per task.
    fn take(&self) -> Vec<(TaskId, UnhandledKind, Vec<String>)> {
        let mut watched = watched();
        let mut taken = Vec::new();
        for id in &self.ids {
            if let Some(recorded) = watched.get_mut(id) {
                for (kind, texts) in recorded.drain(..) {
                    taken.push((*id, kind, texts));
                }
            }
        }
        taken
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = watched();
        for id in &self.ids {
            watched.remove(id);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// Builds `scenario` on the runtime and compares it with [`Model::new`] point by point;
/// the first divergence (see the module docs for what is compared).
pub fn run_against_runtime(scenario: &Scenario) -> Result<(), CombinatorDivergence> {
    run_against_model(&Model::new(scenario.plan()))
}

/// [`run_against_runtime`] with the given model (for instance a flawed one) and its plan.
pub fn run_against_model(model: &Model) -> Result<(), CombinatorDivergence> {
    let plan = model.plan();
    let expectations = model.expectations();
    let mut driver = Driver::new(plan);
    for (index, expected) in expectations.into_iter().enumerate() {
        let observed = harness::catch(|| driver.run_point(index));
        let divergence = |kind| Divergence {
            index,
            op: plan.point(index),
            kind,
        };
        let observed = observed.map_err(divergence)?;
        let length = expected.len().max(observed.len());
        for at in 0..length {
            let model = expected.get(at).cloned().unwrap_or(Observation::Missing);
            let runtime = observed.get(at).cloned().unwrap_or(Observation::Missing);
            if model != runtime {
                return Err(divergence(DivergenceKind::Outcome { model, runtime }));
            }
        }
    }
    Ok(())
}

/// The runtime side of a scenario.
struct Driver<'p> {
    plan: &'p Plan,
    sources: Vec<Option<TaskCompletionSource<u32>>>,
    /// The own token of each `CanceledWithToken` source, which its cancellation carries.
    tokens: Vec<Option<CancellationTokenSource>>,
    /// Whether each source's task has been completed (or abandoned).
    completed: Vec<bool>,
    /// The test's handle of each source's task, until the drop point.
    held: Vec<Task<u32>>,
    ids: Vec<TaskId>,
    all: Option<Task<Vec<u32>>>,
    any: Option<Task<Task<u32>>>,
    each: Option<WhenEach<u32>>,
    /// A clone of the combinator's task, polled once at the call while it was pending: an
    /// await in flight (a handle, and a continuation waking the test's waker).
    all_await: Option<Task<Vec<u32>>>,
    any_await: Option<Task<Task<u32>>>,
    read: bool,
    cancellation: Option<CancellationTokenSource>,
    token: CancellationToken,
    wakers: Wakers,
    /// Last: it outlives every task of the run, so late reports are recorded, not printed.
    watch: Watch,
}

type Checked<T> = Result<T, DivergenceKind<Observation>>;

impl<'p> Driver<'p> {
    fn new(plan: &'p Plan) -> Self {
        taskcheck::set_unobserved_error_hook(record);
        let mut watch = Watch::default();
        let sources: Vec<TaskCompletionSource<u32>> = plan
            .outcomes
            .iter()
            .map(|_| TaskCompletionSource::new())
            .collect();
        let held: Vec<Task<u32>> = sources.iter().map(TaskCompletionSource::task).collect();
        let tokens = plan
            .outcomes
            .iter()
            .map(|outcome| {
                (*outcome == SourceOutcome::CanceledWithToken).then(CancellationTokenSource::new)
            })
            .collect();
        let ids: Vec<TaskId> = held.iter().map(Task::id).collect();
        for &id in &ids {
            watch.add(id);
        }
        let (cancellation, token) = match plan.combinator {
            Combinator::WhenEach => {
                let source = CancellationTokenSource::new();
                let token = source.token();
                (Some(source), token)
            }
            _ => (None, CancellationToken::none()),
        };
        let mut wakers = Wakers::default();
        wakers.add(0);
        Driver {
            plan,
            sources: sources.into_iter().map(Some).collect(),
            tokens,
            completed: vec![false; plan.outcomes.len()],
            held,
            ids,
            all: None,
            any: None,
            each: None,
            all_await: None,
            any_await: None,
            read: false,
            cancellation,
            token,
            wakers,
            watch,
        }
    }

    fn run_point(&mut self, index: usize) -> Checked<Vec<Observation>> {
        let plan = self.plan;
        match plan.point(index) {
            Point::Call => {
                for source in 0..plan.outcomes.len() {
                    if plan.at_call[source] {
                        self.complete(source)?;
                    }
                }
                if plan.cancel == Some(CancelPoint::BeforeCall) {
                    self.cancel()?;
                }
                let mut observations = self.call()?;
                self.cancel_at(0)?;
                observations.extend(self.checks(0));
                Ok(observations)
            }
            Point::Complete { step, source } => {
                self.complete(source)?;
                self.cancel_at(step)?;
                Ok(self.checks(step))
            }
            Point::End => {
                let registered = self.registered();
                self.sources.clear();
                self.cancellation = None;
                Ok(vec![registered, Observation::Reports(self.reports())])
            }
        }
    }

    fn complete(&mut self, source: usize) -> Checked<()> {
        let Some(tcs) = &self.sources[source] else {
            return Err(DivergenceKind::ForeignError {
                runtime: format!("driver bug: source {source} completed twice"),
            });
        };
        let set = match self.plan.outcomes[source] {
            SourceOutcome::Value(value) => tcs.set_result(value),
            SourceOutcome::Faulted(k) => {
                tcs.set_exception(TaskError::from_errors((0..k).map(|index| {
                    Box::new(InjectedError {
                        source,
                        index: usize::from(index),
                    }) as Box<dyn Error + Send + Sync>
                })))
            }
            SourceOutcome::Canceled => tcs.set_canceled(),
            SourceOutcome::CanceledWithToken => match &self.tokens[source] {
                Some(own) => tcs.set_exception(TaskError::canceled_by(&own.token())),
                None => {
                    return Err(DivergenceKind::ForeignError {
                        runtime: format!("driver bug: source {source} has no token"),
                    })
                }
            },
            SourceOutcome::Abandoned => {
                self.sources[source] = None;
                Ok(())
            }
        };
        self.completed[source] = true;
        set.map_err(|error| DivergenceKind::ForeignError {
            runtime: error.to_string(),
        })
    }

    fn cancel(&mut self) -> Checked<()> {
        let Some(cancellation) = &self.cancellation else {
            return Ok(());
        };
        cancellation
            .cancel()
            .map_err(|error| DivergenceKind::ForeignError {
                runtime: error.to_string(),
            })
    }

    fn cancel_at(&mut self, point: usize) -> Checked<()> {
        if self.plan.cancel == Some(CancelPoint::AfterPoint(point)) {
            self.cancel()?;
        }
        Ok(())
    }

    fn call(&mut self) -> Checked<Vec<Observation>> {
        let inputs: Vec<Task<u32>> = self
            .plan
            .inputs
            .iter()
            .map(|&i| self.held[i].clone())
            .collect();
        let mut observations = Vec::new();
        match self.plan.combinator {
            Combinator::WhenAll => {
                let all = when_all(inputs);
                self.watch.add(all.id());
                if !all.is_completed() {
                    self.all_await = Some(self.await_once(all.clone(), &mut observations));
                }
                self.all = Some(all);
            }
            Combinator::WhenAny => match when_any(inputs) {
                Ok(any) => {
                    self.watch.add(any.id());
                    observations.push(Observation::AnyCall { empty: false });
                    if !any.is_completed() {
                        self.any_await = Some(self.await_once(any.clone(), &mut observations));
                    }
                    self.any = Some(any);
                }
                Err(WhenAnyError::Empty) => observations.push(Observation::AnyCall { empty: true }),
                Err(other) => observations.push(Observation::Unexpected(other.to_string())),
            },
            Combinator::WhenEach => self.each = Some(when_each(inputs, &self.token)),
        }
        Ok(observations)
    }

    /// Polls `task` (pending) once with the test's waker, as an `.await` outside any task
    /// and context does: it registers a continuation that captured nothing.
    fn await_once<T: Clone>(
        &self,
        mut task: Task<T>,
        observations: &mut Vec<Observation>,
    ) -> Task<T> {
        if let Some(waker) = self.wakers.get(0) {
            let waker = Waker::from(waker);
            let mut cx = std::task::Context::from_waker(&waker);
            if Pin::new(&mut task).poll(&mut cx).is_ready() {
                observations.push(Observation::Unexpected(
                    "a pending task's await completed at once".into(),
                ));
            }
        }
        task
    }

    fn checks(&mut self, point: usize) -> Vec<Observation> {
        let mut observations = self.observe(point);
        if point == self.plan.drop_after {
            self.held.clear();
            self.all = None;
            self.any = None;
            self.each = None;
            self.all_await = None;
            self.any_await = None;
        }
        if point >= self.plan.drop_sources_after {
            for (source, completed) in self.completed.iter().enumerate() {
                if *completed {
                    self.sources[source] = None;
                }
            }
        }
        observations.push(Observation::Reports(self.reports()));
        observations.push(self.registered());
        // The probe made (and dropped) handles: it must not have reported anything.
        observations.push(Observation::Reports(self.reports()));
        observations
    }

    /// The source whose own token `token` is (`Ok(None)`: no token; `Err`: a token no
    /// source has).
    fn token_source(&self, token: Option<&CancellationToken>) -> Result<Option<usize>, ()> {
        let Some(token) = token else {
            return Ok(None);
        };
        let own = |own: &Option<CancellationTokenSource>| {
            own.as_ref().is_some_and(|own| own.token() == *token)
        };
        match self.tokens.iter().position(own) {
            Some(source) => Ok(Some(source)),
            None => Err(()),
        }
    }

    fn source_of(&self, id: TaskId) -> Option<usize> {
        self.ids.iter().position(|&known| known == id)
    }

    /// The error whose `Display` text is `text`.
    fn error_id(&self, text: &str) -> ErrorId {
        if let Some(injected) = InjectedError::parse(text) {
            return ErrorId::Injected {
                source: injected.source,
                index: injected.index,
            };
        }
        let abandoned = self.ids.iter().position(|id| {
            text.starts_with(&format!(
                "task {id} was abandoned: its TaskCompletionSource"
            ))
        });
        match abandoned {
            Some(source) => ErrorId::Abandoned { source },
            None => ErrorId::Foreign(text.to_owned()),
        }
    }

    fn error_ids(&self, error: &TaskError) -> Vec<ErrorId> {
        error
            .errors()
            .map(|error| self.error_id(&error.to_string()))
            .collect()
    }

    fn observe(&mut self, point: usize) -> Vec<Observation> {
        let mut observations = Vec::new();
        if let Some(all) = &self.all {
            observations.push(Observation::Status(all.status()));
            if all.is_completed() && self.plan.observe && !self.read {
                self.read = true;
                observations.push(match all.outcome() {
                    Some(Ok(values)) => Observation::AllOutcome(AllOutcome::Values(values)),
                    Some(Err(error)) if error.is_canceled() => {
                        match self.token_source(error.cancellation_token()) {
                            Ok(source) => Observation::AllOutcome(AllOutcome::Canceled(source)),
                            Err(()) => Observation::Unexpected(format!(
                                "a cancellation carrying a token no source has: {error:?}"
                            )),
                        }
                    }
                    Some(Err(error)) => {
                        Observation::AllOutcome(AllOutcome::Faulted(self.error_ids(&error)))
                    }
                    None => Observation::Unexpected("completed without an outcome".into()),
                });
            }
        }
        if let Some(any) = &self.any {
            observations.push(Observation::Status(any.status()));
            if any.is_completed() && !self.read {
                self.read = true;
                observations.push(match any.outcome() {
                    // The winner's status only: reading it must not observe it.
                    Some(Ok(winner)) => Observation::Winner {
                        source: self.source_of(winner.id()),
                        status: winner.status(),
                    },
                    Some(Err(error)) => Observation::Unexpected(error.to_string()),
                    None => Observation::Unexpected("completed without an outcome".into()),
                });
            }
        }
        if self.plan.polls[point] && self.each.is_some() {
            let items = self.poll_session();
            observations.push(Observation::Polled(items));
        }
        observations.push(Observation::Waker {
            wakes: self.wakers.counts()[0],
            held: !self.wakers.held().is_empty(),
        });
        observations
    }

    fn poll_session(&mut self) -> Vec<Item> {
        let Some(waker) = self.wakers.get(0) else {
            return Vec::new();
        };
        let waker = Waker::from(waker);
        let mut cx = std::task::Context::from_waker(&waker);
        let mut items = Vec::new();
        let Some(each) = self.each.as_mut() else {
            return items;
        };
        for _ in 0..MAX_INPUTS + 3 {
            match Pin::new(&mut *each).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(task))) => {
                    let source = self.ids.iter().position(|&id| id == task.id());
                    items.push(Item::Task(source));
                    if self.plan.observe {
                        let _ = task.outcome();
                    }
                }
                Poll::Ready(Some(Err(error))) => items.push(
                    if error.is_canceled() && error.cancellation_token() == Some(&self.token) {
                        Item::Canceled
                    } else {
                        Item::Unexpected(format!("{error:?}"))
                    },
                ),
                Poll::Ready(None) => {
                    items.push(Item::End);
                    break;
                }
                Poll::Pending => {
                    items.push(Item::Pending);
                    break;
                }
            }
        }
        items
    }

    fn reports(&mut self) -> Vec<Report> {
        let mut reports: Vec<Report> = self
            .watch
            .take()
            .into_iter()
            .map(|(id, kind, texts)| Report {
                task: match self.source_of(id) {
                    Some(source) => TaskRef::Source(source),
                    // The only other task watched.
                    None => TaskRef::Combinator,
                },
                kind,
                errors: texts.iter().map(|text| self.error_id(text)).collect(),
            })
            .collect();
        sort_reports(&mut reports);
        reports
    }

    fn registered(&self) -> Observation {
        Observation::Registered(
            self.sources
                .iter()
                .map(|tcs| {
                    tcs.as_ref()
                        .map(|tcs| tcs.task().registered_continuations())
                })
                .collect(),
        )
    }
}
