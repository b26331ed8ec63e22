//! The seed article's benchmark table, for taskcheck, with the closest equivalents of
//! tokio, async-task and async-executor measured beside it in the same run.
//!
//! `cargo bench -p taskcheck --bench seed_table` prints the table;
//! `cargo bench -p taskcheck --bench seed_table -- --write` also rewrites
//! `runtime/BENCHMARKS.md`. A positional argument keeps only the rows whose key or label
//! contains it (a filtered run never writes). Without `--bench` (as `cargo test
//! --all-targets` runs it) every routine runs a few iterations once, as a smoke test.
//!
//! # Method
//!
//! Every row is a routine that performs `iters` operations and returns the time they took
//! (setup such as building a runtime happens once, outside). Each routine is calibrated to
//! a sample of about [`SAMPLE`]; then [`ROUNDS`] rounds each take one sample of every row,
//! round-robin, so drift on the machine hits all rows alike and ratios stay fair. ns/op is
//! the median sample, timed by the bench thread's CPU time for rows whose work all runs on
//! it (so other processes on a shared 2-core machine do not inflate them) and by the wall
//! clock for the pool rows; both are printed.
//!
//! Allocations are counted by a global allocator that counts every thread (a pool's
//! workers included), switched on only for a separate counting pass so it never touches
//! the timings. The pass runs each routine for `n` and for `2n` operations and reports
//! `(count(2n) − count(n)) / n`, which cancels any fixed per-run cost (a `block_on`, a
//! queue's first growth) and leaves the steady-state cost of one operation.
//!
//! Model builds (`--cfg loom` / `--cfg shuttle`) compile this file to an empty `main`: the
//! comparison crates are not even dependencies there (see `runtime/Cargo.toml`).

#[cfg(any(loom, shuttle))]
fn main() {}

#[cfg(not(any(loom, shuttle)))]
fn main() {
    imp::main();
}

#[cfg(not(any(loom, shuttle)))]
mod imp {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::fmt::Write as _;
    use std::future::{Future, IntoFuture};
    use std::hint::black_box;
    use std::pin::{pin, Pin};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context as PollContext, Poll, Waker};
    use std::time::{Duration, Instant};

    use taskcheck::{
        ConfigureAwaitOptions, SingleThreadContext, Task, TaskError, ThreadPool, ValueTask,
        ValueTaskProducer, ValueTaskSourcePool,
    };

    /// The time one sample should take.
    const SAMPLE: Duration = Duration::from_millis(20);
    /// Samples per row.
    const ROUNDS: usize = 41;
    /// The command that regenerates BENCHMARKS.md (printed into it).
    const COMMAND: &str = "cargo bench -p taskcheck --bench seed_table -- --write";

    // ---------------------------------------------------------------------------------
    // The all-threads counting allocator.

    struct Counting;

    static COUNTING: AtomicBool = AtomicBool::new(false);
    static ALLOCS: AtomicU64 = AtomicU64::new(0);
    static BYTES: AtomicU64 = AtomicU64::new(0);

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    impl Counting {
        fn count(size: usize) {
            if COUNTING.load(Ordering::Relaxed) {
                ALLOCS.fetch_add(1, Ordering::Relaxed);
                BYTES.fetch_add(size as u64, Ordering::Relaxed);
            }
        }
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
    // `System`'s guarantees are ours; counting touches only atomics and never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            Self::count(layout.size());
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            Self::count(layout.size());
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // A growth is an allocation in .NET's sense of "allocated bytes": count it.
            Self::count(new_size);
            // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Allocations and bytes allocated, on every thread, while `f` runs.
    fn count_allocations(f: impl FnOnce()) -> (u64, u64) {
        ALLOCS.store(0, Ordering::SeqCst);
        BYTES.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        f();
        COUNTING.store(false, Ordering::SeqCst);
        (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
    }

    // ---------------------------------------------------------------------------------
    // Clocks.

    /// What one timed run took: wall-clock time, and the bench thread's CPU time (user +
    /// system), which does not grow while other processes hold the CPU.
    #[derive(Clone, Copy)]
    struct Sample {
        wall: Duration,
        cpu: Duration,
    }

    struct Stopwatch {
        wall: Instant,
        cpu: Duration,
    }

    impl Stopwatch {
        fn start() -> Self {
            let cpu = thread_cpu_time();
            Stopwatch {
                wall: Instant::now(),
                cpu,
            }
        }

        fn stop(self) -> Sample {
            let wall = self.wall.elapsed();
            Sample {
                wall,
                cpu: thread_cpu_time().saturating_sub(self.cpu),
            }
        }
    }

    /// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn thread_cpu_time() -> Duration {
        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut time = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` is libc's (linked by std); on 64-bit Linux `Timespec`
        // has `struct timespec`'s layout, and `time` is a valid, writable one.
        let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
        assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
    }

    /// Elsewhere: no thread CPU clock; rows fall back to wall-clock time.
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    fn thread_cpu_time() -> Duration {
        Duration::ZERO
    }

    fn have_cpu_clock() -> bool {
        cfg!(all(target_os = "linux", target_pointer_width = "64"))
    }

    // ---------------------------------------------------------------------------------
    // Rows.

    /// Runs `iters` operations and returns how long they took.
    type Routine = Box<dyn FnMut(u64) -> Sample>;

    struct Row {
        key: &'static str,
        group: &'static str,
        label: String,
        routine: Routine,
        /// Whether the row's work all runs on the bench thread, so its CPU time is its cost.
        /// Rows that hand work to other threads are timed by the wall clock.
        single_thread: bool,
        iters: u64,
        /// ns/op of each sample, by the wall clock and by the bench thread's CPU time.
        wall: Vec<f64>,
        cpu: Vec<f64>,
        allocs: f64,
        bytes: f64,
    }

    impl Row {
        fn uses_cpu_clock(&self) -> bool {
            self.single_thread && have_cpu_clock()
        }

        /// The samples ns/op is taken from.
        fn samples(&self) -> &[f64] {
            if self.uses_cpu_clock() {
                &self.cpu
            } else {
                &self.wall
            }
        }

        fn median(&self) -> f64 {
            percentile(self.samples(), 0.5)
        }

        fn wall_median(&self) -> f64 {
            percentile(&self.wall, 0.5)
        }

        /// Half the p10–p90 range, relative to the median.
        fn spread(&self) -> f64 {
            let lo = percentile(self.samples(), 0.1);
            let hi = percentile(self.samples(), 0.9);
            (hi - lo) / 2.0 / self.median()
        }
    }

    fn percentile(samples: &[f64], p: f64) -> f64 {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[index]
    }

    struct Table {
        rows: Vec<Row>,
    }

    impl Table {
        fn add(
            &mut self,
            key: &'static str,
            group: &'static str,
            label: impl Into<String>,
            routine: impl FnMut(u64) -> Sample + 'static,
        ) {
            self.rows.push(Row {
                key,
                group,
                label: label.into(),
                routine: Box::new(routine),
                single_thread: group != POOL,
                iters: 1,
                wall: Vec::new(),
                cpu: Vec::new(),
                allocs: f64::NAN,
                bytes: f64::NAN,
            });
        }

        fn get(&self, key: &str) -> Option<&Row> {
            self.rows.iter().find(|row| row.key == key)
        }
    }

    /// Times `iters` runs of `op`, for the simplest rows.
    fn timed(iters: u64, mut op: impl FnMut()) -> Sample {
        let watch = Stopwatch::start();
        for _ in 0..iters {
            op();
        }
        watch.stop()
    }

    /// Polls `future` once with a no-op waker; it must be ready.
    fn ready<F: Future>(future: F) -> F::Output {
        let future = pin!(future);
        match future.poll(&mut PollContext::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the benchmarked future was expected to be complete"),
        }
    }

    /// A future that wakes itself `left` times before finishing: each step is one
    /// wake + poll cycle of whatever executor runs it.
    struct SelfWake {
        left: u64,
    }

    impl Future for SelfWake {
        type Output = u64;

        fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<u64> {
            if self.left == 0 {
                return Poll::Ready(1);
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// The body of an async method that awaits `Task.Yield()` `yields` times: taskcheck's
    /// analogue is awaiting an already-completed task with `FORCE_YIELDING`, which suspends
    /// and resumes through the captured context's queue.
    async fn tc_yielder(yields: u32) -> Result<u64, TaskError> {
        for _ in 0..yields {
            Task::completed()
                .configure_await_with(
                    ConfigureAwaitOptions::FORCE_YIELDING
                        | ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT,
                )
                .await?;
        }
        Ok(1)
    }

    async fn tokio_yielder(yields: u32) -> u64 {
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        1
    }

    // async-task has no executor: its examples drive Runnables from a queue. This one is a
    // thread-local VecDeque, so the schedule function captures nothing.
    thread_local! {
        static RUNNABLES: RefCell<VecDeque<async_task::Runnable>> =
            RefCell::new(VecDeque::with_capacity(64));
    }

    fn at_schedule(runnable: async_task::Runnable) {
        RUNNABLES.with(|queue| queue.borrow_mut().push_back(runnable));
    }

    fn at_run_all() {
        while let Some(runnable) = RUNNABLES.with(|queue| queue.borrow_mut().pop_front()) {
            runnable.run();
        }
    }

    // Group titles.
    const SYNC: &str = "Completing synchronously (Task.FromResult, a sync async method)";
    const YIELD: &str = "A spawned task awaiting Task.Yield 0–3 times, awaited by a task on a single-thread context";
    const VALUE: &str = "ValueTask";
    const CORE: &str = "Scheduler core (single thread)";
    const REFERENCE: &str =
        "Reference costs on this machine (building blocks, for reading the rows above)";
    const POOL: &str = "Across threads (a one-worker pool, waited on from the bench thread)";

    fn build_rows(stc: &Rc<SingleThreadContext>) -> Table {
        let mut table = Table { rows: Vec::new() };
        let ctx = stc.context();

        // --- Synchronous paths -------------------------------------------------------
        table.add(
            "from_result_cached",
            SYNC,
            "taskcheck `Task::from_result(1)` (cached)",
            |n| timed(n, || drop(black_box(Task::from_result(black_box(1i32))))),
        );
        table.add(
            "from_result_uncached",
            SYNC,
            "taskcheck `Task::from_result(1000)` (not cached)",
            |n| timed(n, || drop(black_box(Task::from_result(black_box(1000i32))))),
        );
        table.add(
            "start_sync",
            SYNC,
            "taskcheck `start(async { Ok(1) })` + read result (async method completing synchronously)",
            |n| {
                timed(n, || {
                    let task = taskcheck::start(async { Ok::<_, TaskError>(black_box(1i32)) });
                    black_box(task.outcome());
                })
            },
        );
        table.add(
            "vt_from_result",
            SYNC,
            "taskcheck `ValueTask::from_result(1)` + await",
            |n| {
                timed(n, || {
                    let value_task = ValueTask::<i32>::from_result(black_box(1));
                    black_box(ready(value_task.into_future()).ok());
                })
            },
        );

        // --- Yield rows --------------------------------------------------------------
        let labels = [
            "spawn + await (no yield)",
            "spawn, yield ×1, await",
            "spawn, yield ×2, await",
            "spawn, yield ×3, await",
        ];
        let tc_keys = [
            "tc_spawn_await",
            "tc_spawn_y1",
            "tc_spawn_y2",
            "tc_spawn_y3",
        ];
        let tokio_keys = [
            "tokio_spawn_await",
            "tokio_spawn_y1",
            "tokio_spawn_y2",
            "tokio_spawn_y3",
        ];
        for (yields, label) in labels.iter().enumerate() {
            let yields = yields as u32;
            let stc = stc.clone();
            table.add(
                tc_keys[yields as usize],
                YIELD,
                format!("taskcheck: {label}"),
                move |n| {
                    let watch = Stopwatch::start();
                    let sum = stc.block_on(async move {
                        let mut sum = 0;
                        for _ in 0..n {
                            sum += taskcheck::spawn(tc_yielder(yields)).await?;
                        }
                        Ok::<_, TaskError>(sum)
                    });
                    let elapsed = watch.stop();
                    assert_eq!(sum.unwrap(), n);
                    elapsed
                },
            );
        }
        for yields in 1..=3u32 {
            let stc = stc.clone();
            table.add(
                ["", "tc_start_y1", "tc_start_y2", "tc_start_y3"][yields as usize],
                YIELD,
                format!(
                    "taskcheck `start` (eager, a C# async method call), yield ×{yields}, await"
                ),
                move |n| {
                    let watch = Stopwatch::start();
                    let sum = stc.block_on(async move {
                        let mut sum = 0;
                        for _ in 0..n {
                            sum += taskcheck::start(tc_yielder(yields)).await?;
                        }
                        Ok::<_, TaskError>(sum)
                    });
                    let elapsed = watch.stop();
                    assert_eq!(sum.unwrap(), n);
                    elapsed
                },
            );
        }
        for yields in 1..=3u32 {
            let stc = stc.clone();
            table.add(
                ["", "tc_vt_start_y1", "tc_vt_start_y2", "tc_vt_start_y3"][yields as usize],
                YIELD,
                format!("taskcheck `ValueTask::from_task(start(..))`, yield ×{yields}, await"),
                move |n| {
                    let watch = Stopwatch::start();
                    let sum = stc.block_on(async move {
                        let mut sum = 0;
                        for _ in 0..n {
                            let value_task =
                                ValueTask::<u64>::from_task(taskcheck::start(tc_yielder(yields)));
                            sum += value_task.await?;
                        }
                        Ok::<_, TaskError>(sum)
                    });
                    let elapsed = watch.stop();
                    assert_eq!(sum.unwrap(), n);
                    elapsed
                },
            );
        }
        let tokio_rt = Rc::new(
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a tokio current_thread runtime"),
        );
        for (yields, key) in tokio_keys.into_iter().enumerate() {
            let rt = tokio_rt.clone();
            let yields = yields as u32;
            let what = if yields == 0 {
                "`tokio::spawn` + await JoinHandle".to_owned()
            } else {
                format!("`tokio::spawn`, `yield_now` ×{yields}, await JoinHandle")
            };
            table.add(
                key,
                YIELD,
                format!("tokio current_thread: {what}"),
                move |n| {
                    let watch = Stopwatch::start();
                    let sum = rt.block_on(async move {
                        let mut sum = 0;
                        for _ in 0..n {
                            sum += tokio::spawn(tokio_yielder(yields)).await.unwrap();
                        }
                        sum
                    });
                    let elapsed = watch.stop();
                    assert_eq!(sum, n);
                    elapsed
                },
            );
        }
        table.add(
            "ae_local_spawn_await",
            YIELD,
            "async-executor `LocalExecutor`: spawn + await",
            |n| {
                let executor = async_executor::LocalExecutor::new();
                let watch = Stopwatch::start();
                let sum = futures_lite::future::block_on(executor.run(async {
                    let mut sum = 0;
                    for _ in 0..n {
                        sum += executor.spawn(async { black_box(1u64) }).await;
                    }
                    sum
                }));
                let elapsed = watch.stop();
                assert_eq!(sum, n);
                elapsed
            },
        );
        table.add(
            "ae_spawn_await",
            YIELD,
            "async-executor `Executor` (run on the bench thread): spawn + await",
            |n| {
                let executor = async_executor::Executor::new();
                let watch = Stopwatch::start();
                let sum = futures_lite::future::block_on(executor.run(async {
                    let mut sum = 0;
                    for _ in 0..n {
                        sum += executor.spawn(async { black_box(1u64) }).await;
                    }
                    sum
                }));
                let elapsed = watch.stop();
                assert_eq!(sum, n);
                elapsed
            },
        );

        // --- ValueTask ---------------------------------------------------------------
        let pool = ValueTaskSourcePool::<u64>::new(4);
        {
            let pool = pool.clone();
            table.add(
                "vt_pooled_sync",
                VALUE,
                "taskcheck pooled ValueTask: rent, complete, await (already complete)",
                move |n| {
                    timed(n, || {
                        let producer = pool.rent();
                        let value_task = producer.value_task();
                        producer.set_result(black_box(1)).unwrap();
                        black_box(ready(value_task.into_future()).ok());
                    })
                },
            );
        }
        {
            let stc = stc.clone();
            let ctx = ctx.clone();
            table.add(
                "vt_pooled_async",
                VALUE,
                "taskcheck pooled ValueTask: rent, await (suspends), completed by another task, resume",
                move |n| {
                    let slot: Arc<Mutex<Option<ValueTaskProducer<u64>>>> = Arc::default();
                    let watch = Stopwatch::start();
                    let consumer = ctx.spawn({
                        let (slot, pool) = (slot.clone(), pool.clone());
                        async move {
                            let mut sum = 0;
                            for _ in 0..n {
                                let producer = pool.rent();
                                let value_task = producer.value_task();
                                *slot.lock().unwrap() = Some(producer);
                                sum += value_task.await?;
                            }
                            Ok::<_, TaskError>(sum)
                        }
                    });
                    let completer = ctx.spawn(async move {
                        let mut done = 0;
                        while done < n {
                            let producer = slot.lock().unwrap().take();
                            match producer {
                                // Resumes the consumer inline: it rents and parks the next.
                                Some(producer) => {
                                    producer.set_result(1)?;
                                    done += 1;
                                }
                                None => tc_yielder(1).await.map(drop)?,
                            }
                        }
                        Ok::<_, TaskError>(())
                    });
                    stc.run_until_idle().unwrap();
                    let elapsed = watch.stop();
                    ready(completer).unwrap();
                    assert_eq!(ready(consumer).unwrap(), n);
                    elapsed
                },
            );
        }

        // --- Scheduler core ----------------------------------------------------------
        {
            let stc = stc.clone();
            let ctx = ctx.clone();
            table.add(
                "tc_spawn_run_join",
                CORE,
                "taskcheck: `spawn` on the context, `run_until_idle`, poll the Task",
                move |n| {
                    let watch = Stopwatch::start();
                    for _ in 0..n {
                        let task = ctx.spawn(async { Ok::<_, TaskError>(black_box(1u64)) });
                        stc.run_until_idle().unwrap();
                        black_box(ready(task).unwrap());
                    }
                    watch.stop()
                },
            );
        }
        table.add(
            "at_spawn_run_join",
            CORE,
            "async-task: spawn, schedule, run the VecDeque, poll the Task",
            |n| {
                let watch = Stopwatch::start();
                for _ in 0..n {
                    let (runnable, task) =
                        async_task::spawn(async { black_box(1u64) }, at_schedule);
                    runnable.schedule();
                    at_run_all();
                    black_box(ready(task));
                }
                watch.stop()
            },
        );
        {
            let stc = stc.clone();
            table.add(
                "tc_wake_poll",
                CORE,
                "taskcheck: one wake + poll cycle (a task waking itself)",
                move |n| {
                    let watch = Stopwatch::start();
                    let task =
                        ctx.spawn(async move { Ok::<_, TaskError>(SelfWake { left: n }.await) });
                    stc.run_until_idle().unwrap();
                    let elapsed = watch.stop();
                    assert_eq!(ready(task).unwrap(), 1);
                    elapsed
                },
            );
        }
        table.add(
            "at_wake_poll",
            CORE,
            "async-task: one wake + poll cycle",
            |n| {
                let watch = Stopwatch::start();
                let (runnable, task) = async_task::spawn(SelfWake { left: n }, at_schedule);
                runnable.schedule();
                at_run_all();
                let elapsed = watch.stop();
                assert_eq!(ready(task), 1);
                elapsed
            },
        );
        {
            let rt = tokio_rt.clone();
            table.add(
                "tokio_wake_poll",
                CORE,
                "tokio current_thread: one wake + poll cycle",
                move |n| {
                    let watch = Stopwatch::start();
                    let done = rt
                        .block_on(async move { tokio::spawn(SelfWake { left: n }).await.unwrap() });
                    let elapsed = watch.stop();
                    assert_eq!(done, 1);
                    elapsed
                },
            );
        }
        table.add(
            "ae_wake_poll",
            CORE,
            "async-executor `LocalExecutor`: one wake + poll cycle",
            |n| {
                let executor = async_executor::LocalExecutor::new();
                let watch = Stopwatch::start();
                let task = executor.spawn(SelfWake { left: n });
                let done = futures_lite::future::block_on(executor.run(task));
                let elapsed = watch.stop();
                assert_eq!(done, 1);
                elapsed
            },
        );

        // --- Across threads ----------------------------------------------------------
        let tc_pool = Rc::new(ThreadPool::with_name("bench", 1));
        let tokio_mt = Rc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .expect("a tokio multi_thread runtime"),
        );
        for yields in 0..=1u32 {
            let pool = tc_pool.clone();
            table.add(
                ["tc_pool_wait", "tc_pool_y1_wait"][yields as usize],
                POOL,
                format!(
                    "taskcheck `ThreadPool(1)`: spawn{}, `wait()`",
                    if yields == 0 { "" } else { ", yield ×1" }
                ),
                move |n| {
                    timed(n, || {
                        black_box(pool.spawn(tc_yielder(yields)).wait().unwrap());
                    })
                },
            );
            let rt = tokio_mt.clone();
            table.add(
                ["tokio_mt_wait", "tokio_mt_y1_wait"][yields as usize],
                POOL,
                format!(
                    "tokio multi_thread(1): spawn{}, `block_on(JoinHandle)`",
                    if yields == 0 { "" } else { ", `yield_now` ×1" }
                ),
                move |n| {
                    timed(n, || {
                        black_box(rt.block_on(rt.spawn(tokio_yielder(yields))).unwrap());
                    })
                },
            );
        }

        // --- Reference costs of building blocks --------------------------------------
        let condvar = std::sync::Condvar::new();
        table.add(
            "ref_notify_one",
            REFERENCE,
            "std `Condvar::notify_one` with no waiter (a futex wake system call on Linux)",
            move |n| timed(n, || black_box(&condvar).notify_one()),
        );
        let mutex = Mutex::new(0u64);
        table.add(
            "ref_mutex",
            REFERENCE,
            "std `Mutex` lock + unlock, uncontended",
            move |n| timed(n, || *black_box(&mutex).lock().unwrap() += 1),
        );
        let shared = Arc::new(0u64);
        table.add("ref_arc", REFERENCE, "`Arc` clone + drop", move |n| {
            timed(n, || drop(black_box(Arc::clone(black_box(&shared)))))
        });
        table.add(
            "ref_box",
            REFERENCE,
            "`Box::new([0u64; 8])` + drop (one allocation and free)",
            |n| timed(n, || drop(black_box(Box::new(black_box([0u64; 8]))))),
        );
        table
    }

    // ---------------------------------------------------------------------------------
    // Comparisons and targets.

    /// (taskcheck row, comparator row, comparator's name).
    const COMPARISONS: &[(&str, &str, &str)] = &[
        ("tc_spawn_await", "tokio_spawn_await", "tokio"),
        ("tc_spawn_y1", "tokio_spawn_y1", "tokio"),
        ("tc_spawn_y2", "tokio_spawn_y2", "tokio"),
        ("tc_spawn_y3", "tokio_spawn_y3", "tokio"),
        ("tc_start_y1", "tokio_spawn_y1", "tokio (spawn)"),
        ("tc_start_y2", "tokio_spawn_y2", "tokio (spawn)"),
        ("tc_start_y3", "tokio_spawn_y3", "tokio (spawn)"),
        ("ae_local_spawn_await", "tc_spawn_await", "taskcheck"),
        ("ae_spawn_await", "tc_spawn_await", "taskcheck"),
        ("tc_spawn_run_join", "at_spawn_run_join", "async-task"),
        ("tc_wake_poll", "at_wake_poll", "async-task"),
        ("tokio_wake_poll", "tc_wake_poll", "taskcheck"),
        ("ae_wake_poll", "tc_wake_poll", "taskcheck"),
        ("tc_pool_wait", "tokio_mt_wait", "tokio"),
        ("tc_pool_y1_wait", "tokio_mt_y1_wait", "tokio"),
    ];

    fn comparison(table: &Table, key: &str) -> String {
        let Some(&(_, other, name)) = COMPARISONS.iter().find(|(row, ..)| *row == key) else {
            return String::new();
        };
        match (table.get(key), table.get(other)) {
            (Some(row), Some(other)) => describe_ratio(row.median() / other.median(), name),
            _ => String::new(),
        }
    }

    fn describe_ratio(ratio: f64, name: &str) -> String {
        if ratio >= 1.0 {
            format!("{ratio:.2}× the time of {name} ({ratio:.2}× slower)")
        } else {
            format!(
                "{ratio:.2}× the time of {name} ({:.2}× faster)",
                1.0 / ratio
            )
        }
    }

    struct Target {
        name: &'static str,
        met: bool,
        figures: String,
    }

    fn targets(table: &Table) -> Vec<Target> {
        let mut targets = Vec::new();
        let ns = |key: &str| table.get(key).map(Row::median);
        let allocs = |key: &str| table.get(key).map(|row| row.allocs);

        if let (Some(tc), Some(at)) = (ns("tc_spawn_run_join"), ns("at_spawn_run_join")) {
            targets.push(Target {
                name: "spawn+run+join within 1.2× of async-task",
                met: tc <= 1.2 * at,
                figures: format!(
                    "taskcheck {tc:.1} ns vs async-task {at:.1} ns: {:.2}×",
                    tc / at
                ),
            });
        }
        if let (Some(tc), Some(at)) = (ns("tc_wake_poll"), ns("at_wake_poll")) {
            targets.push(Target {
                name: "wake+poll within 1.2× of async-task",
                met: tc <= 1.2 * at,
                figures: format!(
                    "taskcheck {tc:.1} ns vs async-task {at:.1} ns: {:.2}×",
                    tc / at
                ),
            });
        }
        if let (Some(tc), Some(tokio)) = (ns("tc_spawn_await"), ns("tokio_spawn_await")) {
            targets.push(Target {
                name: "spawn+await at least 4× faster than tokio current_thread",
                met: tokio >= 4.0 * tc,
                figures: format!(
                    "taskcheck {tc:.1} ns vs tokio {tokio:.1} ns: taskcheck is {:.2}× {}",
                    if tokio >= tc { tokio / tc } else { tc / tokio },
                    if tokio >= tc { "faster" } else { "slower" }
                ),
            });
        }
        let list = |keys: &[&str]| -> Vec<(String, f64)> {
            keys.iter()
                .filter_map(|key| allocs(key).map(|a| ((*key).to_owned(), a)))
                .collect()
        };
        let show = |items: &[(String, f64)]| -> String {
            items
                .iter()
                .map(|(key, a)| format!("`{key}` {a:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sync = list(&["from_result_cached", "start_sync", "vt_from_result"]);
        if !sync.is_empty() {
            targets.push(Target {
                name: "0 allocations on synchronous paths",
                met: sync.iter().all(|(_, a)| *a < 0.005),
                figures: format!("allocs/op: {}", show(&sync)),
            });
        }
        let spawned = list(&[
            "tc_spawn_run_join",
            "tc_spawn_await",
            "tc_spawn_y1",
            "tc_spawn_y2",
            "tc_spawn_y3",
        ]);
        if !spawned.is_empty() {
            targets.push(Target {
                name: "1 allocation per spawned task, whatever its number of awaits",
                met: spawned.iter().all(|(_, a)| (a - 1.0).abs() < 0.005),
                figures: format!("allocs/op: {}", show(&spawned)),
            });
        }
        let pooled = list(&["vt_pooled_sync", "vt_pooled_async"]);
        if !pooled.is_empty() {
            targets.push(Target {
                name: "0 allocations for pooled ValueTask in steady state",
                met: pooled.iter().all(|(_, a)| *a < 0.005),
                figures: format!("allocs/op: {}", show(&pooled)),
            });
        }
        targets
    }

    // ---------------------------------------------------------------------------------
    // Running and reporting.

    fn calibrate(row: &mut Row) {
        let mut iters = 1u64;
        loop {
            let sample = (row.routine)(iters);
            let elapsed = if row.uses_cpu_clock() {
                sample.cpu
            } else {
                sample.wall
            };
            if elapsed >= SAMPLE / 4 || iters >= 1 << 30 {
                let per_op = elapsed.as_secs_f64() / iters as f64;
                row.iters = ((SAMPLE.as_secs_f64() / per_op) as u64).max(1);
                return;
            }
            iters *= if elapsed < SAMPLE / 100 { 10 } else { 2 };
        }
    }

    fn count(row: &mut Row) {
        let n = (row.iters / 2).clamp(64, 20_000);
        let (a1, b1) = count_allocations(|| {
            (row.routine)(n);
        });
        let (a2, b2) = count_allocations(|| {
            (row.routine)(2 * n);
        });
        row.allocs = (a2 as f64 - a1 as f64) / n as f64;
        row.bytes = (b2 as f64 - b1 as f64) / n as f64;
    }

    fn render(table: &Table) -> String {
        let mut out = String::new();
        out.push_str(
            "| row | ns/op | ± | wall ns/op | allocs/op | bytes/op | comparison (ns/op ÷ ns/op) |\n\
             |---|---:|---:|---:|---:|---:|---|\n",
        );
        let mut group = "";
        for row in &table.rows {
            if row.group != group {
                group = row.group;
                let _ = writeln!(out, "| **{group}** | | | | | | |");
            }
            let _ = writeln!(
                out,
                "| {} <sub>`{}`</sub> | {:.1}{} | {:.1}% | {:.1} | {:.2} | {:.1} | {} |",
                row.label,
                row.key,
                row.median(),
                if row.uses_cpu_clock() { "" } else { " (wall)" },
                100.0 * row.spread(),
                row.wall_median(),
                row.allocs,
                row.bytes,
                comparison(table, row.key)
            );
        }
        out
    }

    fn render_targets(targets: &[Target]) -> String {
        let mut out = String::new();
        for target in targets {
            let _ = writeln!(
                out,
                "- **{}** — {}: {}.",
                target.name,
                if target.met { "met" } else { "MISSED" },
                target.figures
            );
        }
        out
    }

    fn command_output(program: &str, args: &[&str]) -> Option<String> {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split(':').nth(1))
                    .map(|model| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned())
    }

    /// The locked version of `name`, read from the workspace's Cargo.lock.
    fn locked_version(name: &str) -> String {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .unwrap_or_default();
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .and_then(|at| {
                let rest = &lock[at + needle.len()..];
                rest.find('"').map(|end| rest[..end].to_owned())
            })
            .unwrap_or_else(|| "?".to_owned())
    }

    /// Today's date (UTC), from the system clock.
    fn today() -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Howard Hinnant's civil_from_days.
        let z = (secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}-{day:02}")
    }

    /// The 1-, 5- and 15-minute load averages, as /proc/loadavg gives them.
    fn load_average() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|load| {
                load.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|_| "unknown".to_owned())
    }

    /// How the run went, for the document's header.
    struct RunInfo {
        total: Duration,
        load_before: String,
        load_after: String,
    }

    /// This run's comparator figures beside the reference figures DESIGN.md quotes, to show
    /// how this machine compares with the one they came from.
    fn references(table: &Table) -> String {
        let row = |key: &str| {
            table.get(key).map_or_else(
                || "not run".to_owned(),
                |row| {
                    format!(
                        "{:.0} ns, {:.2} allocs of {:.0} B",
                        row.median(),
                        row.allocs,
                        row.bytes / row.allocs.max(1.0)
                    )
                },
            )
        };
        format!(
            "\nDESIGN.md's reference figures beside this run's: async-task spawn+run+join \
             ≈ 42 ns, 1 allocation of 56 B (here {}); tokio current_thread spawn+await \
             200–400 ns, 1 allocation of 128 B (here {}); wake+poll ≈ 21 ns for async-task \
             (here {}) and 34–43 ns for tokio (here {}).\n",
            row("at_spawn_run_join"),
            row("tokio_spawn_await"),
            row("at_wake_poll"),
            row("tokio_wake_poll"),
        )
    }

    /// The commit the bench was built from, and whether the runtime's sources (`src/`)
    /// differ from it.
    fn git_commit() -> String {
        let dir = env!("CARGO_MANIFEST_DIR");
        let Some(commit) = command_output("git", &["-C", dir, "rev-parse", "--short", "HEAD"])
        else {
            return "unknown (not a git checkout)".to_owned();
        };
        let dirty = command_output("git", &["-C", dir, "status", "--porcelain", "--", "src"])
            .is_some_and(|status| !status.is_empty());
        if dirty {
            format!("`{commit}` plus uncommitted changes under runtime/src")
        } else {
            format!("`{commit}`")
        }
    }

    fn document(table: &Table, targets: &[Target], run: &RunInfo) -> String {
        let nproc = std::thread::available_parallelism().map_or(0, usize::from);
        let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".into());
        let mut out = String::new();
        let _ = write!(
            out,
            "# taskcheck benchmarks: the seed's table\n\n\
             Generated by `runtime/benches/seed_table.rs`; do not edit by hand. Regenerate with\n\n\
             ```sh\n{COMMAND}\n```\n\n\
             (without `--write` it only prints the table).\n\n\
             - Machine: {nproc} CPUs (`nproc`), {cpu}\n\
             - Toolchain: {rustc}, `--release` (the bench profile)\n\
             - Source: taskcheck at commit {commit}\n\
             - Date: {date}\n\
             - Compared: tokio {tokio}, async-task {at}, async-executor {ae} (futures-lite {fl} \
             drives async-executor)\n\
             - Run time: {secs:.0} s; load average (1, 5, 15 min) {before} before, {after} \
             after (other work on the machine inflates the figures and the ± column)\n\n",
            cpu = cpu_model(),
            date = today(),
            tokio = locked_version("tokio"),
            at = locked_version("async-task"),
            ae = locked_version("async-executor"),
            fl = locked_version("futures-lite"),
            secs = run.total.as_secs_f64(),
            commit = git_commit(),
            before = run.load_before,
            after = run.load_after,
        );
        out.push_str("## Targets (DESIGN.md, \"Performance\")\n\n");
        out.push_str(&render_targets(targets));
        out.push_str(&references(table));
        out.push_str("\n## Table\n\n");
        out.push_str(&render(table));
        let _ = write!(
            out,
            "\n## How to read it\n\n\
             - **ns/op** is the median of {ROUNDS} samples of about {sample_ms} ms each, taken round-robin \
             across all rows so drift hits every row alike; **±** is half the p10–p90 range of \
             those samples, relative to the median. Rows whose work all runs on the bench \
             thread (every row but the pool rows) are timed by that thread's CPU time \
             (`CLOCK_THREAD_CPUTIME_ID`, user + system: a futex system call counts), so other \
             processes taking the CPU do not inflate them; **wall ns/op** is the same samples \
             by the wall clock, equal to ns/op on an idle machine. The pool rows, whose work \
             crosses threads, are timed by the wall clock only, marked (wall).\n\
             - **allocs/op** and **bytes/op** count every allocation on every thread (a \
             global allocator; a pool's worker threads included; a `realloc` counts as one \
             allocation of its new size). They are steady-state figures: `(count(2n) − \
             count(n)) / n`, so one-off costs of a run (a `block_on`, a queue's first \
             growth) cancel out.\n\
             - **comparison** divides this row's ns/op by the named row's: below 1 is faster.\n\
             - The .NET seed's rows map as: `Task.FromResult` → `Task::from_result`; an async \
             method completing synchronously → `start(async {{ Ok(1) }})`; awaiting \
             `Task.Yield()` → awaiting an already-completed task with \
             `ConfigureAwaitOptions::FORCE_YIELDING` (suspend, queue to the captured context, \
             resume); the `ValueTask` variants → `ValueTask::from_result` and \
             `ValueTask::from_task`. The yield rows run a loop inside one task on a \
             `SingleThreadContext` owned by the bench thread (`block_on`): each operation \
             spawns (or `start`s) a child that yields n times and awaits it, exactly as the \
             tokio rows do with `tokio::spawn` and `yield_now` inside one `block_on`.\n\
             - The async-task rows drive `Runnable`s from a thread-local `VecDeque`, as \
             async-task's examples do; the wake + poll rows run a future that wakes itself \
             n times.\n",
            sample_ms = SAMPLE.as_millis(),
        );
        out
    }

    pub(super) fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench_mode = args.iter().any(|a| a == "--bench");
        let write = args.iter().any(|a| a == "--write");
        let filter: Option<&String> = args.iter().find(|a| !a.starts_with("--"));

        let stc = Rc::new(SingleThreadContext::new("bench"));
        let mut table = build_rows(&stc);
        if let Some(filter) = filter {
            table.rows.retain(|row| {
                row.key.contains(filter.as_str()) || row.label.contains(filter.as_str())
            });
        }

        if !bench_mode {
            // `cargo test --all-targets`: prove every routine runs, quickly. `--iters=N`
            // runs each selected routine once for N operations (for a profiler).
            let iters = args
                .iter()
                .find_map(|a| a.strip_prefix("--iters="))
                .map_or(3, |n| n.parse().expect("--iters=N takes a number"));
            for row in &mut table.rows {
                let sample = (row.routine)(iters);
                if iters > 3 {
                    let per_op = |time: Duration| time.as_secs_f64() * 1e9 / iters as f64;
                    println!(
                        "{}: {:.1} ns/op (wall), {:.1} ns/op (thread CPU)",
                        row.key,
                        per_op(sample.wall),
                        per_op(sample.cpu)
                    );
                }
            }
            println!(
                "seed_table: {} routines ran once (smoke run; `cargo bench` measures)",
                table.rows.len()
            );
            return;
        }

        let load_before = load_average();
        let started = Instant::now();
        eprintln!("seed_table: calibrating {} rows…", table.rows.len());
        for row in &mut table.rows {
            calibrate(row);
        }
        eprintln!("seed_table: counting allocations…");
        for row in &mut table.rows {
            count(row);
        }
        eprintln!("seed_table: {ROUNDS} rounds of samples…");
        for _ in 0..ROUNDS {
            for row in &mut table.rows {
                let sample = (row.routine)(row.iters);
                let per_op = |time: Duration| time.as_secs_f64() * 1e9 / row.iters as f64;
                row.wall.push(per_op(sample.wall));
                row.cpu.push(per_op(sample.cpu));
            }
        }
        let run = RunInfo {
            total: started.elapsed(),
            load_before,
            load_after: load_average(),
        };
        eprintln!(
            "seed_table: {:.0} s; load average {} before, {} after",
            run.total.as_secs_f64(),
            run.load_before,
            run.load_after
        );
        let targets = targets(&table);
        println!("{}", render(&table));
        println!("Targets:\n{}", render_targets(&targets));

        if write {
            if filter.is_some() {
                eprintln!("seed_table: not writing BENCHMARKS.md from a filtered run");
                return;
            }
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
            std::fs::write(path, document(&table, &targets, &run))
                .unwrap_or_else(|error| panic!("writing {path}: {error}"));
            eprintln!("seed_table: wrote {path}");
        }
    }
}
