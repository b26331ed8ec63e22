//! The suite runner: `cargo run --release -p taskcheck-models --bin suite`.
//!
//! Runs every loom model, then every shuttle model, and prints one table of what each checked,
//! what it was expected to do, what it did, how many schedules it ran and how long it took.
//!
//! The models are integration tests compiled under a compiler flag, so running them means
//! running cargo again with that flag:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p taskcheck-models --tests --no-fail-fast --target-dir target/loom
//! RUSTFLAGS="--cfg shuttle" \
//!     cargo test --release -p taskcheck-models --tests --no-fail-fast --target-dir target/shuttle
//! ```
//!
//! Each flag gets its own target directory because a change of `RUSTFLAGS` rebuilds every
//! dependency: sharing `target/` would throw the ordinary build away on each run. An existing
//! `RUSTFLAGS` is kept and the flag appended; an existing `LOOM_MAX_PREEMPTIONS` wins over
//! the default bound of 2.
//!
//! The harness (`taskcheck_models`) appends one JSON line per model to the file named by
//! `TASKCHECK_REPORT`; this runner points it at a fresh `target/suite-report.jsonl` and reads
//! it back afterwards. cargo's own output goes to stderr as it happens; stdout carries only
//! the table and the final `suite: N passed, M failed` line. The exit status is non-zero if
//! any model did not do what it is meant to, or if a cargo run failed.
//!
//! Only std: the runner must build before anything else does.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use taskcheck_models::report::{Record, Tool, Verdict, REPORT_ENV};

const USAGE: &str = "\
usage: cargo run --release -p taskcheck-models --bin suite [-- --loom-only | --shuttle-only]

Runs the loom models (RUSTFLAGS=\"--cfg loom\", LOOM_MAX_PREEMPTIONS=2 unless set) and the
shuttle models (RUSTFLAGS=\"--cfg shuttle\"), then prints a summary table.";

/// The loom bound when the environment sets none: enough for the classic two- and
/// three-step races, small enough for the suite to stay in minutes.
const DEFAULT_PREEMPTIONS: &str = "2";

/// One checker's half of the suite.
struct Checker {
    tool: Tool,
    /// The `--cfg` flag that switches the runtime's sync facade and the models on.
    cfg: &'static str,
    /// Where its build goes, relative to the workspace root.
    target_dir: &'static str,
}

const CHECKERS: [Checker; 2] = [
    Checker {
        tool: Tool::Loom,
        cfg: "loom",
        target_dir: "target/loom",
    },
    Checker {
        tool: Tool::Shuttle,
        cfg: "shuttle",
        target_dir: "target/shuttle",
    },
];

/// How one checker's cargo run went.
struct CargoRun {
    tool: Tool,
    /// The exit status, or why cargo could not be started.
    status: Result<ExitStatus, String>,
    /// Wall time, build included.
    wall: Duration,
}

impl CargoRun {
    fn succeeded(&self) -> bool {
        matches!(&self.status, Ok(status) if status.success())
    }

    fn describe_status(&self) -> String {
        match &self.status {
            Ok(status) => status.to_string(),
            Err(error) => error.clone(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let tools = match selected_tools(&args) {
        Ok(tools) => tools,
        Err(message) => {
            eprintln!("suite: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the models crate sits in the workspace root");
    let report = root.join("target").join("suite-report.jsonl");
    if let Err(error) = fresh_file(&report) {
        eprintln!("suite: cannot create {}: {error}", report.display());
        return ExitCode::FAILURE;
    }

    let runs: Vec<CargoRun> = CHECKERS
        .iter()
        .filter(|checker| tools.contains(&checker.tool))
        .map(|checker| run_checker(checker, root, &report))
        .collect();

    let (records, unreadable) = read_report(&report);
    let failed = print_summary(&runs, &records, &unreadable);
    println!("report: {}", report.display());
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Which checkers the arguments ask for.
fn selected_tools(args: &[String]) -> Result<Vec<Tool>, String> {
    let mut tools = vec![Tool::Loom, Tool::Shuttle];
    let mut only = None;
    for arg in args {
        let tool = match arg.as_str() {
            "--loom-only" => Tool::Loom,
            "--shuttle-only" => Tool::Shuttle,
            other => return Err(format!("unknown argument {other:?}")),
        };
        if only.is_some_and(|chosen| chosen != tool) {
            return Err("--loom-only and --shuttle-only exclude each other".to_owned());
        }
        only = Some(tool);
    }
    if let Some(tool) = only {
        tools.retain(|&t| t == tool);
    }
    Ok(tools)
}

/// Creates `path` empty, with its directory.
fn fresh_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, "")
}

/// Runs one checker's models with `cargo test`, streaming cargo's output to stderr.
fn run_checker(checker: &Checker, root: &Path, report: &Path) -> CargoRun {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustflags = match env::var("RUSTFLAGS") {
        Ok(existing) if !existing.trim().is_empty() => {
            format!("{} --cfg {}", existing.trim(), checker.cfg)
        }
        _ => format!("--cfg {}", checker.cfg),
    };
    let args = [
        "test",
        "--release",
        "-p",
        "taskcheck-models",
        "--tests",
        // Run every test binary even when one fails, so that every model reports.
        "--no-fail-fast",
        "--target-dir",
        checker.target_dir,
    ];

    let mut command = Command::new(&cargo);
    command
        .args(args)
        .current_dir(root)
        .env("RUSTFLAGS", &rustflags)
        .env(REPORT_ENV, report)
        // The table goes to stdout; everything cargo and the tests print goes to stderr.
        .stdout(io::stderr());
    let mut shown = format!("RUSTFLAGS=\"{rustflags}\"");
    if checker.tool == Tool::Loom {
        let bound = env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| {
            command.env("LOOM_MAX_PREEMPTIONS", DEFAULT_PREEMPTIONS);
            DEFAULT_PREEMPTIONS.to_owned()
        });
        shown.push_str(&format!(" LOOM_MAX_PREEMPTIONS={bound}"));
    }
    eprintln!(
        "\nsuite: {} models: {shown} cargo {}",
        checker.tool.as_str(),
        args.join(" ")
    );

    let started = Instant::now();
    let status = command
        .status()
        .map_err(|error| format!("cannot run {}: {error}", PathBuf::from(&cargo).display()));
    CargoRun {
        tool: checker.tool,
        status,
        wall: started.elapsed(),
    }
}

/// The records in the report, and the lines that are not records.
fn read_report(report: &Path) -> (Vec<Record>, Vec<String>) {
    let text = match fs::read_to_string(report) {
        Ok(text) => text,
        Err(error) => return (Vec::new(), vec![format!("{}: {error}", report.display())]),
    };
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match Record::from_json(line) {
            Ok(record) => records.push(record),
            Err(error) => unreadable.push(format!("{error}: {line}")),
        }
    }
    // Tests finish in parallel; the table reads better in a fixed order.
    records.sort_by(|a, b| (a.tool, &a.model).cmp(&(b.tool, &b.model)));
    (records, unreadable)
}

/// Prints the table, the totals and the final line; returns how many things failed.
fn print_summary(runs: &[CargoRun], records: &[Record], unreadable: &[String]) -> usize {
    let model_width = records
        .iter()
        .map(|record| record.model.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let rule = |width: usize| "-".repeat(width);

    println!();
    println!(
        "{:<7}  {:<model_width$}  {:<6}  {:<6}  {:>9}  {:>9}",
        "tool", "model", "expect", "result", "schedules", "time"
    );
    println!(
        "{}  {}  {}  {}  {}  {}",
        rule(7),
        rule(model_width),
        rule(6),
        rule(6),
        rule(9),
        rule(9)
    );
    for record in records {
        println!(
            "{:<7}  {:<model_width$}  {:<6}  {:<6}  {:>9}  {:>9}",
            record.tool.as_str(),
            record.model,
            record.expect.as_str(),
            record.result.as_str(),
            record.schedules,
            duration(Duration::from_millis(record.ms)),
        );
        // A caught bug shows what caught it; a failure shows everything the harness said.
        let shown_lines = match record.result {
            Verdict::Pass => 0,
            Verdict::Caught => 1,
            Verdict::Fail | Verdict::Missed => usize::MAX,
        };
        for line in record
            .detail
            .iter()
            .flat_map(|d| d.lines())
            .take(shown_lines)
        {
            println!("{:9}{line}", "");
        }
    }

    let mut passed = 0;
    let mut failed = 0;
    println!();
    for run in runs {
        let mine: Vec<&Record> = records.iter().filter(|r| r.tool == run.tool).collect();
        let ok = mine.iter().filter(|r| r.met_expectation()).count();
        passed += ok;
        failed += mine.len() - ok;
        let schedules: u64 = mine.iter().map(|r| r.schedules).sum();
        println!(
            "{:<7}  {} models, {schedules} schedules, {} wall (build included), cargo test {}",
            run.tool.as_str(),
            mine.len(),
            duration(run.wall),
            if run.succeeded() { "passed" } else { "FAILED" },
        );
        if !run.succeeded() && ok == mine.len() {
            // cargo failed, yet no model says why: the cause is in the log above.
            failed += 1;
            println!(
                "{:9}cargo test ended with {} but no model reported a failure: a build error, \
                 a test outside the harness, or a model that aborted the process (see the log above)",
                "",
                run.describe_status()
            );
        }
    }
    for line in unreadable {
        failed += 1;
        println!("unreadable report line: {line}");
    }
    println!("suite: {passed} passed, {failed} failed");
    failed
}

/// A duration as a person reads it: `7 ms`, `3.2 s`, `4m 05s`.
fn duration(elapsed: Duration) -> String {
    let ms = elapsed.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", elapsed.as_secs_f64())
    } else {
        let secs = elapsed.as_secs();
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}
