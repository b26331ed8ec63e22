//! A sequential reference model of cancellation ([`CancellationTokenSource`],
//! [`CancellationToken`], [`CancellationTokenRegistration`]) on a manual [`Clock`], and a
//! driver that compares the real runtime with it, operation by operation.
//!
//! # The model
//!
//! [`Model`] is rules 1–9 of `taskcheck`'s `cancellation` module and rules 1–4 of its
//! `time` module, written as plainly as possible, for several sources sharing one manual
//! clock. Each source is a flag ("cancellation requested"), a `disposed` flag, a list of
//! callbacks (oldest first; cancel pops from the end), its `cancel_after` timer and, for a
//! linked source, its registrations on its parents. The clock is a time and an ordered map
//! from (due time, scheduling order) to the source whose timer it is. Everything happens
//! on one thread, so "concurrent" parts of the rules (a cancel running elsewhere, a timer
//! firing meanwhile, waiting for a callback running on another thread) do not arise; what
//! remains is exactly what a single thread can observe:
//!
//! - cancel runs the callbacks LIFO; the flag is up before the first runs; panics are
//!   collected in run order (a linked source's failures in the slot of its link), or the
//!   first one stops `cancel_throw_on_first` and the rest stay registered (rule 1);
//! - a second cancel, also one made from inside a callback of the cancel in progress,
//!   returns `Ok` and runs nothing (rule 2);
//! - registering on a canceled source runs the callback inline (its panic reaches the
//!   caller); on [`CancellationToken::none`] or a disposed, uncanceled source it stores
//!   nothing (rule 3);
//! - unregister returns whether it removed the callback, and exactly one of "it returned
//!   `true`" and "the callback ran" happens (rule 4); dropping a registration unregisters
//!   it, also from inside a callback of the cancel in progress (rule 5, single-thread part);
//! - linked sources (rule 6), `cancel_after` timers (rule 7, and the clock's rules 1–3:
//!   never inline, due order, same due in scheduling order, `Duration::MAX` or a deadline
//!   past the clock's range never fires), dispose (rule 8: its callbacks stay registered,
//!   their closures are dropped) and `try_reset` (rule 9);
//! - a callback's closure lives exactly as long as the callback may still run: it is
//!   dropped once it ran, was removed (unregister, a dropped registration, `try_reset`),
//!   was never stored (the none token, a disposed source, an inline run), or its source
//!   was disposed (rule 8). (A dispose from inside a callback of its source's own cancel,
//!   which the ops cannot make, is left out.)
//!
//! `Duration::MAX` is "never" whatever the clock's time, also at zero where `now + MAX`
//! does not overflow (the clock's rule 3: Rust's spelling of .NET's
//! `Timeout.InfiniteTimeSpan`; nothing is scheduled for it), and so is any delay whose
//! deadline `now + delay` overflows.
//!
//! # The operations
//!
//! | [`Op`] | API call |
//! |---|---|
//! | `NewSource { delay: None }` | `CancellationTokenSource::with_clock(clock)` |
//! | `NewSource { delay: Some(d) }` | `CancellationTokenSource::with_delay(d, clock)` |
//! | `Linked { parents }` | `CancellationTokenSource::linked_with_clock(tokens, clock)` (at most [`MAX_PARENTS`], each an earlier source's token or the none token) |
//! | `Register { target, action }` | `token.register(callback)` on a source's token or the none token |
//! | `Unregister` / `IsRegistered` | `registration.unregister()` / `.is_registered()` |
//! | `DropRegistration` / `Detach` | `drop(registration)` / `registration.detach()` |
//! | `Cancel` / `CancelThrowOnFirst` | `source.cancel()` / `.cancel_throw_on_first()` |
//! | `CancelAfter { delay }` | `source.cancel_after(delay)` |
//! | `Advance(d)` | `clock.advance(d)` (fires due timers on the calling thread) |
//! | `TryReset` / `Dispose` | `source.try_reset()` / `.dispose()` |
//! | `IsCancellationRequested` | `source.is_cancellation_requested()` |
//!
//! An op names a source, or a live registration, by how recent it is ([`newest`]: 0 is
//! the newest, modulo their number), so that generated ops mostly reach sources that are
//! still fresh; an op naming one when there is none does nothing
//! ([`Outcome::Nothing`]).
//!
//! Every callback is named by the index of its `Register` op. When it runs it first
//! appends [`Entry::Ran`] to the log, then does its [`Action`]: nothing, panic (with a
//! message carrying its name), cancel a source, or unregister or drop a registration
//! (each re-entrant action logs its result). Re-entrant actions are how a single thread
//! observes rule 2 (cancel inside cancel), rule 4 (unregistering a callback the running
//! cancel has not reached yet) and rule 5 (a callback dropping its own registration must
//! not wait for itself).
//!
//! # The driver
//!
//! [`run_against_runtime`] applies the ops to the real runtime (one manual clock, std
//! build, one thread) and to a [`Model`], and after every op compares ([`Observed`]):
//!
//! 1. the op's [`Outcome`]: `Ok`/`Err` and the error's kind, the disposed source, every
//!    callback failure (which source's cancel caught it and which callback panicked, in
//!    order), the booleans of `unregister`, `is_registered`, `try_reset`, `advance`'s
//!    count or error;
//! 2. the log entries the op appended, in order;
//! 3. the [`State`] afterwards: each source's `is_cancellation_requested` (through the
//!    source, its token, and `throw_if_cancellation_requested`) and `is_disposed`, the
//!    clock's `now` and `pending_timers`, and each live registration's `is_registered`
//!    and the source its `token()` belongs to, and whether its callback's closure has been
//!    dropped (each closure owns a drop flag).
//!
//! Callbacks' panics are expected: the driver installs (once per process) a panic hook
//! that keeps the callbacks' own panics (`callback 3 [expected panic]`, see
//! [`EXPECTED_PANIC`]) off stderr and passes every other panic
//! to the hook installed before (in a fuzz target, libFuzzer's, which aborts). Failures of
//! callbacks run by a timer have no caller, and the runtime prints them to stderr; the log
//! still shows that those callbacks ran. The driver never blocks (every wait of rule 5 is
//! on the calling thread, which returns at once) and never panics: a panic of the runtime
//! is reported as [`DivergenceKind::RuntimePanicked`].
//!
//! [`Model::with_flaw`] makes a deliberately wrong model ([`Flaw`]), to show that the
//! comparison fails when the model and the runtime disagree
//! (`tests/cancellation.rs` checks that proptest catches each flaw and shrinks it).

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::Duration;

use proptest::prelude::*;
use taskcheck::{
    CancelError, CancellationToken, CancellationTokenRegistration, CancellationTokenSource, Clock,
    ClockError,
};

use crate::harness;
use crate::{Divergence, DivergenceKind};

/// A linked source uses at most this many of its op's parents (the rest are ignored, by
/// the model and the runtime alike).
pub const MAX_PARENTS: usize = 4;

/// The marker at the end of the message of every panic a callback makes on purpose
/// (`callback 3 [expected panic]`).
pub const EXPECTED_PANIC: &str = "[expected panic]";

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// A delay (for `with_delay`, `cancel_after`) or an advance of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Delay {
    /// This many milliseconds (zero included).
    Millis(u8),
    /// `Duration::MAX`: never (as a delay); as an advance, it overflows unless the clock is
    /// at zero.
    Max,
    /// This many seconds: far-away deadlines, and overflows of `now + delay`.
    Secs(u64),
}

impl Delay {
    /// The duration it stands for.
    pub fn duration(self) -> Duration {
        match self {
            Delay::Millis(ms) => Duration::from_millis(u64::from(ms)),
            Delay::Max => Duration::MAX,
            Delay::Secs(secs) => Duration::from_secs(secs),
        }
    }
}

/// A token to register on or link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Target {
    /// The token of a source (0 is the newest; see [`newest`]).
    Source(u8),
    /// [`CancellationToken::none`].
    None,
}

/// What a callback does when it runs, after logging [`Entry::Ran`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Action {
    /// Nothing more.
    Record,
    /// Panics (a failure of the cancel that runs it; from an inline run inside `register`,
    /// a panic out of `register`).
    Panic,
    /// `cancel()`s a source (possibly its own, whose cancel is in progress) and logs the
    /// result ([`Entry::Canceled`]). The source is named ([`newest`]) when the callback is
    /// registered.
    Cancel(u8),
    /// `unregister()`s a live registration (possibly its own), named ([`newest`]) when the
    /// callback runs, and logs the result ([`Entry::Unregistered`]).
    Unregister(u8),
    /// Drops a live registration (possibly its own), named ([`newest`]) when the callback
    /// runs, and logs which ([`Entry::Dropped`]).
    DropRegistration(u8),
}

/// One call on a source, token, registration or the clock (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Op {
    /// Create a source on the clock, optionally canceling itself after `delay`.
    NewSource {
        /// `None`: `with_clock`; `Some`: `with_delay`.
        delay: Option<Delay>,
    },
    /// Create a source linked to `parents` (the first [`MAX_PARENTS`]).
    Linked {
        /// The parents' tokens, in order (repeats allowed).
        parents: Vec<Target>,
    },
    /// Register a callback (named by this op's index) on a token.
    Register {
        /// Which token.
        target: Target,
        /// What the callback does.
        action: Action,
    },
    /// `unregister()` a live registration (it stays live).
    Unregister {
        /// Which live registration ([`newest`]).
        registration: u8,
    },
    /// Drop a live registration.
    DropRegistration {
        /// Which live registration ([`newest`]).
        registration: u8,
    },
    /// `detach()` a live registration.
    Detach {
        /// Which live registration ([`newest`]).
        registration: u8,
    },
    /// `is_registered()` of a live registration.
    IsRegistered {
        /// Which live registration ([`newest`]).
        registration: u8,
    },
    /// `cancel()`.
    Cancel {
        /// Which source ([`newest`]).
        source: u8,
    },
    /// `cancel_throw_on_first()`.
    CancelThrowOnFirst {
        /// Which source ([`newest`]).
        source: u8,
    },
    /// `cancel_after(delay)`.
    CancelAfter {
        /// Which source ([`newest`]).
        source: u8,
        /// The delay.
        delay: Delay,
    },
    /// `clock.advance(by)`.
    Advance(Delay),
    /// `try_reset()`.
    TryReset {
        /// Which source ([`newest`]).
        source: u8,
    },
    /// `dispose()`.
    Dispose {
        /// Which source ([`newest`]).
        source: u8,
    },
    /// `is_cancellation_requested()`.
    IsCancellationRequested {
        /// Which source ([`newest`]).
        source: u8,
    },
}

// ---------------------------------------------------------------------------------------
// What is observed
// ---------------------------------------------------------------------------------------

/// A callback failure: the source whose cancel caught it and the callback that panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failed {
    /// The source whose cancel ran the callback (a linked source's own callbacks fail in
    /// its cancel, even when a parent's cancel triggered it).
    pub source: usize,
    /// The callback (the index of its `Register` op).
    pub callback: usize,
}

/// Why a source operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CancelFailure {
    /// `CancelError::Disposed` naming this source.
    Disposed {
        /// The source.
        source: usize,
    },
    /// `CancelError::CallbacksFailed`, its failures in order.
    CallbacksFailed(Vec<Failed>),
    /// An error the ops cannot cause (the runtime's, displayed); the model never says so.
    Unrecognized(String),
}

/// The result of `cancel`, `cancel_throw_on_first` or `cancel_after`.
pub type CancelResult = Result<(), CancelFailure>;

/// What one op returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The op named a source or registration and there is none.
    Nothing,
    /// A source was created.
    Created,
    /// `register` returned a registration; `stored`: it `is_registered()`.
    Registered {
        /// Whether a callback is stored under it.
        stored: bool,
    },
    /// The callback ran inline in `register` and its panic came out of `register`.
    RegisterPanicked,
    /// `unregister()`.
    Unregistered(bool),
    /// The registration was dropped.
    Dropped,
    /// The registration was detached.
    Detached,
    /// `is_registered()`.
    IsRegistered(bool),
    /// `cancel()` / `cancel_throw_on_first()`.
    Canceled(CancelResult),
    /// `cancel_after()`.
    CancelAfter(CancelResult),
    /// `try_reset()`.
    TryReset(Result<bool, CancelFailure>),
    /// `dispose()`.
    Disposed,
    /// `advance()`: how many timers fired, or the error.
    Advanced(Result<usize, ClockError>),
    /// `is_cancellation_requested()`.
    Requested(bool),
}

/// One entry of the callback log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The callback (named by its `Register` op) started running.
    Ran(usize),
    /// The callback found its token's `is_cancellation_requested()` false when it started
    /// (rule 1 says it is already true; the model never logs this).
    NotRequested(usize),
    /// The callback `by` canceled a source; the result.
    Canceled {
        /// The callback.
        by: usize,
        /// The source it canceled.
        source: usize,
        /// What `cancel()` returned.
        result: CancelResult,
    },
    /// The callback `by` unregistered a registration (`None`: there was none).
    Unregistered {
        /// The callback.
        by: usize,
        /// The registration's name and what `unregister()` returned.
        result: Option<(usize, bool)>,
    },
    /// The callback `by` dropped a registration (`None`: there was none).
    Dropped {
        /// The callback.
        by: usize,
        /// The registration's name.
        registration: Option<usize>,
    },
}

/// One source, seen from outside after an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceState {
    /// `source.is_cancellation_requested()`.
    pub requested: bool,
    /// `source.token().is_cancellation_requested()`.
    pub token_requested: bool,
    /// `source.token().throw_if_cancellation_requested().is_err()`.
    pub token_throws: bool,
    /// `source.is_disposed()`.
    pub disposed: bool,
}

/// One live registration, seen from outside after an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegistrationState {
    /// Its name: the index of the op that made it.
    pub name: usize,
    /// `is_registered()`.
    pub registered: bool,
    /// The source its `token()` belongs to (`None`: the none token).
    pub source: Option<usize>,
    /// Its callback's closure has been dropped (it ran, or it never will).
    pub closure_dropped: bool,
}

/// Everything compared after every op besides its outcome and log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// Every source, in creation order.
    pub sources: Vec<SourceState>,
    /// `clock.now()`.
    pub now: Duration,
    /// `clock.pending_timers()`.
    pub pending_timers: usize,
    /// Every live registration, oldest first.
    pub registrations: Vec<RegistrationState>,
}

/// What the driver compares after each op; a divergence names the first that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The op's result.
    Outcome(Outcome),
    /// The log entries the op appended.
    Log(Vec<Entry>),
    /// The state after the op.
    State(State),
}

/// What one op must do: its outcome and the log entries it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The op's result.
    pub outcome: Outcome,
    /// The entries appended during the op, in order.
    pub log: Vec<Entry>,
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// A deliberate mistake in the model, to show the comparison with the runtime can fail
/// ([`Model::with_flaw`]). A faithful model has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// Cancel runs the callbacks oldest first (FIFO) instead of LIFO.
    Fifo,
    /// Cancel runs whatever is registered every time it is called, not only the first
    /// time.
    CancelNotIdempotent,
    /// Registering on a canceled source stores the callback instead of running it inline.
    RegisterOnCanceledStores,
    /// Dispose keeps the closures of the callbacks still registered (the rule before the
    /// review): they live until they are unregistered.
    DisposeKeepsClosures,
}

/// A registration as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// Nothing stored: on the none token, on a disposed source, or run inline.
    Empty,
    /// The callback stored on `source` under `key`.
    Stored { source: usize, key: u64 },
}

/// An [`Action`] with the source of `Cancel` resolved when the callback is registered
/// (the registrations of `Unregister` and `DropRegistration` are resolved when it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Does {
    Record,
    Panic,
    Cancel(usize),
    Unregister(u8),
    DropRegistration(u8),
}

impl Does {
    /// `action` registered when there are `sources` sources (at least one).
    fn resolve(action: Action, sources: usize) -> Does {
        match action {
            Action::Record => Does::Record,
            Action::Panic => Does::Panic,
            Action::Cancel(n) => Does::Cancel(newest(n, sources).unwrap_or(0)),
            Action::Unregister(n) => Does::Unregister(n),
            Action::DropRegistration(n) => Does::DropRegistration(n),
        }
    }
}

/// A stored callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callback {
    /// A registered callback: its name and what it does.
    User { id: usize, does: Does },
    /// A linked source's registration on a parent: cancels `child`.
    Link { child: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceModel {
    /// Cancellation requested (set once, before the first callback runs).
    requested: bool,
    disposed: bool,
    /// Stored callbacks, oldest first.
    callbacks: Vec<(u64, Callback)>,
    next_key: u64,
    /// The `cancel_after` timer: its key in the clock's queue.
    timer: Option<(Duration, u64)>,
    /// A linked source's registrations on its parents.
    links: Vec<Registration>,
}

impl SourceModel {
    fn new() -> Self {
        SourceModel {
            requested: false,
            disposed: false,
            callbacks: Vec::new(),
            next_key: 0,
            timer: None,
            links: Vec::new(),
        }
    }
}

/// The position `n` names among `len` sources or live registrations: counted from the
/// newest (0 is the newest), modulo `len`; `None` when there are none. Used alike by the
/// model and the driver.
pub fn newest(n: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| len - 1 - usize::from(n) % len)
}

/// What storing a callback did (rule 3).
enum Store {
    /// Stored: the registration.
    Kept(Registration),
    /// Nothing stored (disposed, uncanceled source).
    Nothing,
    /// Cancellation was requested: the caller runs the callback now.
    RunNow(Callback),
}

/// The reference model of sources, tokens and registrations on one manual clock (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    now: Duration,
    /// The clock's timers: (due, scheduling order) → the source the timer cancels.
    timers: BTreeMap<(Duration, u64), usize>,
    next_seq: u64,
    sources: Vec<SourceModel>,
    /// Live registrations, oldest first, each named by the op that made it.
    registrations: Vec<(usize, Registration)>,
    /// Entries appended during the current op.
    log: Vec<Entry>,
    flaw: Option<Flaw>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// No sources, no registrations, the clock at zero.
    pub fn new() -> Self {
        Model {
            now: Duration::ZERO,
            timers: BTreeMap::new(),
            next_seq: 0,
            sources: Vec::new(),
            registrations: Vec::new(),
            log: Vec::new(),
            flaw: None,
        }
    }

    /// A model with a deliberate mistake (see [`Flaw`]).
    pub fn with_flaw(flaw: Flaw) -> Self {
        Model {
            flaw: Some(flaw),
            ..Model::new()
        }
    }

    /// Runs `op`, the `index`-th op of its sequence, and returns what the runtime must do.
    pub fn apply(&mut self, index: usize, op: &Op) -> Step {
        self.log.clear();
        let outcome = self.outcome(index, op);
        Step {
            outcome,
            log: std::mem::take(&mut self.log),
        }
    }

    fn outcome(&mut self, index: usize, op: &Op) -> Outcome {
        match *op {
            Op::NewSource { delay } => {
                let source = self.add_source();
                if let Some(delay) = delay {
                    // Rule 7: a zero delay cancels at creation (no callbacks yet); any
                    // other arms the timer.
                    if delay.duration().is_zero() {
                        self.sources[source].requested = true;
                    } else {
                        let _ = self.cancel_after(source, delay.duration());
                    }
                }
                Outcome::Created
            }
            Op::Linked { ref parents } => {
                self.linked(parents);
                Outcome::Created
            }
            Op::Register { target, action } => self.register(index, target, action),
            Op::Unregister { registration } => match self.registration(registration) {
                None => Outcome::Nothing,
                Some(at) => Outcome::Unregistered(self.unregister(self.registrations[at].1)),
            },
            Op::DropRegistration { registration } => match self.registration(registration) {
                None => Outcome::Nothing,
                Some(at) => {
                    // Rule 5: unregisters (nothing runs elsewhere to wait for).
                    let (_, registration) = self.registrations.remove(at);
                    self.unregister(registration);
                    Outcome::Dropped
                }
            },
            Op::Detach { registration } => match self.registration(registration) {
                None => Outcome::Nothing,
                Some(at) => {
                    // The callback stays stored; only the handle goes.
                    self.registrations.remove(at);
                    Outcome::Detached
                }
            },
            Op::IsRegistered { registration } => match self.registration(registration) {
                None => Outcome::Nothing,
                Some(at) => Outcome::IsRegistered(self.is_registered(self.registrations[at].1)),
            },
            Op::Cancel { source } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => Outcome::Canceled(self.cancel(source, false)),
            },
            Op::CancelThrowOnFirst { source } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => Outcome::Canceled(self.cancel(source, true)),
            },
            Op::CancelAfter { source, delay } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => Outcome::CancelAfter(self.cancel_after(source, delay.duration())),
            },
            Op::Advance(by) => Outcome::Advanced(self.advance(by.duration())),
            Op::TryReset { source } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => Outcome::TryReset(self.try_reset(source)),
            },
            Op::Dispose { source } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => {
                    self.dispose(source);
                    Outcome::Disposed
                }
            },
            Op::IsCancellationRequested { source } => match self.source(source) {
                None => Outcome::Nothing,
                Some(source) => Outcome::Requested(self.sources[source].requested),
            },
        }
    }

    /// What the runtime must look like after the op.
    pub fn state(&self) -> State {
        State {
            sources: self
                .sources
                .iter()
                .map(|source| SourceState {
                    requested: source.requested,
                    token_requested: source.requested,
                    token_throws: source.requested,
                    disposed: source.disposed,
                })
                .collect(),
            now: self.now,
            pending_timers: self.timers.len(),
            registrations: self
                .registrations
                .iter()
                .map(|&(name, registration)| RegistrationState {
                    name,
                    registered: self.is_registered(registration),
                    source: match registration {
                        Registration::Empty => None,
                        Registration::Stored { source, .. } => Some(source),
                    },
                    closure_dropped: self.closure_dropped(registration),
                })
                .collect(),
        }
    }

    /// Whether the closure of `registration`'s callback is gone: it is kept exactly while
    /// the callback may still run, that is while it is stored on a source not disposed
    /// (rule 8: dispose drops the closures, the callbacks stay registered).
    fn closure_dropped(&self, registration: Registration) -> bool {
        match registration {
            Registration::Empty => true,
            Registration::Stored { source, .. } => {
                let disposed =
                    self.sources[source].disposed && self.flaw != Some(Flaw::DisposeKeepsClosures);
                !self.is_registered(registration) || disposed
            }
        }
    }

    /// The source `n` names, if there is any.
    fn source(&self, n: u8) -> Option<usize> {
        newest(n, self.sources.len())
    }

    /// The position of the live registration `n` names, if there is any.
    fn registration(&self, n: u8) -> Option<usize> {
        newest(n, self.registrations.len())
    }

    fn add_source(&mut self) -> usize {
        self.sources.push(SourceModel::new());
        self.sources.len() - 1
    }

    /// Rule 6: a link on each parent, in order; a canceled parent cancels the new source
    /// at once. Parents name the sources made before this one; with none, a `Source`
    /// parent is left out.
    fn linked(&mut self, parents: &[Target]) {
        let existing = self.sources.len();
        let child = self.add_source();
        for &parent in parents.iter().take(MAX_PARENTS) {
            let link = Callback::Link { child };
            let registration = match parent {
                Target::None => Registration::Empty,
                Target::Source(n) => {
                    let Some(parent) = newest(n, existing) else {
                        continue;
                    };
                    match self.store(parent, link) {
                        Store::Kept(registration) => registration,
                        Store::Nothing => Registration::Empty,
                        Store::RunNow(link) => {
                            self.run(parent, link);
                            continue;
                        }
                    }
                }
            };
            self.sources[child].links.push(registration);
        }
    }

    /// Rule 3: stores the callback unless cancellation was requested (then the caller
    /// runs it) or the source is disposed (then nothing is stored).
    fn store(&mut self, source: usize, callback: Callback) -> Store {
        let flawed = self.flaw == Some(Flaw::RegisterOnCanceledStores);
        let state = &mut self.sources[source];
        if state.requested && !flawed {
            return Store::RunNow(callback);
        }
        if state.disposed {
            return Store::Nothing;
        }
        let key = state.next_key;
        state.next_key += 1;
        state.callbacks.push((key, callback));
        Store::Kept(Registration::Stored { source, key })
    }

    fn register(&mut self, id: usize, target: Target, action: Action) -> Outcome {
        let registration = match target {
            Target::None => Registration::Empty,
            Target::Source(n) => {
                let Some(source) = self.source(n) else {
                    return Outcome::Nothing;
                };
                let does = Does::resolve(action, self.sources.len());
                match self.store(source, Callback::User { id, does }) {
                    Store::Kept(registration) => registration,
                    Store::Nothing => Registration::Empty,
                    Store::RunNow(callback) => {
                        // Inline, on the registering thread; a panic comes out of register.
                        if !self.run(source, callback).is_empty() {
                            return Outcome::RegisterPanicked;
                        }
                        Registration::Empty
                    }
                }
            }
        };
        self.registrations.push((id, registration));
        Outcome::Registered {
            stored: matches!(registration, Registration::Stored { .. }),
        }
    }

    /// Rule 4: removes the callback if it is still stored.
    fn unregister(&mut self, registration: Registration) -> bool {
        let Registration::Stored { source, key } = registration else {
            return false;
        };
        let callbacks = &mut self.sources[source].callbacks;
        match callbacks.iter().position(|&(stored, _)| stored == key) {
            Some(at) => {
                callbacks.remove(at);
                true
            }
            None => false,
        }
    }

    fn is_registered(&self, registration: Registration) -> bool {
        match registration {
            Registration::Empty => false,
            Registration::Stored { source, key } => self.sources[source]
                .callbacks
                .iter()
                .any(|&(stored, _)| stored == key),
        }
    }

    /// Rules 1 and 2.
    fn cancel(&mut self, source: usize, throw_on_first: bool) -> CancelResult {
        let state = &mut self.sources[source];
        if state.disposed {
            return Err(CancelFailure::Disposed { source });
        }
        if state.requested && self.flaw != Some(Flaw::CancelNotIdempotent) {
            return Ok(());
        }
        state.requested = true;
        if let Some(timer) = state.timer.take() {
            self.timers.remove(&timer);
        }
        let mut failures = Vec::new();
        loop {
            let callbacks = &mut self.sources[source].callbacks;
            let next = if self.flaw == Some(Flaw::Fifo) {
                (!callbacks.is_empty()).then(|| callbacks.remove(0))
            } else {
                callbacks.pop()
            };
            let Some((_, callback)) = next else { break };
            let failed = self.run(source, callback);
            let stop = throw_on_first && !failed.is_empty();
            failures.extend(failed);
            if stop {
                break;
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CancelFailure::CallbacksFailed(failures))
        }
    }

    /// Runs a callback of `source` and returns its failures.
    fn run(&mut self, source: usize, callback: Callback) -> Vec<Failed> {
        match callback {
            Callback::Link { child } => match self.cancel(child, false) {
                Err(CancelFailure::CallbacksFailed(failures)) => failures,
                _ => Vec::new(),
            },
            Callback::User { id, does } => {
                self.log.push(Entry::Ran(id));
                if !self.sources[source].requested {
                    self.log.push(Entry::NotRequested(id));
                }
                match does {
                    Does::Record => {}
                    Does::Panic => {
                        return vec![Failed {
                            source,
                            callback: id,
                        }]
                    }
                    Does::Cancel(target) => {
                        let result = self.cancel(target, false);
                        self.log.push(Entry::Canceled {
                            by: id,
                            source: target,
                            result,
                        });
                    }
                    Does::Unregister(n) => {
                        let result = self.registration(n).map(|at| {
                            let (name, registration) = self.registrations[at];
                            (name, self.unregister(registration))
                        });
                        self.log.push(Entry::Unregistered { by: id, result });
                    }
                    Does::DropRegistration(n) => {
                        let registration = self.registration(n).map(|at| {
                            let (name, registration) = self.registrations.remove(at);
                            self.unregister(registration);
                            name
                        });
                        self.log.push(Entry::Dropped {
                            by: id,
                            registration,
                        });
                    }
                }
                Vec::new()
            }
        }
    }

    /// Rule 7 and the clock's rules 1 and 3: (re)arms the timer unless canceled.
    fn cancel_after(&mut self, source: usize, delay: Duration) -> CancelResult {
        let state = &mut self.sources[source];
        if state.disposed {
            return Err(CancelFailure::Disposed { source });
        }
        if state.requested {
            return Ok(());
        }
        if let Some(old) = state.timer.take() {
            self.timers.remove(&old);
        }
        // `Duration::MAX` is "never"; so is a deadline past the clock's range.
        let due = if delay == Duration::MAX {
            None
        } else {
            self.now.checked_add(delay)
        };
        if let Some(due) = due {
            let key = (due, self.next_seq);
            self.next_seq += 1;
            self.timers.insert(key, source);
            self.sources[source].timer = Some(key);
        }
        Ok(())
    }

    /// The clock's `advance`: fires the due timers one by one in (due, scheduling) order,
    /// with the time at each one's due time, then moves to the target.
    fn advance(&mut self, by: Duration) -> Result<usize, ClockError> {
        let target = self
            .now
            .checked_add(by)
            .ok_or(ClockError::Overflow { now: self.now, by })?;
        let mut fired = 0;
        while let Some(entry) = self.timers.first_entry() {
            let (due, _) = *entry.key();
            if due > target {
                break;
            }
            let source = entry.remove();
            self.now = self.now.max(due);
            fired += 1;
            // The timer's cancel has no caller: its result is dropped.
            let _ = self.cancel(source, false);
        }
        self.now = target;
        Ok(fired)
    }

    /// Rule 9.
    fn try_reset(&mut self, source: usize) -> Result<bool, CancelFailure> {
        let state = &mut self.sources[source];
        if state.disposed {
            return Err(CancelFailure::Disposed { source });
        }
        if state.requested {
            return Ok(false);
        }
        if let Some(timer) = state.timer.take() {
            self.timers.remove(&timer);
        }
        state.callbacks.clear();
        Ok(true)
    }

    /// Rule 8.
    fn dispose(&mut self, source: usize) {
        let state = &mut self.sources[source];
        if state.disposed {
            return;
        }
        state.disposed = true;
        let links = std::mem::take(&mut state.links);
        if let Some(timer) = state.timer.take() {
            self.timers.remove(&timer);
        }
        for link in links {
            self.unregister(link);
        }
    }
}

// ---------------------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------------------

/// Mostly a few milliseconds (so due times collide), sometimes `Duration::MAX`, rarely any
/// number of seconds: 9 : 2 : 1. Shrinks toward zero milliseconds.
pub fn delay_strategy() -> impl Strategy<Value = Delay> {
    // A range picks the variant rather than `prop_oneof!` (see `value_task_source`).
    (0u8..12, 0u8..10, any::<u64>()).prop_map(|(pick, ms, secs)| match pick {
        0..=8 => Delay::Millis(ms),
        9 | 10 => Delay::Max,
        _ => Delay::Secs(secs),
    })
}

/// Advances of the clock: a few milliseconds, rarely `Duration::MAX` or any number of
/// seconds (which overflow once the clock has moved): 14 : 1 : 1. Shrinks toward zero.
pub fn advance_strategy() -> impl Strategy<Value = Delay> {
    (0u8..16, 0u8..10, any::<u64>()).prop_map(|(pick, ms, secs)| match pick {
        0..=13 => Delay::Millis(ms),
        14 => Delay::Max,
        _ => Delay::Secs(secs),
    })
}

/// An index naming a source or registration ([`newest`]): one of the four newest three
/// times in four, else any. Shrinks toward the newest.
pub fn index_strategy() -> impl Strategy<Value = u8> {
    (0u8..4, 0u8..4, any::<u8>()).prop_map(|(pick, near, any)| if pick < 3 { near } else { any })
}

/// A source's token, or the none token: 7 : 1. Shrinks toward the newest source.
pub fn target_strategy() -> impl Strategy<Value = Target> {
    (0u8..8, index_strategy()).prop_map(|(pick, n)| match pick {
        0..=6 => Target::Source(n),
        _ => Target::None,
    })
}

/// Record 5, panic 3, cancel a source 2, unregister 1, drop a registration 1 (of 12).
/// Shrinks toward `Record`.
pub fn action_strategy() -> impl Strategy<Value = Action> {
    (0u8..12, index_strategy()).prop_map(|(pick, n)| match pick {
        0..=4 => Action::Record,
        5..=7 => Action::Panic,
        8 | 9 => Action::Cancel(n),
        10 => Action::Unregister(n),
        _ => Action::DropRegistration(n),
    })
}

/// One op, every [`Op`] variant, weighted toward making sources and registering on them:
/// new source 4, linked 3, register 10, unregister 2, drop 2, detach 1, is_registered 1,
/// cancel 3, cancel_throw_on_first 2, cancel_after 4, advance 4, try_reset 2, dispose 1,
/// is_cancellation_requested 1 (of 40). Shrinks toward a new source without delay.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    let parts = (
        index_strategy(),
        proptest::option::weighted(0.5, delay_strategy()),
        delay_strategy(),
        advance_strategy(),
        target_strategy(),
        action_strategy(),
        proptest::collection::vec(target_strategy(), 0..=3),
    );
    (0u8..40, parts).prop_map(
        |(pick, (n, maybe_delay, delay, advance, target, action, parents))| match pick {
            0..=3 => Op::NewSource { delay: maybe_delay },
            4..=6 => Op::Linked { parents },
            7..=16 => Op::Register { target, action },
            17 | 18 => Op::Unregister { registration: n },
            19 | 20 => Op::DropRegistration { registration: n },
            21 => Op::Detach { registration: n },
            22 => Op::IsRegistered { registration: n },
            23..=25 => Op::Cancel { source: n },
            26 | 27 => Op::CancelThrowOnFirst { source: n },
            28..=31 => Op::CancelAfter { source: n, delay },
            32..=35 => Op::Advance(advance),
            36 | 37 => Op::TryReset { source: n },
            38 => Op::Dispose { source: n },
            // A new variant of `Op` goes above this arm, with the range widened.
            _ => Op::IsCancellationRequested { source: n },
        },
    )
}

/// Sequences of up to `max_len` ops (at least one) that start by making a source, so that
/// the first ops have one to act on.
pub fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(), 0..max_len.max(1)).prop_map(|mut ops| {
        ops.insert(0, Op::NewSource { delay: None });
        ops
    })
}

impl proptest::arbitrary::Arbitrary for Op {
    type Parameters = ();
    type Strategy = BoxedStrategy<Op>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        op_strategy().boxed()
    }
}

// ---------------------------------------------------------------------------------------
// Minimizing a failing sequence
// ---------------------------------------------------------------------------------------

/// Shrinks a failing sequence further than proptest's shrinker can.
///
/// Sources and registrations are named relative to each other ([`newest`]), so deleting
/// an op that makes one renames the others, and proptest's one-pass shrink (delete
/// elements, then simplify them) stops early. This greedy pass repeats, until nothing
/// changes: delete any one op, renaming the sources and registrations the later ops name
/// so they name the same ones as before ([`delete`]), or, failing that, delete it as is;
/// or replace one op by a strictly simpler one ([`simpler`]). A change is kept if `fails`
/// still says the sequence fails. Every change makes the sequence shorter or simpler, so
/// it terminates. Returns `ops` unchanged if it does not fail.
pub fn minimize(ops: &[Op], mut fails: impl FnMut(&[Op]) -> bool) -> Vec<Op> {
    let mut ops = ops.to_vec();
    if !fails(&ops) {
        return ops;
    }
    loop {
        let mut changed = false;
        let mut at = 0;
        while at < ops.len() {
            let renamed = delete(&ops, at);
            let mut plain = ops.clone();
            plain.remove(at);
            if fails(&renamed) {
                ops = renamed;
                changed = true;
            } else if plain != renamed && fails(&plain) {
                ops = plain;
                changed = true;
            } else {
                at += 1;
            }
        }
        for at in 0..ops.len() {
            for op in simpler(&ops[at]) {
                let mut candidate = ops.clone();
                candidate[at] = op;
                if fails(&candidate) {
                    ops = candidate;
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            return ops;
        }
    }
}

/// What an index of an op names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Source,
    Registration,
}

/// The indices of `op` resolved when it is applied (not those a callback resolves when it
/// runs), with what each names.
fn slots(op: &mut Op) -> Vec<(Slot, &mut u8)> {
    match op {
        Op::NewSource { .. } | Op::Advance(_) => Vec::new(),
        Op::Linked { parents } => parents
            .iter_mut()
            .take(MAX_PARENTS)
            .filter_map(|parent| match parent {
                Target::Source(n) => Some((Slot::Source, n)),
                Target::None => None,
            })
            .collect(),
        Op::Register { target, action } => {
            let mut slots = Vec::new();
            if let Target::Source(n) = target {
                slots.push((Slot::Source, n));
            }
            if let Action::Cancel(n) = action {
                slots.push((Slot::Source, n));
            }
            slots
        }
        Op::Unregister { registration }
        | Op::DropRegistration { registration }
        | Op::Detach { registration }
        | Op::IsRegistered { registration } => vec![(Slot::Registration, registration)],
        Op::Cancel { source }
        | Op::CancelThrowOnFirst { source }
        | Op::CancelAfter { source, .. }
        | Op::TryReset { source }
        | Op::Dispose { source }
        | Op::IsCancellationRequested { source } => vec![(Slot::Source, source)],
    }
}

/// Whether `op` makes a source (whatever else happens, it always does).
fn makes_source(op: &Op) -> bool {
    matches!(op, Op::NewSource { .. } | Op::Linked { .. })
}

/// `ops` without the op at `at`, the later ops' indices renamed so that each names the
/// same source (by creation) or registration (by the op that made it) as in `ops`, where
/// that one still exists. The renaming follows a faithful [`Model`]'s view of which
/// registrations are live; whether the result still fails is for the caller to check.
pub fn delete(ops: &[Op], at: usize) -> Vec<Op> {
    // What each op's slots name in `ops`: a source's position or a registration's name.
    let mut model = Model::new();
    let mut named: Vec<Vec<Option<usize>>> = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let state = model.state();
        let mut op_copy = op.clone();
        named.push(
            slots(&mut op_copy)
                .into_iter()
                .map(|(slot, n)| match slot {
                    Slot::Source => newest(*n, state.sources.len()),
                    Slot::Registration => newest(*n, state.registrations.len())
                        .map(|position| state.registrations[position].name),
                })
                .collect(),
        );
        model.apply(index, op);
    }
    let removed_source =
        makes_source(&ops[at]).then(|| ops[..at].iter().filter(|op| makes_source(op)).count());
    let mut model = Model::new();
    let mut renamed = Vec::with_capacity(ops.len().saturating_sub(1));
    for (index, op) in ops.iter().enumerate() {
        if index == at {
            continue;
        }
        let state = model.state();
        let mut op = op.clone();
        for ((slot, n), name) in slots(&mut op).into_iter().zip(&named[index]) {
            let Some(name) = *name else { continue };
            let (position, len) = match slot {
                Slot::Source => {
                    let position = match removed_source {
                        Some(removed) if name == removed => None,
                        Some(removed) if name > removed => Some(name - 1),
                        _ => Some(name),
                    };
                    (position, state.sources.len())
                }
                Slot::Registration => {
                    // Registrations are named by the index of the op that made them.
                    let name = match name.cmp(&at) {
                        std::cmp::Ordering::Less => Some(name),
                        std::cmp::Ordering::Equal => None,
                        std::cmp::Ordering::Greater => Some(name - 1),
                    };
                    let position = name.and_then(|name| {
                        state
                            .registrations
                            .iter()
                            .position(|registration| registration.name == name)
                    });
                    (position, state.registrations.len())
                }
            };
            if let Some(position) = position.filter(|&position| position < len) {
                if let Ok(relative) = u8::try_from(len - 1 - position) {
                    *n = relative;
                }
            }
        }
        model.apply(renamed.len(), &op);
        renamed.push(op);
    }
    renamed
}

/// Smaller values of an index: 0, 1, 2, 3, half, one less (only those below `n`).
fn smaller(n: u8) -> Vec<u8> {
    let mut values: Vec<u8> = [0, 1, 2, 3, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&value| value < n)
        .collect();
    values.dedup();
    values
}

/// Strictly simpler delays, in the order `Millis` (by value) < `Max` < `Secs`.
fn simpler_delays(delay: Delay) -> Vec<Delay> {
    match delay {
        Delay::Millis(ms) => smaller(ms).into_iter().map(Delay::Millis).collect(),
        Delay::Max => vec![Delay::Millis(0), Delay::Millis(1)],
        Delay::Secs(secs) => vec![
            Delay::Millis(0),
            Delay::Max,
            Delay::Secs(0),
            Delay::Secs(secs / 2),
        ]
        .into_iter()
        .filter(|&simpler| simpler != delay)
        .collect(),
    }
}

/// Strictly simpler targets: `None` < `Source` (by index).
fn simpler_targets(target: Target) -> Vec<Target> {
    match target {
        Target::None => Vec::new(),
        Target::Source(n) => std::iter::once(Target::None)
            .chain(smaller(n).into_iter().map(Target::Source))
            .collect(),
    }
}

/// Strictly simpler actions: `Record` < `Panic` < the re-entrant ones (by index).
fn simpler_actions(action: Action) -> Vec<Action> {
    let mut actions = Vec::new();
    match action {
        Action::Record => return actions,
        Action::Panic => {}
        Action::Cancel(n) => actions.extend(smaller(n).into_iter().map(Action::Cancel)),
        Action::Unregister(n) => actions.extend(smaller(n).into_iter().map(Action::Unregister)),
        Action::DropRegistration(n) => {
            actions.extend(smaller(n).into_iter().map(Action::DropRegistration));
        }
    }
    actions.insert(0, Action::Record);
    if action != Action::Panic {
        actions.insert(1, Action::Panic);
    }
    actions
}

/// The ops strictly simpler than `op` that [`minimize`] tries in its place: a plain
/// source for a linked one, fewer parents, smaller indices and delays, simpler targets and
/// actions, no delay, a plain cancel.
pub fn simpler(op: &Op) -> Vec<Op> {
    match *op {
        Op::NewSource { delay: None } => Vec::new(),
        Op::NewSource { delay: Some(delay) } => std::iter::once(None)
            .chain(simpler_delays(delay).into_iter().map(Some))
            .map(|delay| Op::NewSource { delay })
            .collect(),
        Op::Linked { ref parents } => {
            // A plain source is simpler than any linked one.
            let mut ops = vec![Op::NewSource { delay: None }];
            for at in 0..parents.len() {
                let mut fewer = parents.clone();
                fewer.remove(at);
                ops.push(Op::Linked { parents: fewer });
            }
            for (at, &parent) in parents.iter().enumerate() {
                for target in simpler_targets(parent) {
                    let mut simpler = parents.clone();
                    simpler[at] = target;
                    ops.push(Op::Linked { parents: simpler });
                }
            }
            ops
        }
        Op::Register { target, action } => simpler_actions(action)
            .into_iter()
            .map(|action| Op::Register { target, action })
            .chain(
                simpler_targets(target)
                    .into_iter()
                    .map(|target| Op::Register { target, action }),
            )
            .collect(),
        Op::Unregister { registration } => smaller(registration)
            .into_iter()
            .map(|registration| Op::Unregister { registration })
            .collect(),
        Op::DropRegistration { registration } => smaller(registration)
            .into_iter()
            .map(|registration| Op::DropRegistration { registration })
            .collect(),
        Op::Detach { registration } => smaller(registration)
            .into_iter()
            .map(|registration| Op::Detach { registration })
            .collect(),
        Op::IsRegistered { registration } => smaller(registration)
            .into_iter()
            .map(|registration| Op::IsRegistered { registration })
            .collect(),
        Op::Cancel { source } => smaller(source)
            .into_iter()
            .map(|source| Op::Cancel { source })
            .collect(),
        Op::CancelThrowOnFirst { source } => std::iter::once(Op::Cancel { source })
            .chain(
                smaller(source)
                    .into_iter()
                    .map(|source| Op::CancelThrowOnFirst { source }),
            )
            .collect(),
        Op::CancelAfter { source, delay } => smaller(source)
            .into_iter()
            .map(|source| Op::CancelAfter { source, delay })
            .chain(
                simpler_delays(delay)
                    .into_iter()
                    .map(|delay| Op::CancelAfter { source, delay }),
            )
            .collect(),
        Op::Advance(by) => simpler_delays(by).into_iter().map(Op::Advance).collect(),
        Op::TryReset { source } => smaller(source)
            .into_iter()
            .map(|source| Op::TryReset { source })
            .collect(),
        Op::Dispose { source } => smaller(source)
            .into_iter()
            .map(|source| Op::Dispose { source })
            .collect(),
        Op::IsCancellationRequested { source } => smaller(source)
            .into_iter()
            .map(|source| Op::IsCancellationRequested { source })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// A divergence of the runtime from [`Model`].
///
/// What differed is boxed ([`Observed`] holds whole states), so the error stays small.
pub type CancellationDivergence = Divergence<Op, Box<Observed>>;

/// Applies `ops` to the runtime (sources on one fresh manual clock) and to [`Model::new`],
/// and returns the first divergence (see the module docs for what is compared).
pub fn run_against_runtime(ops: &[Op]) -> Result<(), CancellationDivergence> {
    run_against_model(Model::new(), ops)
}

/// [`run_against_runtime`] with the given model (for instance a flawed one).
pub fn run_against_model(mut model: Model, ops: &[Op]) -> Result<(), CancellationDivergence> {
    quiet_expected_panics();
    let world = Arc::new(World {
        clock: Clock::manual(),
        sources: Mutex::new(Vec::new()),
        registrations: Mutex::new(Vec::new()),
        closures: Mutex::new(BTreeMap::new()),
        log: Mutex::new(Vec::new()),
    });
    for (index, op) in ops.iter().enumerate() {
        let expected = model.apply(index, op);
        let checked = harness::catch(|| {
            let outcome = call_runtime(&world, index, op)?;
            let log = std::mem::take(&mut *lock(&world.log));
            if outcome != expected.outcome {
                return Err(DivergenceKind::Outcome {
                    model: Box::new(Observed::Outcome(expected.outcome)),
                    runtime: Box::new(Observed::Outcome(outcome)),
                });
            }
            if log != expected.log {
                return Err(DivergenceKind::Outcome {
                    model: Box::new(Observed::Log(expected.log)),
                    runtime: Box::new(Observed::Log(log)),
                });
            }
            let model_state = model.state();
            let state = world.state(&model_state);
            if state != model_state {
                return Err(DivergenceKind::Outcome {
                    model: Box::new(Observed::State(model_state)),
                    runtime: Box::new(Observed::State(state)),
                });
            }
            Ok(())
        });
        checked.map_err(|kind| Divergence {
            index,
            op: op.clone(),
            kind,
        })?;
    }
    Ok(())
}

/// The runtime's side: the clock, the sources, the live registrations and the log, shared
/// with the callbacks (which hold it weakly, so nothing outlives a run).
struct World {
    clock: Clock,
    /// Every source, in creation order, with its id (as its tokens display it) and token.
    sources: Mutex<Vec<SourceHandle>>,
    /// Live registrations, oldest first, each named by the op that made it.
    registrations: Mutex<Vec<(usize, CancellationTokenRegistration)>>,
    /// Each callback's drop flag (by name), raised when its closure is dropped.
    closures: Mutex<BTreeMap<usize, Arc<AtomicBool>>>,
    log: Mutex<Vec<Entry>>,
}

/// Owned by a callback's closure: raises the callback's flag when the closure is dropped
/// (after it ran, or without running).
struct ClosureGuard(Arc<AtomicBool>);

impl Drop for ClosureGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct SourceHandle {
    id: Option<u64>,
    token: CancellationToken,
    source: Arc<CancellationTokenSource>,
}

/// Locks a driver mutex. No runtime call is made with one held (a callback may need it),
/// and a callback's deliberate panic never happens with one held, so none is poisoned;
/// if one were, its data is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl World {
    /// The source `n` names (a clone of the handle: the lock is released before any call
    /// on it), with its position.
    fn source(&self, n: u8) -> Option<(usize, Arc<CancellationTokenSource>)> {
        let sources = lock(&self.sources);
        let at = newest(n, sources.len())?;
        Some((at, sources[at].source.clone()))
    }

    fn token(&self, target: Target) -> Option<CancellationToken> {
        match target {
            Target::None => Some(CancellationToken::none()),
            Target::Source(n) => {
                let sources = lock(&self.sources);
                let at = newest(n, sources.len())?;
                Some(sources[at].token.clone())
            }
        }
    }

    fn add_source(&self, source: CancellationTokenSource) {
        let token = source.token();
        let id = source_id(&token);
        lock(&self.sources).push(SourceHandle {
            id,
            token,
            source: Arc::new(source),
        });
    }

    /// A source's position from its id.
    fn position(&self, id: u64) -> Option<usize> {
        lock(&self.sources)
            .iter()
            .position(|handle| handle.id == Some(id))
    }

    /// A runtime cancel result, in the model's terms.
    fn cancel_result(&self, result: Result<(), CancelError>) -> CancelResult {
        let error = match result {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let unrecognized = || CancelFailure::Unrecognized(error.to_string());
        Err(match &error {
            CancelError::Disposed { source } => match self.position(*source) {
                Some(source) => CancelFailure::Disposed { source },
                None => unrecognized(),
            },
            CancelError::CallbacksFailed { failures } => {
                let parsed: Option<Vec<Failed>> = failures
                    .iter()
                    .map(|failure| {
                        let (source, callback) = parse_failure(&failure.to_string())?;
                        Some(Failed {
                            source: self.position(source)?,
                            callback,
                        })
                    })
                    .collect();
                parsed.map_or_else(unrecognized, CancelFailure::CallbacksFailed)
            }
            _ => unrecognized(),
        })
    }

    fn log(&self, entry: Entry) {
        lock(&self.log).push(entry);
    }

    /// The state, read from the runtime. `model` only says where to look first for the
    /// source of each registration's token (the answer does not depend on it).
    fn state(&self, model: &State) -> State {
        let sources = lock(&self.sources);
        let registrations = lock(&self.registrations);
        let closures = lock(&self.closures);
        State {
            sources: sources
                .iter()
                .map(|handle| SourceState {
                    requested: handle.source.is_cancellation_requested(),
                    token_requested: handle.token.is_cancellation_requested(),
                    token_throws: handle.token.throw_if_cancellation_requested().is_err(),
                    disposed: handle.source.is_disposed(),
                })
                .collect(),
            now: self.clock.now(),
            pending_timers: self.clock.pending_timers(),
            registrations: registrations
                .iter()
                .enumerate()
                .map(|(at, (name, registration))| {
                    let token = registration.token();
                    let hint = model
                        .registrations
                        .get(at)
                        .and_then(|state| state.source)
                        .filter(|&hint| sources.get(hint).is_some_and(|h| h.token == token));
                    let source = hint.or_else(|| {
                        if token.can_be_canceled() {
                            sources.iter().position(|handle| handle.token == token)
                        } else {
                            None
                        }
                    });
                    RegistrationState {
                        name: *name,
                        registered: registration.is_registered(),
                        source,
                        closure_dropped: closures
                            .get(name)
                            .is_some_and(|flag| flag.load(Ordering::SeqCst)),
                    }
                })
                .collect(),
        }
    }
}

/// The id of a token's source, from its `Display` ("the token of cancellation source #7").
fn source_id(token: &CancellationToken) -> Option<u64> {
    token
        .to_string()
        .strip_prefix("the token of cancellation source #")?
        .parse()
        .ok()
}

/// The source id and callback name of a callback's panic, from the failure's `Display`
/// ("a callback of cancellation source #7 panicked: callback 3 [expected panic]").
fn parse_failure(text: &str) -> Option<(u64, usize)> {
    let rest = text.strip_prefix("a callback of cancellation source #")?;
    let (source, message) = rest.split_once(" panicked: ")?;
    let callback = message
        .strip_prefix("callback ")?
        .strip_suffix(EXPECTED_PANIC)?
        .trim_end();
    Some((source.parse().ok()?, callback.parse().ok()?))
}

/// The callback registered by op `id` on the source at position `on`: logs, then does
/// what it `does` on the world. (It names its source by position, not by token: a token
/// would keep the source that stores the callback alive.) It owns `guard`, which tells
/// when the closure is dropped.
fn make_callback(
    world: Weak<World>,
    id: usize,
    on: usize,
    does: Does,
    guard: ClosureGuard,
) -> impl FnOnce() + Send + 'static {
    move || {
        let _guard = guard;
        let Some(world) = world.upgrade() else {
            return;
        };
        world.log(Entry::Ran(id));
        let requested = lock(&world.sources)
            .get(on)
            .is_some_and(|handle| handle.token.is_cancellation_requested());
        if !requested {
            world.log(Entry::NotRequested(id));
        }
        match does {
            Does::Record => {}
            Does::Panic => {
                drop(world);
                panic!("callback {id} {EXPECTED_PANIC}");
            }
            Does::Cancel(source) => {
                let handle = lock(&world.sources)
                    .get(source)
                    .map(|handle| handle.source.clone());
                if let Some(handle) = handle {
                    let result = world.cancel_result(handle.cancel());
                    world.log(Entry::Canceled {
                        by: id,
                        source,
                        result,
                    });
                }
            }
            Does::Unregister(n) => {
                let result = {
                    let registrations = lock(&world.registrations);
                    newest(n, registrations.len()).map(|at| {
                        let (name, registration) = &registrations[at];
                        (*name, registration.unregister())
                    })
                };
                world.log(Entry::Unregistered { by: id, result });
            }
            Does::DropRegistration(n) => {
                let removed = {
                    let mut registrations = lock(&world.registrations);
                    newest(n, registrations.len()).map(|at| registrations.remove(at))
                };
                // Dropped unlocked: rule 5 may make it wait (not on this thread).
                let registration = removed.map(|(name, registration)| {
                    drop(registration);
                    name
                });
                world.log(Entry::Dropped {
                    by: id,
                    registration,
                });
            }
        }
    }
}

/// Runs `op` on the runtime and reports what it returned.
fn call_runtime(
    world: &Arc<World>,
    index: usize,
    op: &Op,
) -> Result<Outcome, DivergenceKind<Box<Observed>>> {
    let registration = |n: u8| {
        let registrations = lock(&world.registrations);
        newest(n, registrations.len())
    };
    Ok(match *op {
        Op::NewSource { delay } => {
            let clock = world.clock.clone();
            world.add_source(match delay {
                None => CancellationTokenSource::with_clock(clock),
                Some(delay) => CancellationTokenSource::with_delay(delay.duration(), clock),
            });
            Outcome::Created
        }
        Op::Linked { ref parents } => {
            let tokens: Vec<CancellationToken> = parents
                .iter()
                .take(MAX_PARENTS)
                .filter_map(|&parent| world.token(parent))
                .collect();
            world.add_source(CancellationTokenSource::linked_with_clock(
                &tokens,
                world.clock.clone(),
            ));
            Outcome::Created
        }
        Op::Register { target, action } => {
            let (token, on) = match target {
                Target::None => (CancellationToken::none(), 0),
                Target::Source(n) => match world.source(n) {
                    None => return Ok(Outcome::Nothing),
                    Some((on, source)) => (source.token(), on),
                },
            };
            let does = Does::resolve(action, lock(&world.sources).len());
            let flag = Arc::new(AtomicBool::new(false));
            lock(&world.closures).insert(index, flag.clone());
            let guard = ClosureGuard(flag);
            let callback = make_callback(Arc::downgrade(world), index, on, does, guard);
            match panic::catch_unwind(AssertUnwindSafe(|| token.register(callback))) {
                Ok(registration) => {
                    let stored = registration.is_registered();
                    lock(&world.registrations).push((index, registration));
                    Outcome::Registered { stored }
                }
                Err(payload) => {
                    let message = panic_text(&*payload);
                    if is_expected_panic(&message) {
                        Outcome::RegisterPanicked
                    } else {
                        return Err(DivergenceKind::RuntimePanicked { message });
                    }
                }
            }
        }
        Op::Unregister { registration: n } => match registration(n) {
            None => Outcome::Nothing,
            Some(at) => Outcome::Unregistered(lock(&world.registrations)[at].1.unregister()),
        },
        Op::DropRegistration { registration: n } => match registration(n) {
            None => Outcome::Nothing,
            Some(at) => {
                let (_, registration) = lock(&world.registrations).remove(at);
                drop(registration);
                Outcome::Dropped
            }
        },
        Op::Detach { registration: n } => match registration(n) {
            None => Outcome::Nothing,
            Some(at) => {
                let (_, registration) = lock(&world.registrations).remove(at);
                registration.detach();
                Outcome::Detached
            }
        },
        Op::IsRegistered { registration: n } => match registration(n) {
            None => Outcome::Nothing,
            Some(at) => Outcome::IsRegistered(lock(&world.registrations)[at].1.is_registered()),
        },
        Op::Cancel { source } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => Outcome::Canceled(world.cancel_result(source.cancel())),
        },
        Op::CancelThrowOnFirst { source } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => {
                Outcome::Canceled(world.cancel_result(source.cancel_throw_on_first()))
            }
        },
        Op::CancelAfter { source, delay } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => {
                Outcome::CancelAfter(world.cancel_result(source.cancel_after(delay.duration())))
            }
        },
        Op::Advance(by) => Outcome::Advanced(world.clock.advance(by.duration())),
        Op::TryReset { source } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => Outcome::TryReset(match source.try_reset() {
                Ok(reset) => Ok(reset),
                Err(error) => Err(world
                    .cancel_result(Err(error))
                    .expect_err("an error stays an error")),
            }),
        },
        Op::Dispose { source } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => {
                source.dispose();
                Outcome::Disposed
            }
        },
        Op::IsCancellationRequested { source } => match world.source(source) {
            None => Outcome::Nothing,
            Some((_, source)) => Outcome::Requested(source.is_cancellation_requested()),
        },
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Whether a panic message is a callback's deliberate panic ("callback 3 [expected
/// panic]"), and not, say, a report that quotes one.
fn is_expected_panic(message: &str) -> bool {
    message.starts_with("callback ") && message.ends_with(EXPECTED_PANIC)
}

/// Installs (once per process) a panic hook that keeps the callbacks' deliberate panics
/// (messages containing [`EXPECTED_PANIC`]) off stderr and passes every other panic to the
/// hook installed before it.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(is_expected_panic) {
                previous(info);
            }
        }));
    });
}
