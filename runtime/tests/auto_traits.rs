//! What the public types promise about threads, checked at compile time.
//!
//! A handle that cannot cross threads, or a future that is not `Send`, breaks users' code
//! far from the change that caused it; these functions do not compile if a promise is
//! broken. Each test body only names the types: compiling is the test. The promises are
//! about the std build users get (model builds swap the primitives underneath).

#![cfg(not(any(loom, shuttle)))]

use std::error::Error;
use std::future::Future;

use taskcheck::{
    start, CompletionError, ConfiguredAwait, Context, Continuation, PumpError, SingleThreadContext,
    SpawnError, Task, TaskAwaiter, TaskCompletionSource, TaskError, ThreadPool, WaitError,
    WouldDeadlock,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}
fn unpin<T: Unpin>() {}
fn clone<T: Clone>() {}
fn std_error<E: Error + Send + Sync + Clone + 'static>() {}
fn send_future<F: Future + Send>(_: &F) {}

/// Handles are shared between threads: a task is awaited from anywhere, a completion
/// source is completed from anywhere, contexts and pools are posted to from anywhere.
#[test]
fn handles_are_send_and_sync() {
    send_sync::<Task<String>>();
    send_sync::<TaskCompletionSource<String>>();
    send_sync::<Context>();
    send_sync::<ThreadPool>();
    send_sync::<SingleThreadContext>();
    send_sync::<TaskError>();
    send::<Continuation>();
    clone::<Task<String>>();
    clone::<Context>();
    clone::<TaskError>();
}

/// Awaiting is poll-by-hand friendly: the task, its awaiter and a configured await are
/// `Unpin`.
#[test]
fn awaits_are_unpin() {
    unpin::<Task<String>>();
    unpin::<TaskAwaiter<String>>();
    unpin::<ConfiguredAwait<TaskAwaiter<String>>>();
}

/// Every misuse error is a `std::error::Error` that crosses threads (so `?` turns it into a
/// fault, and `Box<dyn Error + Send + Sync>` holds it).
#[test]
fn misuse_errors_are_std_errors() {
    std_error::<WaitError>();
    std_error::<WouldDeadlock>();
    std_error::<CompletionError>();
    std_error::<SpawnError>();
    std_error::<PumpError>();
}

/// A body that awaits tasks — plainly, configured, or several — is `Send`, so it can be
/// spawned anywhere.
#[test]
fn bodies_awaiting_tasks_are_send() {
    let body = async {
        let a = Task::from_result(1).await?;
        let b = Task::from_result(2).configure_await(false).await?;
        let c = start(async { Ok::<_, TaskError>(3) }).await?;
        Ok::<_, TaskError>(a + b + c)
    };
    send_future(&body);
}
