//! taskcheck: a compact async executor with .NET's Task semantics, built to be
//! model-checked.
//!
//! If you know C#: [`Task`] is `Task<TResult>` (multi-await, clonable), [`start`] is calling
//! an `async` method, [`Task::run`] is `Task.Run`, [`TaskCompletionSource`] is itself,
//! [`Context`] is a `SynchronizationContext`, [`Task::configure_await`] is `ConfigureAwait`,
//! and [`Task::wait`] is `.Result` — except that it reports the UI-thread deadlock instead
//! of hanging. If you know tokio: a task is a spawned future whose handle anyone may clone
//! and await, and the scheduler that resumes it after an `.await` is the one it was
//! running on when it suspended.
//!
//! # A tour
//!
//! Spawn onto a pool and await from anywhere; every awaiter gets the same outcome:
//!
//! ```
//! use taskcheck::{TaskError, ThreadPool};
//!
//! let pool = ThreadPool::new(2);
//! let answer = pool.spawn(async { Ok::<_, TaskError>(42) });
//! let doubled = pool.spawn({
//!     let answer = answer.clone();
//!     async move { Ok::<_, TaskError>(answer.await? * 2) }
//! });
//! assert_eq!(doubled.wait().unwrap(), 84);
//! assert_eq!(answer.wait().unwrap(), 42);
//! ```
//!
//! A panic in a task is a fault of that task, seen by whoever awaits it:
//!
//! ```
//! # use taskcheck::{TaskError, ThreadPool};
//! let pool = ThreadPool::new(1);
//! let task = pool.spawn(async { if true { panic!("boom") } Ok::<u8, TaskError>(1) });
//! let error = task.wait().unwrap_err();
//! assert_eq!(error.task_error().unwrap().panic_message(), Some("boom"));
//! ```
//!
//! The classic deadlock: a UI thread blocks on an async method whose `.await` captured the
//! UI context. taskcheck proves the wait can never end and says so:
//!
//! ```
//! use taskcheck::{start, SingleThreadContext, TaskError, ThreadPool};
//!
//! let pool = ThreadPool::new(1);
//! let ui = SingleThreadContext::new("ui");
//! let error = ui
//!     .enter(|| {
//!         let work = pool.spawn(async { Ok::<_, TaskError>(7) });
//!         // An async method called on the UI thread: its await captures the UI context.
//!         let method = start(async move { Ok::<_, TaskError>(work.await? + 1) });
//!         method.wait() // .Result on the UI thread
//!     })
//!     .unwrap()
//!     .unwrap_err();
//! assert!(error.is_would_deadlock());
//! println!("{error}");
//! ```
//!
//! The fix is `configure_await(false)` in the awaited code (or awaiting instead of
//! blocking): the continuation then needs nothing from the UI context.
//!
//! ```
//! # use taskcheck::{start, SingleThreadContext, TaskError, ThreadPool};
//! # let pool = ThreadPool::new(1);
//! # let ui = SingleThreadContext::new("ui");
//! let value = ui
//!     .enter(|| {
//!         let work = pool.spawn(async { Ok::<_, TaskError>(7) });
//!         let method = start(async move { Ok::<_, TaskError>(work.configure_await(false).await? + 1) });
//!         method.wait()
//!     })
//!     .unwrap()
//!     .unwrap();
//! assert_eq!(value, 8);
//! ```
//!
//! A [`ValueTask`] costs nothing when its result is already there, and nothing in steady
//! state when it comes from a pooled source; `.await` consumes it, so awaiting one twice
//! does not compile:
//!
//! ```
//! use taskcheck::{SingleThreadContext, TaskError, ValueTask, ValueTaskSourcePool};
//!
//! let ui = SingleThreadContext::new("ui");
//! let sources = ValueTaskSourcePool::<u32>::new(4);
//! let total = ui.block_on(async move {
//!     let ready: ValueTask<u32> = ValueTask::from_result(1);
//!     let producer = sources.rent(); // an operation that will complete later
//!     let pending = producer.value_task();
//!     producer.set_result(2)?;
//!     Ok::<_, TaskError>(ready.await? + pending.await?)
//! });
//! assert_eq!(total.unwrap(), 3);
//! ```
//!
//! Cancellation is cooperative, as in .NET: a token asks, the code decides. Callbacks run
//! on the cancelling thread, last registered first; time comes from a [`Clock`] that tests
//! advance by hand:
//!
//! ```
//! use std::time::Duration;
//! use taskcheck::{CancellationTokenSource, Clock};
//!
//! let clock = Clock::manual();
//! let source = CancellationTokenSource::with_clock(clock.clone());
//! let token = source.token();
//! let delay = clock.delay(Duration::from_secs(5), &token);
//! source.cancel_after(Duration::from_secs(1)).unwrap();
//! clock.advance(Duration::from_secs(1)).unwrap(); // the timer fires here, not before
//! assert!(delay.is_canceled());
//! assert_eq!(delay.outcome().unwrap().unwrap_err().cancellation_token(), Some(&token));
//! ```
//!
//! Combinators wait for several tasks; a fault nobody observed is reported once, when the
//! last handle of its task is dropped:
//!
//! ```
//! use taskcheck::{when_all, when_any, TaskCompletionSource, TaskError};
//!
//! let (a, b) = (TaskCompletionSource::new(), TaskCompletionSource::new());
//! let all = when_all([a.task(), b.task()]);
//! let first = when_any([a.task(), b.task()]).unwrap();
//! b.set_result(2).unwrap();
//! a.set_result(1).unwrap();
//! assert_eq!(all.outcome().unwrap().unwrap(), vec![1, 2]); // input order
//! assert_eq!(first.outcome().unwrap().unwrap().id(), b.task().id()); // first to complete
//! ```
//!
//! # Where things live
//!
//! | module | what |
//! |---|---|
//! | `task`, `task_core`, `completion_source` | [`Task`], its shared completion core, [`TaskCompletionSource`] |
//! | `task_cache` | the completed-task cache behind [`Task::from_result`] |
//! | `value_task`, `value_task_source`, `value_task_pool` | [`ValueTask`], the source contract and its reusable core, the source pool |
//! | `raw_task` | a spawned future's scheduling state machine |
//! | `awaiter` | the awaiter contract ([`Awaitable`], [`Awaiter`]) and `configure_await` |
//! | `context`, `thread_pool`, `single_thread` | [`Context`], [`ThreadPool`], [`SingleThreadContext`] |
//! | `wait` | blocking waits: inlining what they depend on, and the deadlock proof |
//! | `cancellation` | [`CancellationTokenSource`], [`CancellationToken`], [`CancellationTokenRegistration`] |
//! | `time` | [`Clock`] (system or manual), [`delay`], [`yield_now`], the timers behind timeouts |
//! | `when` | [`when_all`], [`when_any`], [`when_each`] |
//! | `unobserved` | unobserved-error reports, their hooks, and [`start_void`] (C#'s `async void`) |
//! | `sync` | the std / loom / shuttle facade: the only file that names a primitive |
//!
//! # Lazy and eager starts
//!
//! [`Context::spawn`] (and [`ThreadPool::spawn`], [`SingleThreadContext::spawn`],
//! [`spawn`]) is *lazy*, the Rust convention: the future's first poll is queued. [`start`]
//! is *eager*, like calling a C# `async` method: the future runs on the caller's thread up
//! to its first suspension before `start` returns, and an error or panic before that
//! suspension gives an already-faulted task, never a panic at the call site.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod awaiter;
mod cancellation;
mod completion_source;
mod context;
mod error;
mod raw_task;
mod single_thread;
mod sync;
mod task;
mod task_cache;
mod task_core;
mod thread_pool;
mod time;
mod unobserved;
mod value_task;
mod value_task_pool;
mod value_task_source;
mod wait;
mod when;

use std::future::Future;
use std::panic::Location;

pub use awaiter::{
    Awaitable, Awaiter, ConfigureAwaitOptions, ConfiguredAwait, Continuation, Dependency,
    SuppressThrowing,
};
pub use cancellation::{
    CancelError, CancellationToken, CancellationTokenRegistration, CancellationTokenSource,
    Cancelled,
};
pub use completion_source::{TaskCompletionSource, TaskCreationOptions};
pub use context::{Context, ContextId};
pub use error::{CompletionError, ForeignCancellation, SpawnError, TaskError, TimeoutError};
pub use single_thread::{PumpError, SingleThreadContext, SingleThreadContextBuilder, WaitMode};
pub use task::{Task, TaskAwaiter, TaskId, TaskStatus};
pub use thread_pool::ThreadPool;
pub use time::{delay, yield_now, Clock, ClockError, YieldNow};
pub use unobserved::{
    reset_async_void_error_handler, reset_unobserved_error_hook, set_async_void_error_handler,
    set_unobserved_error_hook, start_void, UnhandledKind, UnhandledTaskError,
};
pub use value_task::{ValueTask, ValueTaskAwaiter};
pub use value_task_pool::{PooledValueTaskSource, ValueTaskProducer, ValueTaskSourcePool};
pub use value_task_source::{
    ManualResetValueTaskSourceCore, Refused, SourceErrorKind, ValueTaskSource, ValueTaskSourceError,
};
pub use wait::{WaitError, WouldDeadlock};
pub use when::{when_all, when_any, when_each, WhenAnyError, WhenEach};

/// The trait [`WhenEach`] implements (`futures_core::Stream`), re-exported so a caller can
/// poll it without depending on `futures-core` itself.
pub use futures_core::Stream;

/// Deliberate bugs for the models (model builds only; see `sync::knobs`).
#[cfg(any(loom, shuttle))]
#[doc(hidden)]
pub use sync::knobs;

/// Starts `future` eagerly, as calling a C# `async` method does: it runs on the calling
/// thread until its first suspension before this returns. Effects before that suspension
/// have happened when `start` returns; an error or a panic before it gives an
/// already-faulted task. A synchronous result that the completed-task cache holds (see
/// [`Task::from_result`]) returns the cached task, as C# does. After a suspension the
/// future resumes where its `.await`s capture (the calling thread's current context, by
/// default).
#[track_caller]
pub fn start<F, T>(future: F) -> Task<T>
where
    F: Future<Output = Result<T, TaskError>> + Send + 'static,
    T: Send + 'static,
{
    let (task, raw) = raw_task::RawTask::spawn_parts(future, Location::caller(), false);
    task.core
        .set_hooks(Context::current().map(|context| context.hooks().clone()));
    raw_task::RawTask::run_now(&raw);
    if !task_cache::ENABLED {
        return task;
    }
    let cached = task.core.with_outcome(|outcome| match outcome {
        Some(Ok(value)) => task_cache::cached(value),
        _ => None,
    });
    cached.unwrap_or(task)
}

/// Spawns `future` lazily onto the current context, or the default pool when the calling
/// thread has none.
///
/// Model builds have no default pool: off any context, the future starts eagerly there.
#[track_caller]
pub fn spawn<F, T>(future: F) -> Task<T>
where
    F: Future<Output = Result<T, TaskError>> + Send + 'static,
    T: Send + 'static,
{
    match Context::current().or_else(sync::default_pool) {
        Some(context) => context.spawn(future),
        None => start(future),
    }
}
