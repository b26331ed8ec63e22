//! Running loom models: correct kernels with [`loom_model`], bug models with
//! [`loom_expect_failure`].
//!
//! loom explores every interleaving of a small model up to a preemption bound. Its
//! configuration comes from the environment, as with `loom::model`: `LOOM_MAX_PREEMPTIONS`
//! (the suite sets 2), `LOOM_CHECKPOINT_FILE` with `LOOM_CHECKPOINT_INTERVAL` (save the
//! explored path, and resume from it, so a failure can be isolated; the models crate turns
//! on loom's `checkpoint` feature for this), `LOOM_LOCATION=1` (file:line in loom's
//! reports) and `LOOM_LOG=trace` (every step of the execution).
//!
//! # Why a bug model runs in a child process
//!
//! A bug model must fail, and the harness must assert that it failed *for the expected
//! reason*. Catching loom's panic in-process is not reliable: when loom stops an execution
//! (a deadlock, say) while loom `Arc`s are alive, their destructors panic during the unwind
//! and the process aborts (loom issue 291), so `#[should_panic]` and `catch_unwind` never get
//! control back. [`loom_expect_failure`] therefore re-runs the current test binary, filtered
//! to the one test, with `TASKCHECK_CHILD_MODEL` set; the child runs the model as an ordinary
//! [`loom_model`] and dies however loom makes it die, and the parent reads its exit status and
//! output. One consequence: one expected-failure model per test function.

use std::env;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::report::{self, Expectation, Record, Tool, Verdict, REPORT_ENV};
use crate::{first_lines, millis, panic_message};

/// Names the model the child process must run; the parent sets it, the child checks it.
const CHILD_ENV: &str = "TASKCHECK_CHILD_MODEL";

/// The child prints this, followed by its execution count, on every panic and when it
/// finishes, so the parent knows how many executions loom ran even if the child aborts.
const CHILD_MARKER: &str = "taskcheck-child: executions=";

/// How many lines of loom's message a summary shows.
const REASON_LINES: usize = 4;

/// Checks a correct model: `f` must pass in every execution loom explores.
///
/// Runs `f` under `loom::model` (a `loom::model::Builder` configured from the environment,
/// with loom's `LOOM_LOG` output), counts the executions, prints one summary line and
/// appends it to the `TASKCHECK_REPORT` file. If an execution fails, the line says `fail`
/// and the panic continues, failing the test.
///
/// `name` is `file::test`, e.g. `"loom_task::completion_races_registration"`.
pub fn loom_model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    run(name, f, &Arc::new(AtomicUsize::new(0)));
}

/// Checks a bug model: loom must catch it, and its message must contain `expected`.
///
/// `test_fn` is the path of the calling test function as the test binary names it (the
/// function's name for a test at the top of the file, `module::name` inside a module): the
/// model runs in a child process running only that test (see the module docs for why). The
/// child must fail (a non-zero exit or a signal) with a panic whose message contains
/// `expected`, e.g. `"deadlock"` or the message of the assertion the bug breaks.
///
/// The summary line says `caught` and shows loom's message; if the child passed, or failed
/// some other way, it says `missed` and this function panics with the child's output.
pub fn loom_expect_failure<F>(name: &str, test_fn: &str, expected: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    match env::var(CHILD_ENV) {
        Ok(child) if child == name => return run_as_child(name, f),
        Ok(child) => panic!(
            "test {test_fn:?} runs the bug models {child:?} and {name:?}: \
             loom_expect_failure runs its test again in a child process, \
             so give each expected-failure model its own test function"
        ),
        Err(_) => {}
    }

    let binary = env::current_exe().expect("the path of the running test binary");
    let started = Instant::now();
    let output = Command::new(&binary)
        .args([test_fn, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env_remove(REPORT_ENV)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
    let ms = millis(started.elapsed());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let child = ChildOutput::read(&text);

    let mut record = Record {
        tool: Tool::Loom,
        model: name.to_owned(),
        expect: Expectation::Caught,
        result: Verdict::Missed,
        schedules: child.executions,
        ms,
        detail: None,
    };

    if output.status.success() {
        if text.contains("running 0 tests") {
            panic!(
                "loom_expect_failure({name:?}): test_fn {test_fn:?} names no test in {}; \
                 pass the calling test's path (`name`, or `module::name` inside a module)",
                binary.display()
            );
        }
        record.detail = Some("loom explored every execution and none failed".to_owned());
        report::finish(&record);
        panic!(
            "model {name} was expected to be caught but passed {} schedules: \
             the property it breaks is not checked",
            child.executions
        );
    }

    match child
        .panics
        .iter()
        .find(|message| message.contains(expected))
    {
        Some(message) => {
            record.result = Verdict::Caught;
            record.detail = Some(format!(
                "{}\n(the child test process ended with {})",
                first_lines(message, REASON_LINES),
                output.status
            ));
            report::finish(&record);
        }
        None => {
            record.detail = Some(format!("failed without {expected:?} ({})", output.status));
            report::finish(&record);
            panic!(
                "model {name} failed, but no panic message contains {expected:?}; \
                 the child test process ended with {} and printed:\n{text}",
                output.status
            );
        }
    }
}

/// Runs the model, counting executions into `executions`, and reports it as a `pass` model.
fn run<F>(name: &str, f: F, executions: &Arc<AtomicUsize>)
where
    F: Fn() + Sync + Send + 'static,
{
    let counter = Arc::clone(executions);
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        loom::model(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            f();
        });
    }));
    let failed = outcome.as_ref().err();
    report::finish(&Record {
        tool: Tool::Loom,
        model: name.to_owned(),
        expect: Expectation::Pass,
        result: if failed.is_some() {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
        schedules: executions.load(Ordering::Relaxed) as u64,
        ms: millis(started.elapsed()),
        detail: failed.map(|payload| {
            format!(
                "{}\nto reproduce: rerun with LOOM_CHECKPOINT_FILE=failing.json \
                 LOOM_CHECKPOINT_INTERVAL=1 to save the failing execution, then again with \
                 LOOM_LOG=trace LOOM_LOCATION=1 added to replay it from there (see the README)",
                first_lines(&panic_message(payload.as_ref()), REASON_LINES)
            )
        }),
    });
    if let Err(payload) = outcome {
        panic::resume_unwind(payload);
    }
}

/// The child's side of [`loom_expect_failure`]: run the model, and leave the execution count
/// in the output on every panic, because the process may abort before `run` reports.
fn run_as_child<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let executions = Arc::new(AtomicUsize::new(0));
    let seen_by_hook = Arc::clone(&executions);
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        eprintln!("{CHILD_MARKER}{}", seen_by_hook.load(Ordering::Relaxed));
        previous_hook(info);
    }));
    run(name, f, &executions);
    eprintln!("{CHILD_MARKER}{}", executions.load(Ordering::Relaxed));
}

/// What the parent learns from the child's output.
struct ChildOutput {
    /// The highest execution count the child printed (0 if it printed none).
    executions: u64,
    /// The message of every panic the child printed, in order.
    panics: Vec<String>,
}

impl ChildOutput {
    /// Reads the markers and the panic messages out of the child's output. A panic message
    /// is what follows std's `thread '…' panicked at file:line:col:` line (newer toolchains
    /// print `thread '…' (id) panicked at`), up to the `note:`
    /// line, a blank line, or the next line the harness, libtest or the panic machinery
    /// prints.
    fn read(text: &str) -> ChildOutput {
        let mut executions = 0;
        let mut panics = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in text.lines() {
            let ends_message = line.is_empty()
                || line.starts_with("note: ")
                || line.starts_with("stack backtrace:")
                || line.starts_with("thread '")
                || line.starts_with(CHILD_MARKER)
                || line.starts_with("test ")
                || line.starts_with("failures:")
                || line.starts_with("error: ");
            if ends_message {
                if let Some(message) = current.take() {
                    panics.push(message.join("\n"));
                }
            } else if let Some(message) = current.as_mut() {
                message.push(line);
            }
            if let Some(count) = line.strip_prefix(CHILD_MARKER) {
                executions = executions.max(count.trim().parse().unwrap_or(0));
            }
            if line.starts_with("thread '") && line.contains(" panicked at ") {
                current = Some(Vec::new());
            }
        }
        if let Some(message) = current {
            panics.push(message.join("\n"));
        }
        ChildOutput { executions, panics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_output_yields_the_count_and_every_panic_message() {
        let text = "\
running 1 test
taskcheck-child: executions=3
thread 'bug' (4620) panicked at /loom/src/rt/execution.rs:217:17:
deadlock; threads = [(ThreadId(0), Blocked), (ThreadId(1), Blocked)]
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
taskcheck-child: executions=3
thread 'bug' panicked at /loom/src/rt/arc.rs:40:9:
Arc leaked
thread 'bug' panicked at library/core/src/panicking.rs:225:5:
panic in a destructor during cleanup
thread caused non-unwinding panic. aborting.
";
        let child = ChildOutput::read(text);
        assert_eq!(child.executions, 3);
        assert_eq!(
            child.panics,
            [
                "deadlock; threads = [(ThreadId(0), Blocked), (ThreadId(1), Blocked)]",
                "Arc leaked",
                "panic in a destructor during cleanup\nthread caused non-unwinding panic. aborting.",
            ]
        );
    }

    #[test]
    fn a_multi_line_assertion_message_is_kept_whole() {
        let text = "\
thread 'bug' panicked at models/tests/loom_harness.rs:30:9:
assertion `left == right` failed: lost update
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
";
        let child = ChildOutput::read(text);
        assert_eq!(child.executions, 0);
        assert_eq!(
            child.panics,
            ["assertion `left == right` failed: lost update\n  left: 1\n right: 2"]
        );
    }
}
