//! Exact allocation counts of the paths DESIGN.md ("Performance") promises are cheap.
//!
//! This binary installs a counting global allocator: every allocation on every thread
//! (`alloc`, `alloc_zeroed` and `realloc` each count one, with their byte sizes) goes
//! through two atomics before reaching `System`. It is its own test binary, so no other test
//! pays for it.
//!
//! # Why counts are the minimum of a few tries
//!
//! The counter sees every thread, including libtest's: while one test measures, the test
//! harness may start the next test's thread or print a result, and that allocates. Tests
//! here take one mutex so they never measure at the same time, and every measurement runs
//! its code [`TRIES`] times and keeps the smallest count. Noise only ever adds
//! allocations, and the code measured does the same thing every time, so the minimum is
//! the code's own count. Each measurement warms up first (caches built, queues grown to
//! their steady capacity), so the count is the steady state.
//!
//! # What is asserted
//!
//! - `Task::from_result` of `()`, `bool` and integers in −1..=8 (0..=8 unsigned): no
//!   allocation once the cache is built, and the same task every time; other values
//!   allocate one task.
//! - `ValueTask::from_result` and awaiting it: no allocation.
//! - The pooled `ValueTask` path, steady state: 1000 rent → await (suspending) → complete
//!   rounds allocate nothing.
//! - A spawned task's cost, whatever its awaits: the current number is asserted exactly,
//!   with the target from DESIGN.md (1) next to it; and what joining one by `.await` adds.

#![cfg(not(any(loom, shuttle)))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::{poll_fn, Future, IntoFuture};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as PollContext, Poll, Waker};

use taskcheck::{
    spawn, start, start_void, when_all, when_each, CancellationToken, SingleThreadContext, Stream,
    Task, TaskCompletionSource, TaskError, ValueTask, ValueTaskProducer, ValueTaskSourcePool,
    WhenEach,
};

// ---------------------------------------------------------------------------------------
// The counting allocator

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counting touches only
// atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    allocations: u64,
    bytes: u64,
}

fn snapshot() -> Counts {
    Counts {
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
        bytes: BYTES.load(Ordering::SeqCst),
    }
}

fn since(before: Counts) -> Counts {
    let now = snapshot();
    Counts {
        allocations: now.allocations - before.allocations,
        bytes: now.bytes - before.bytes,
    }
}

/// How many times a measurement runs (see the module docs).
const TRIES: usize = 5;

/// What `f` allocates, the smallest count of [`TRIES`] runs after one warm-up run. What
/// `f` returns is dropped outside the measurement.
fn measure<R>(mut f: impl FnMut() -> R) -> Counts {
    drop(f());
    (0..TRIES)
        .map(|_| {
            let before = snapshot();
            let result = f();
            let counts = since(before);
            drop(result);
            counts
        })
        .min_by_key(|counts| counts.allocations)
        .expect("TRIES > 0")
}

/// One test measures at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `future` once with a waker that does nothing (no allocation).
fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = pin!(future);
    future
        .as_mut()
        .poll(&mut PollContext::from_waker(Waker::noop()))
}

/// Suspends once through the scheduler: wakes its own task, then returns `Pending`.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

// ---------------------------------------------------------------------------------------
// The completed-task cache

/// `Task::from_result(value)` allocates nothing (after the cache is built) and returns the
/// same task every time.
fn assert_cached<T: Clone + PartialEq + std::fmt::Debug + Send + 'static>(value: T) {
    let first = Task::from_result(value.clone());
    let counts = measure(|| Task::from_result(value.clone()));
    assert_eq!(
        counts.allocations,
        0,
        "Task::from_result({value:?}) of {} allocated {counts:?}",
        std::any::type_name::<T>()
    );
    assert_eq!(
        Task::from_result(value.clone()).id(),
        first.id(),
        "Task::from_result({value:?}) must return the shared task"
    );
    assert_eq!(first.outcome().unwrap().unwrap(), value);
}

/// `Task::from_result(value)` allocates exactly one task.
fn assert_not_cached<T: Clone + std::fmt::Debug + Send + 'static>(value: T) {
    let counts = measure(|| Task::from_result(value.clone()));
    assert_eq!(
        counts.allocations,
        1,
        "Task::from_result({value:?}) of {} is not cached: one task, got {counts:?}",
        std::any::type_name::<T>()
    );
    assert_ne!(
        Task::from_result(value.clone()).id(),
        Task::from_result(value.clone()).id()
    );
}

macro_rules! signed_cache {
    ($($int:ty),*) => {$(
        for n in -1..=8 {
            assert_cached::<$int>(n);
        }
        assert_not_cached::<$int>(-2);
        assert_not_cached::<$int>(9);
    )*};
}

macro_rules! unsigned_cache {
    ($($int:ty),*) => {$(
        for n in 0..=8 {
            assert_cached::<$int>(n);
        }
        assert_not_cached::<$int>(9);
        assert_not_cached::<$int>(<$int>::MAX);
    )*};
}

#[test]
fn from_result_of_a_cached_value_allocates_nothing_and_shares_one_task() {
    let _serial = serial();
    assert_cached(());
    assert_cached(false);
    assert_cached(true);
    signed_cache!(i8, i16, i32, i64, i128, isize);
    unsigned_cache!(u8, u16, u32, u64, u128, usize);
    assert_eq!(measure(Task::completed).allocations, 0);
    assert_eq!(Task::completed().id(), Task::from_result(()).id());
}

#[test]
fn from_result_of_another_value_allocates_one_task() {
    let _serial = serial();
    // (Values whose clone allocates would be counted too; these do not.)
    assert_not_cached('x');
    assert_not_cached((1u8, 2u8));
    assert_not_cached(0.0f64);
    let counts = measure(|| Task::from_result(9i32));
    // One `Arc<TaskCore<i32>>`.
    assert_eq!(counts.allocations, 1, "{counts:?}");
}

// ---------------------------------------------------------------------------------------
// ValueTask

#[test]
fn a_ready_value_task_and_its_await_allocate_nothing() {
    let _serial = serial();
    let counts = measure(|| ValueTask::<u64>::from_result(7));
    assert_eq!(counts.allocations, 0, "from_result: {counts:?}");

    let counts = measure(|| {
        let outcome = poll_once(ValueTask::<u64>::from_result(7).into_future());
        assert!(matches!(outcome, Poll::Ready(Ok(7))));
    });
    assert_eq!(counts.allocations, 0, "from_result + await: {counts:?}");

    let error = TaskError::canceled();
    let counts = measure(|| {
        let outcome = poll_once(ValueTask::<u64>::from_error(error.clone()).into_future());
        assert!(matches!(outcome, Poll::Ready(Err(_))));
    });
    assert_eq!(counts.allocations, 0, "from_error + await: {counts:?}");

    // Awaited inside a spawned task: the await itself allocates nothing.
    let ui = SingleThreadContext::new("alloc-ready");
    let inside = ui
        .block_on(async {
            let mut best = u64::MAX;
            for _ in 0..TRIES {
                let before = snapshot();
                for n in 0..100u64 {
                    assert_eq!(ValueTask::<u64>::from_result(n).await?, n);
                }
                best = best.min(since(before).allocations);
            }
            Ok::<_, TaskError>(best)
        })
        .unwrap();
    assert_eq!(inside, 0, "100 ready awaits inside a task");
}

/// The producer and consumer of the steady-state pooled loop meet here.
struct Handoff {
    producer: Mutex<Option<ValueTaskProducer<u64>>>,
    waker: Mutex<Option<Waker>>,
    done: AtomicBool,
}

/// The producer task: completes every operation the consumer hands it, in order, with
/// 0, 1, 2, ...
async fn complete_handed_operations(handoff: Arc<Handoff>) -> Result<u64, TaskError> {
    let mut next = 0u64;
    poll_fn(move |cx| loop {
        // Take the producer out before completing: completing may run the consumer inline.
        let producer = handoff.producer.lock().unwrap().take();
        if let Some(producer) = producer {
            producer.set_result(next).expect("a fresh rental completes");
            next += 1;
            continue;
        }
        if handoff.done.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(next));
        }
        *handoff.waker.lock().unwrap() = Some(cx.waker().clone());
        // Handed over between the look and the registration: look again.
        if handoff.producer.lock().unwrap().is_some() {
            continue;
        }
        return Poll::Pending;
    })
    .await
}

/// The consumer: `rounds` × (rent → hand the producer over → await, which suspends).
async fn rent_await_rounds(
    pool: &ValueTaskSourcePool<u64>,
    handoff: &Handoff,
    expected: &mut u64,
    rounds: u64,
) -> Result<(), TaskError> {
    for _ in 0..rounds {
        let producer = pool.rent();
        let value_task = producer.value_task();
        *handoff.producer.lock().unwrap() = Some(producer);
        let waker = handoff.waker.lock().unwrap().take();
        if let Some(waker) = waker {
            waker.wake();
        }
        let value = value_task.await?;
        assert_eq!(
            value, *expected,
            "each await gets its own operation's value"
        );
        *expected += 1;
    }
    Ok(())
}

#[test]
fn the_pooled_value_task_path_allocates_nothing_in_steady_state() {
    let _serial = serial();
    const WARM_UP: u64 = 100;
    const ROUNDS: u64 = 1_000;

    let ui = SingleThreadContext::new("alloc-pooled");
    let pool = ValueTaskSourcePool::<u64>::new(4);
    let handoff = Arc::new(Handoff {
        producer: Mutex::new(None),
        waker: Mutex::new(None),
        done: AtomicBool::new(false),
    });
    let producer_task = ui.spawn(complete_handed_operations(handoff.clone()));
    let (measured, suspensions) = ui
        .block_on({
            let pool = pool.clone();
            let handoff = handoff.clone();
            async move {
                let mut expected = 0;
                rent_await_rounds(&pool, &handoff, &mut expected, WARM_UP).await?;
                let mut best = u64::MAX;
                for _ in 0..TRIES {
                    let before = snapshot();
                    rent_await_rounds(&pool, &handoff, &mut expected, ROUNDS).await?;
                    best = best.min(since(before).allocations);
                }
                // Count that the awaits really suspend: a fresh rental is never complete.
                let producer = pool.rent();
                let mut awaiting = pin!(producer.value_task().into_future());
                let suspended =
                    poll_fn(|cx| Poll::Ready(awaiting.as_mut().poll(cx).is_pending())).await;
                producer.set_result(expected).unwrap();
                assert_eq!(awaiting.await?, expected);
                handoff.done.store(true, Ordering::SeqCst);
                let waker = handoff.waker.lock().unwrap().take();
                if let Some(waker) = waker {
                    waker.wake();
                }
                Ok::<_, TaskError>((best, suspended))
            }
        })
        .unwrap();
    ui.run_until_idle().unwrap();
    assert!(suspensions, "the measured awaits must suspend");
    assert_eq!(
        measured, 0,
        "{ROUNDS} pooled rent → await → complete rounds allocated {measured} times"
    );
    assert_eq!(
        producer_task.outcome().unwrap().unwrap(),
        WARM_UP + TRIES as u64 * ROUNDS
    );
    assert_eq!(pool.rented(), 0);
}

#[test]
fn the_pooled_value_task_path_with_the_producer_done_first_allocates_nothing() {
    // The other steady state: the operation completes before the consumer awaits it (a
    // warm pool, no suspension).
    let _serial = serial();
    let pool = ValueTaskSourcePool::<u64>::new(2);
    let counts = measure(|| {
        for n in 0..1_000u64 {
            let producer = pool.rent();
            let value_task = producer.value_task();
            producer.set_result(n).unwrap();
            assert!(matches!(
                poll_once(value_task.into_future()),
                Poll::Ready(Ok(v)) if v == n
            ));
        }
    });
    assert_eq!(counts.allocations, 0, "{counts:?}");
    assert_eq!(pool.rented(), 0);
}

// ---------------------------------------------------------------------------------------
// Spawn

/// The body of a spawned task with `awaits` suspensions through the scheduler, `pooled`
/// of them on pooled value tasks completed by the task itself after a yield.
async fn body(awaits: u32, pooled: Option<ValueTaskSourcePool<u64>>) -> Result<u64, TaskError> {
    let mut total = 0;
    for n in 0..u64::from(awaits) {
        match &pooled {
            Some(pool) => {
                let producer = pool.rent();
                let value_task = producer.value_task();
                let mut awaiting = pin!(value_task.into_future());
                // Suspend on the value task, complete it after a yield, resume.
                assert!(poll_fn(|cx| Poll::Ready(awaiting.as_mut().poll(cx).is_pending())).await);
                YieldNow(false).await;
                producer.set_result(n).unwrap();
                total += awaiting.await?;
            }
            None => {
                YieldNow(false).await;
                total += n;
            }
        }
    }
    Ok(total)
}

/// What spawning a task on a single-thread context and running it to completion costs.
fn spawn_and_run(ui: &SingleThreadContext, awaits: u32, pooled: bool) -> Counts {
    let pool = pooled.then(|| ValueTaskSourcePool::<u64>::new(2));
    measure(|| {
        let pool = pool.clone();
        let task = ui.spawn(body(awaits, pool));
        ui.run_until_idle().unwrap();
        assert!(task.is_completed());
        task
    })
}

/// The number of allocations a spawned task costs today, whatever its awaits.
///
/// DESIGN.md's target is **1** (one allocation holding the body, the scheduling state and
/// the completion core, as async-task does). Today a task is three: the `Arc<TaskCore>`
/// its handles share, the `Arc<RawTask>` that schedules it, and the pinned `Box` of its
/// body. Lower this number when the runtime gets there.
const ALLOCATIONS_PER_SPAWN: u64 = 3;

#[test]
fn a_spawn_costs_the_same_allocations_whatever_its_awaits() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-spawn");
    for (awaits, pooled) in [(0, false), (1, false), (10, false), (1, true), (10, true)] {
        let counts = spawn_and_run(&ui, awaits, pooled);
        println!(
            "spawn + run, {awaits} {} awaits: {} allocations, {} bytes",
            if pooled { "pooled" } else { "yield" },
            counts.allocations,
            counts.bytes
        );
        assert_eq!(
            counts.allocations, ALLOCATIONS_PER_SPAWN,
            "spawn + run with {awaits} awaits ({counts:?}); the target is 1"
        );
    }
}

#[test]
fn an_eager_start_costs_the_same_as_a_spawn() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-start");
    let counts = ui
        .enter(|| {
            measure(|| {
                let task = start(body(3, None));
                ui.run_until_idle().unwrap();
                assert!(task.is_completed());
                task
            })
        })
        .unwrap();
    println!(
        "start + run, 3 awaits: {} allocations, {} bytes",
        counts.allocations, counts.bytes
    );
    assert_eq!(counts.allocations, ALLOCATIONS_PER_SPAWN, "{counts:?}");
}

#[test]
fn joining_a_spawned_task_by_await_costs_one_more_allocation() {
    // Joining by `.await` costs one allocation on top of the two tasks: the awaited task's
    // waiter list (a `Vec`) is allocated by the first registration. Completing the task
    // dispatches its waiters without a second list, and a suspended body records the one
    // task it waits for inline.
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-join");
    let outer = ui.spawn(async { Ok::<_, TaskError>(()) });
    ui.run_until_idle().unwrap();
    drop(outer);
    let counts = measure(|| {
        let inner = ui.spawn(body(1, None));
        // A task whose body awaits `inner` (a `Task` is itself the future awaiting it).
        let outer = ui.spawn(inner);
        ui.run_until_idle().unwrap();
        assert_eq!(outer.outcome().unwrap().unwrap(), 0);
        outer
    });
    println!(
        "spawn + spawn an awaiter + run both: {} allocations, {} bytes",
        counts.allocations, counts.bytes
    );
    assert_eq!(
        counts.allocations,
        2 * ALLOCATIONS_PER_SPAWN + 1,
        "{counts:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The seed's async patterns, counted in allocations
//
// tests/tests/scenarios/patterns.rs tells the same stories in tasks, suspensions and
// continuations; here each is one exact allocation count. Every measurement runs on a
// `SingleThreadContext` pumped on the test thread (no pool thread allocates meanwhile).
// Completion sources are made before the count and dropped after it (`measure_after`, and
// returning them from the measured closure): dropping a `TaskCompletionSource` formats its
// abandonment reason and builds a `TaskError` even when it was completed — 4 allocations
// per source that belong to none of the patterns.

/// What `f(setup())` allocates, the smallest count of [`TRIES`] runs after one warm-up run;
/// `setup` runs outside the count, and what `f` returns is dropped outside it.
fn measure_after<S, R>(mut setup: impl FnMut() -> S, mut f: impl FnMut(S) -> R) -> Counts {
    drop(f(setup()));
    (0..TRIES)
        .map(|_| {
            let input = setup();
            let before = snapshot();
            let result = f(input);
            let counts = since(before);
            drop(result);
            counts
        })
        .min_by_key(|counts| counts.allocations)
        .expect("TRIES > 0")
}

/// `n` fresh completion sources, completed (with 0, 1, ...) if `completed`.
fn sources(n: u32, completed: bool) -> Vec<TaskCompletionSource<u32>> {
    (0..n)
        .map(|value| {
            let source = TaskCompletionSource::new();
            if completed {
                source.set_result(value).unwrap();
            }
            source
        })
        .collect()
}

/// The inner operation of patterns 1 and 3: a task spawned lazily onto the current context.
fn lookup(item: u32) -> Task<u32> {
    spawn(async move { Ok(item * 3) })
}

/// **Pattern 1: returning a task directly, or wrapping it in `async`/`await`.**
///
/// .NET (seed): `return LoadAsync(id);` passes the inner task through, while
/// `return await LoadAsync(id);` in an `async` method adds a state machine and a task of
/// its own — one task's allocations more (and a continuation on the inner task).
///
/// Measured (spawn + run to completion, on the test thread's context): returning the inner
/// task directly costs **3** allocations (one spawn); wrapping it in
/// `start(async move { lookup(7).await })` costs **7**: the wrapper's task is another **3**
/// ([`ALLOCATIONS_PER_SPAWN`]) and its await on the pending inner task **1** more (the
/// inner task's waiter list), so the wrapper costs **4**.
#[test]
fn pattern_returning_a_task_directly_or_wrapped_in_an_async_block() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-wrap");
    let (direct, wrapped) = ui
        .enter(|| {
            let direct = measure(|| {
                let task = lookup(7);
                ui.run_until_idle().unwrap();
                assert_eq!(task.outcome().unwrap().unwrap(), 21);
                task
            });
            let wrapped = measure(|| {
                let task = start(async move { lookup(7).await });
                ui.run_until_idle().unwrap();
                assert_eq!(task.outcome().unwrap().unwrap(), 21);
                task
            });
            (direct, wrapped)
        })
        .unwrap();
    println!("direct: {direct:?}, wrapped: {wrapped:?}");
    assert_eq!(direct.allocations, ALLOCATIONS_PER_SPAWN, "{direct:?}");
    assert_eq!(wrapped.allocations, 7, "{wrapped:?}");
    assert_eq!(
        wrapped.allocations - direct.allocations,
        ALLOCATIONS_PER_SPAWN + 1,
        "the wrapper: a task and a waiter list"
    );
}

/// How many tasks patterns 2 and 4 await.
const AWAITED: u32 = 4;

/// Spawns a task that awaits the sources' tasks one after another in a loop, completes the
/// sources if they were pending (one by one, pumping after each), and runs it to the end.
fn await_serially(ui: &SingleThreadContext, sources: &[TaskCompletionSource<u32>]) -> Task<u32> {
    let tasks: Vec<Task<u32>> = sources.iter().map(TaskCompletionSource::task).collect();
    let task = ui.spawn(async move {
        let mut total = 0;
        for task in tasks {
            total += task.await?;
        }
        Ok(total)
    });
    finish(ui, sources, &task);
    task
}

/// The same with one `when_all` of all the tasks.
fn await_with_when_all(
    ui: &SingleThreadContext,
    sources: &[TaskCompletionSource<u32>],
) -> Task<u32> {
    let tasks: Vec<Task<u32>> = sources.iter().map(TaskCompletionSource::task).collect();
    let task = ui.spawn(async move { Ok(when_all(tasks).await?.into_iter().sum()) });
    finish(ui, sources, &task);
    task
}

/// Pumps `ui`, completes the still-pending sources one by one (pumping after each), and
/// checks `task` summed 0 + 1 + ... .
fn finish(ui: &SingleThreadContext, sources: &[TaskCompletionSource<u32>], task: &Task<u32>) {
    ui.run_until_idle().unwrap();
    for (value, source) in (0..).zip(sources) {
        let _ = source.try_set_result(value);
        ui.run_until_idle().unwrap();
    }
    assert_eq!(task.outcome().unwrap().unwrap(), (0..AWAITED).sum::<u32>());
}

/// **Pattern 2: serial awaits in a loop, or one `when_all`.**
///
/// .NET (seed): awaiting one task after another costs time (the sum instead of the
/// maximum), but an await of a completed task allocates nothing and one of a pending task
/// only its continuation; `Task.WhenAll` adds a combinator task, a copy of the input array,
/// a continuation per input and the results array.
///
/// Measured, for [`AWAITED`] = 4 tasks of completion sources made (and dropped) outside the
/// count, awaited by a spawned task; that task's own [`ALLOCATIONS_PER_SPAWN`] = 3 is
/// subtracted, so the numbers are the awaiting part alone (both include the `Vec` of the 4
/// input tasks, 1):
///
/// | the 4 tasks are           | serial awaits | one `when_all` |
/// |---------------------------|---------------|----------------|
/// | completed before the await | **1**        | **11**         |
/// | completed after (pending) | **5**         | **16**         |
///
/// Serial: the `Vec`, plus a waiter list on each pending input (4). `when_all` of completed
/// inputs: the `Vec` (which `when_all`'s `collect` reuses), its cores `Vec`, result task
/// and state (3), a callback box per input (4), the outcomes `Vec` and the result `Vec`
/// (2), and the clone of the result the await returns (1); pending inputs add a waiter
/// list each (4) and one on the `when_all` task, on which the awaiting task suspends (1).
/// The combinator itself: 9 over completed inputs, 13 over pending ones.
#[test]
fn pattern_serial_awaits_in_a_loop_or_one_when_all() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-serial");
    let mut measured = Vec::new();
    for completed in [true, false] {
        let serial = measure_after(
            || sources(AWAITED, completed),
            |sources| (await_serially(&ui, &sources), sources),
        );
        let all = measure_after(
            || sources(AWAITED, completed),
            |sources| (await_with_when_all(&ui, &sources), sources),
        );
        println!("completed before: {completed}; serial: {serial:?}, when_all: {all:?}");
        measured.push((
            completed,
            serial.allocations - ALLOCATIONS_PER_SPAWN,
            all.allocations - ALLOCATIONS_PER_SPAWN,
        ));
    }
    assert_eq!(measured, [(true, 1, 11), (false, 5, 16)]);
}

/// **Pattern 3: an async closure per item, or the function itself.**
///
/// .NET (seed): `items.Select(async x => await PriceAsync(x))` builds a state machine and a
/// task per item around the task `PriceAsync` already returns; `items.Select(PriceAsync)`
/// does not.
///
/// Measured, 3 items, each priced by a spawned task, collected into a `Vec` and run to
/// completion: passing the function costs **10** (3 × 3 for the tasks, 1 for the `Vec`);
/// the async closure `|item| start(async move { lookup(item).await })` costs **22**: a
/// wrapper per item, 3 × (3 + 1 waiter list) = **12** more.
#[test]
fn pattern_an_async_closure_per_item_or_the_function_itself() {
    let _serial = serial();
    const ITEMS: [u32; 3] = [1, 2, 3];
    let ui = SingleThreadContext::new("alloc-closure");
    let run = |tasks: Vec<Task<u32>>| {
        ui.run_until_idle().unwrap();
        let prices = tasks.iter().map(|task| task.outcome().unwrap().unwrap());
        assert!(prices.eq([3, 6, 9]));
        tasks
    };
    let (by_function, by_closure) = ui
        .enter(|| {
            let by_function = measure(|| run(ITEMS.into_iter().map(lookup).collect()));
            let by_closure = measure(|| {
                run(ITEMS
                    .into_iter()
                    .map(|item| start(async move { lookup(item).await }))
                    .collect())
            });
            (by_function, by_closure)
        })
        .unwrap();
    println!("by function: {by_function:?}, by closure: {by_closure:?}");
    assert_eq!(by_function.allocations, 10, "{by_function:?}");
    assert_eq!(by_closure.allocations, 22, "{by_closure:?}");
}

/// Polls `each` (with a no-op waker) until it has nothing ready; pushes the values it gave.
fn drain_ready(each: &mut WhenEach<u32>, values: &mut Vec<u32>) {
    let mut cx = PollContext::from_waker(Waker::noop());
    while let Poll::Ready(Some(item)) = std::pin::Pin::new(&mut *each).poll_next(&mut cx) {
        values.push(item.unwrap().outcome().unwrap().unwrap());
    }
}

/// **Pattern 4: each result as it completes (`when_each`), or the whole batch (`when_all`).**
///
/// .NET (seed): `Task.WhenEach` hands out each task as it completes (an async iterator
/// and a channel of the completed tasks); `Task.WhenAll` one combinator task with an array
/// of the results.
///
/// Measured, 4 pending completion sources (made outside the count) completed in the order
/// 2, 0, 3, 1, the consumer polled with a no-op waker after every completion (as a
/// consumer would be woken; the consumer's `Vec` of values is made outside the count too):
/// `when_each` costs **14** — a callback box and a waiter list per input (8), and its
/// shared state and bookkeeping lists (6: inputs, pending inputs, continuation keys, the
/// ready queue, ...) — and `when_all` **16**: its input `Vec` collected from the iterator
/// (1), pattern 2's 13 for the combinator over 4 pending inputs (cores `Vec`, result task,
/// state, 4 callback boxes, 4 waiter lists, outcomes and result `Vec`s), the waiter list
/// the consumer's poll registers on it (1) and the clone of the result it returns (1).
/// Handling each result as it completes costs no more than the batch.
#[test]
fn pattern_each_as_it_completes_or_the_whole_batch() {
    let _serial = serial();
    const ORDER: [usize; 4] = [2, 0, 3, 1];
    let each = measure_after(
        || (sources(AWAITED, false), Vec::with_capacity(ORDER.len())),
        |(sources, mut values)| {
            let mut each = when_each(
                sources.iter().map(TaskCompletionSource::task),
                &CancellationToken::none(),
            );
            drain_ready(&mut each, &mut values);
            for index in ORDER {
                sources[index].set_result(index as u32).unwrap();
                drain_ready(&mut each, &mut values);
            }
            assert_eq!(values, [2, 0, 3, 1], "in completion order");
            (each, values, sources)
        },
    );
    let batch = measure_after(
        || sources(AWAITED, false),
        |sources| {
            let mut all = pin!(when_all(sources.iter().map(TaskCompletionSource::task)));
            let mut values = None;
            for index in ORDER {
                assert!(values.is_none());
                sources[index].set_result(index as u32).unwrap();
                if let Poll::Ready(outcome) = all
                    .as_mut()
                    .poll(&mut PollContext::from_waker(Waker::noop()))
                {
                    values = Some(outcome.unwrap());
                }
            }
            assert_eq!(values.as_deref(), Some(&[0, 1, 2, 3][..]), "in input order");
            (values, sources)
        },
    );
    println!("when_each: {each:?}, when_all: {batch:?}");
    assert_eq!((each.allocations, batch.allocations), (14, 16));
}

/// Synchronous work that allocates nothing: sums the digits of `text`.
fn parse(text: &str) -> u32 {
    text.bytes().map(|b| u32::from(b - b'0')).sum()
}

/// **Pattern 5: synchronous work before the first `await`, or after it.**
///
/// .NET (seed): work before the first `await` runs inside the call, on the caller's thread
/// (it holds the caller up); moving it does not change what the method allocates — the
/// state machine, its task and the continuation are the same.
///
/// Measured: `start` of a body that parses (allocation-free) and awaits a pending read
/// (a completion source made outside the count, completed inside it), run to the end:
/// **4** with the parsing before the await and **4** after it — one task (3) and the
/// read's waiter list (1). No difference.
#[test]
fn pattern_work_before_the_first_await_costs_no_allocation() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-hoist");
    let run = |read: TaskCompletionSource<u32>, parse_first: bool| {
        let pending = read.task();
        let task = start(async move {
            let mut parsed = 0;
            if parse_first {
                parsed = parse("1234");
            }
            let value = pending.await?;
            if !parse_first {
                parsed = parse("1234");
            }
            Ok(parsed + value)
        });
        assert!(!task.is_completed(), "suspended on the read");
        read.set_result(5).unwrap();
        ui.run_until_idle().unwrap();
        assert_eq!(task.outcome().unwrap().unwrap(), 15);
        (task, read)
    };
    let (before, after) = ui
        .enter(|| {
            let before = measure_after(TaskCompletionSource::new, |read| run(read, true));
            let after = measure_after(TaskCompletionSource::new, |read| run(read, false));
            (before, after)
        })
        .unwrap();
    println!("parse before the await: {before:?}, after: {after:?}");
    assert_eq!(before.allocations, ALLOCATIONS_PER_SPAWN + 1, "{before:?}");
    assert_eq!(after.allocations, before.allocations, "{after:?}");
}

/// **Pattern 6: `start_void` (C#'s `async void`), or `start` + `detach()`.**
///
/// .NET (seed): an `async void` method allocates no task (its builder reports to the
/// `SynchronizationContext` instead), so fire-and-forget via `async void` is the cheaper
/// one, and the accountable `Task` + discard costs a task.
///
/// Measured, for a body that awaits a pending gate (made outside the count, completed
/// inside it) and succeeds: `start` + `detach()` costs **4** (its task, 3, and the gate's
/// waiter list, 1); `start_void` costs **6** — the same task, plus the boxed callback that
/// routes a fault to the context's error handler and the task's own waiter list for it:
/// the fire-and-forget tracking costs **2** more here, not less as in .NET.
#[test]
fn pattern_start_void_or_start_and_detach() {
    let _serial = serial();
    let ui = SingleThreadContext::new("alloc-void");
    let body = |gate: Task<()>| async move {
        gate.await?;
        Ok(())
    };
    let (detached, void) = ui
        .enter(|| {
            let detached = measure_after(TaskCompletionSource::new, |gate| {
                start(body(gate.task())).detach();
                gate.set_result(()).unwrap();
                ui.run_until_idle().unwrap();
                gate
            });
            let void = measure_after(TaskCompletionSource::new, |gate| {
                start_void(body(gate.task()));
                gate.set_result(()).unwrap();
                ui.run_until_idle().unwrap();
                gate
            });
            (detached, void)
        })
        .unwrap();
    println!("start + detach: {detached:?}, start_void: {void:?}");
    assert_eq!(
        detached.allocations,
        ALLOCATIONS_PER_SPAWN + 1,
        "{detached:?}"
    );
    assert_eq!(void.allocations, detached.allocations + 2, "{void:?}");
    assert_eq!(void.allocations, 6, "{void:?}");
}
