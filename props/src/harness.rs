//! What the drivers share: the divergence report, counting wakers, and catching panics.

use std::error::Error;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

/// Where and how the runtime disagreed with a model: the first op whose effects differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence<O, R> {
    /// The index of the op in the sequence.
    pub index: usize,
    /// The op.
    pub op: O,
    /// What differed.
    pub kind: DivergenceKind<R>,
}

/// What differed between a model and the runtime; `R` is the model's outcome type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DivergenceKind<R> {
    /// The op returned something else.
    Outcome {
        /// What the model returned.
        model: R,
        /// What the runtime returned.
        runtime: R,
    },
    /// The runtime returned an error that no op injects.
    ForeignError {
        /// The runtime's error, displayed.
        runtime: String,
    },
    /// The source's version after the op.
    Version {
        /// The model's version.
        model: u64,
        /// The runtime's version.
        runtime: u64,
    },
    /// How many of the pool's sources are rented after the op.
    Rented {
        /// The model's count.
        model: usize,
        /// The runtime's count.
        runtime: usize,
    },
    /// Other continuations were resumed during the op (or some more than once).
    Woken {
        /// The continuations the model resumed (each once).
        model: Vec<usize>,
        /// The continuations the runtime resumed, with how many times each.
        runtime: Vec<(usize, usize)>,
    },
    /// The runtime holds other continuations after the op.
    Held {
        /// The continuations the model holds.
        model: Vec<usize>,
        /// The continuations the runtime holds.
        runtime: Vec<usize>,
    },
    /// Polling an await outside any task did not hand the awaiter a continuation.
    NoContinuation,
    /// The runtime panicked during the op.
    RuntimePanicked {
        /// The panic message.
        message: String,
    },
}

impl<O: fmt::Debug, R: fmt::Debug> fmt::Display for Divergence<O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{} {:?}: ", self.index, self.op)?;
        match &self.kind {
            DivergenceKind::Outcome { model, runtime } => {
                write!(f, "the model returned {model:?}, the runtime {runtime:?}")
            }
            DivergenceKind::ForeignError { runtime } => {
                write!(f, "the runtime returned an error no op injected: {runtime}")
            }
            DivergenceKind::Version { model, runtime } => write!(
                f,
                "afterwards the model is at version {model}, the runtime at {runtime}"
            ),
            DivergenceKind::Rented { model, runtime } => write!(
                f,
                "afterwards the model has {model} source(s) rented, the runtime {runtime}"
            ),
            DivergenceKind::Woken { model, runtime } => write!(
                f,
                "the model resumed continuation(s) {model:?}, the runtime resumed \
                 (continuation, times) {runtime:?}"
            ),
            DivergenceKind::Held { model, runtime } => write!(
                f,
                "afterwards the model holds continuation(s) {model:?}, the runtime {runtime:?}"
            ),
            DivergenceKind::NoContinuation => {
                f.write_str("polling an await did not hand its awaiter a continuation")
            }
            DivergenceKind::RuntimePanicked { message } => {
                write!(f, "the runtime panicked: {message}")
            }
        }
    }
}

impl<O: fmt::Debug, R: fmt::Debug> Error for Divergence<O, R> {}

/// A waker that counts its wakes.
#[derive(Debug, Default)]
pub(crate) struct CountingWaker {
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every counting waker a driver made, each named by the index of the op that made it.
///
/// The registry keeps the only reference a driver holds between ops, so a waker whose
/// reference count is above one is held by the runtime (inside a continuation).
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    wakers: Vec<(usize, Arc<CountingWaker>)>,
}

impl Wakers {
    /// A new waker named `id`.
    pub(crate) fn add(&mut self, id: usize) -> Arc<CountingWaker> {
        let waker = Arc::new(CountingWaker::default());
        self.wakers.push((id, waker.clone()));
        waker
    }

    /// The waker named `id`.
    pub(crate) fn get(&self, id: usize) -> Option<Arc<CountingWaker>> {
        let (_, waker) = self.wakers.iter().find(|(named, _)| *named == id)?;
        Some(waker.clone())
    }

    /// Every waker's wake count, in the registry's order.
    pub(crate) fn counts(&self) -> Vec<usize> {
        let count = |waker: &CountingWaker| waker.wakes.load(Ordering::SeqCst);
        self.wakers.iter().map(|(_, waker)| count(waker)).collect()
    }

    /// The wakers woken since `before` was taken, with how many times each.
    pub(crate) fn woken_since(&self, before: &[usize]) -> Vec<(usize, usize)> {
        self.wakers
            .iter()
            .zip(self.counts())
            .enumerate()
            .filter_map(|(i, ((id, _), now))| {
                let times = now.saturating_sub(before.get(i).copied().unwrap_or(0));
                (times > 0).then_some((*id, times))
            })
            .collect()
    }

    /// The wakers the runtime holds, in the registry's order.
    pub(crate) fn held(&self) -> Vec<usize> {
        self.wakers
            .iter()
            .filter(|(_, waker)| Arc::strong_count(waker) > 1)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Compares what an op did in the runtime with what the model says, after the outcome and
/// any per-model state matched: the continuations woken and held.
pub(crate) fn check_continuations<R>(
    wakers: &Wakers,
    before: &[usize],
    mut model_woken: Vec<usize>,
    mut model_held: Vec<usize>,
) -> Result<(), DivergenceKind<R>> {
    let woken = wakers.woken_since(before);
    model_woken.sort_unstable();
    let mut runtime_woken = woken.clone();
    runtime_woken.sort_unstable();
    if runtime_woken != model_woken.iter().map(|&id| (id, 1)).collect::<Vec<_>>() {
        return Err(DivergenceKind::Woken {
            model: model_woken,
            runtime: woken,
        });
    }
    let mut held = wakers.held();
    held.sort_unstable();
    model_held.sort_unstable();
    if held != model_held {
        return Err(DivergenceKind::Held {
            model: model_held,
            runtime: held,
        });
    }
    Ok(())
}

/// Runs `f`, turning a panic into [`DivergenceKind::RuntimePanicked`].
pub(crate) fn catch<T, R>(
    f: impl FnOnce() -> Result<T, DivergenceKind<R>>,
) -> Result<T, DivergenceKind<R>> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = if let Some(text) = payload.downcast_ref::<&'static str>() {
                (*text).to_owned()
            } else if let Some(text) = payload.downcast_ref::<String>() {
                text.clone()
            } else {
                "a panic with a non-string payload".to_owned()
            };
            Err(DivergenceKind::RuntimePanicked { message })
        }
    }
}
