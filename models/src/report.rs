//! The record each model run leaves behind, and its one-line JSON form.
//!
//! Every harness function ends by building one [`Record`]: it prints it as a line a person
//! reads (`loom    pass    loom_task::completion_races_registration   48 schedules   7 ms`)
//! and, when the `TASKCHECK_REPORT` environment variable names a file, appends it there as
//! one line of JSON. The suite runner points that variable at a fresh file, runs the test
//! binaries, and reads the lines back with [`Record::from_json`] to print its table. Writer
//! and reader live here together so the format is defined once.
//!
//! The JSON is written and read by hand: the records are flat (strings and unsigned
//! integers), and a serde dependency would be built under `--cfg loom` for nothing.
//!
//! ```text
//! {"tool":"loom","model":"loom_task::wake","expect":"pass","result":"pass","schedules":48,"ms":7}
//! {"tool":"shuttle","model":"shuttle_deadlock::story [pct]","expect":"caught","result":"caught","schedules":3,"ms":1,"detail":"deadlock! ..."}
//! ```

use std::fmt;

/// The environment variable naming the file that records are appended to.
pub const REPORT_ENV: &str = "TASKCHECK_REPORT";

/// Which checker ran the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// loom: exhaustive up to a preemption bound.
    Loom,
    /// shuttle: random, PCT or DFS schedules.
    Shuttle,
}

/// What the model is meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// A correct program: it passes in every schedule the checker tries.
    Pass,
    /// A bug model: the checker must catch the bug it commits on purpose.
    Caught,
}

/// What happened when the model ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every schedule passed (expected for [`Expectation::Pass`]).
    Pass,
    /// Some schedule failed although the model was meant to pass.
    Fail,
    /// The checker reported the bug the model commits (expected for [`Expectation::Caught`]).
    Caught,
    /// The bug model passed, or failed for another reason than the one expected.
    Missed,
}

/// One model run: what was checked, what was expected, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The checker.
    pub tool: Tool,
    /// The model's name, `file::test` (shuttle adds the strategy: `file::test [pct]`).
    pub model: String,
    /// What the model is meant to do.
    pub expect: Expectation,
    /// What it did.
    pub result: Verdict,
    /// How many executions (schedules) the checker ran.
    pub schedules: u64,
    /// Wall time of the run in milliseconds.
    pub ms: u64,
    /// What a reader needs to know beyond the numbers: what was caught, why it failed, the
    /// schedule that reproduces it. May span several lines.
    pub detail: Option<String>,
}

impl Tool {
    /// The name used in the report and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Loom => "loom",
            Tool::Shuttle => "shuttle",
        }
    }
}

impl Expectation {
    /// The name used in the report and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Pass => "pass",
            Expectation::Caught => "caught",
        }
    }
}

impl Verdict {
    /// The name used in the report and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Caught => "caught",
            Verdict::Missed => "missed",
        }
    }
}

impl Record {
    /// Whether the model did what it is meant to do.
    pub fn met_expectation(&self) -> bool {
        matches!(
            (self.expect, self.result),
            (Expectation::Pass, Verdict::Pass) | (Expectation::Caught, Verdict::Caught)
        )
    }

    /// The record as one line of JSON, without the trailing newline.
    pub fn to_json(&self) -> String {
        let mut json = format!(
            "{{\"tool\":{},\"model\":{},\"expect\":{},\"result\":{},\"schedules\":{},\"ms\":{}",
            quote(self.tool.as_str()),
            quote(&self.model),
            quote(self.expect.as_str()),
            quote(self.result.as_str()),
            self.schedules,
            self.ms,
        );
        if let Some(detail) = &self.detail {
            json.push_str(",\"detail\":");
            json.push_str(&quote(detail));
        }
        json.push('}');
        json
    }

    /// Parses a line written by [`Record::to_json`]. Unknown keys are an error: the writer and
    /// the reader are the same code, so anything else is a corrupted report.
    pub fn from_json(line: &str) -> Result<Record, String> {
        let mut parser = Parser { rest: line.trim() };
        let mut tool = None;
        let mut model = None;
        let mut expect = None;
        let mut result = None;
        let mut schedules = None;
        let mut ms = None;
        let mut detail = None;

        parser.expect('{')?;
        loop {
            let key = parser.string()?;
            parser.expect(':')?;
            match key.as_str() {
                "tool" => tool = Some(parse_tool(&parser.string()?)?),
                "model" => model = Some(parser.string()?),
                "expect" => expect = Some(parse_expectation(&parser.string()?)?),
                "result" => result = Some(parse_verdict(&parser.string()?)?),
                "schedules" => schedules = Some(parser.number()?),
                "ms" => ms = Some(parser.number()?),
                "detail" => detail = Some(parser.string()?),
                other => return Err(format!("unknown key {other:?}")),
            }
            if parser.eat(',') {
                continue;
            }
            parser.expect('}')?;
            break;
        }
        if !parser.rest.is_empty() {
            return Err(format!("trailing text {:?}", parser.rest));
        }

        Ok(Record {
            tool: tool.ok_or("missing \"tool\"")?,
            model: model.ok_or("missing \"model\"")?,
            expect: expect.ok_or("missing \"expect\"")?,
            result: result.ok_or("missing \"result\"")?,
            schedules: schedules.ok_or("missing \"schedules\"")?,
            ms: ms.ok_or("missing \"ms\"")?,
            detail,
        })
    }
}

/// The line a person reads, e.g.
/// `loom    pass    loom_task::completion_races_registration   48 schedules   7 ms`,
/// followed by the detail, indented, if there is one.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<7} {:<7} {:<56} {:>7} schedules {:>6} ms",
            self.tool.as_str(),
            self.result.as_str(),
            self.model,
            self.schedules,
            self.ms,
        )?;
        if let Some(detail) = &self.detail {
            for line in detail.lines() {
                write!(f, "\n        {line}")?;
            }
        }
        Ok(())
    }
}

/// Prints the record and appends it to the report file, if `TASKCHECK_REPORT` names one.
///
/// The line is written with a single `write_all` on a file opened in append mode, so records
/// from tests running in parallel threads (or processes) do not interleave.
#[cfg(any(loom, shuttle))]
pub(crate) fn finish(record: &Record) {
    use std::io::Write;

    println!("{record}");
    let Some(path) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let line = format!("{}\n", record.to_json());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        panic!(
            "cannot append to {REPORT_ENV}={}: {error}",
            path.to_string_lossy()
        );
    }
}

/// A JSON string literal for `text`.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn parse_tool(name: &str) -> Result<Tool, String> {
    match name {
        "loom" => Ok(Tool::Loom),
        "shuttle" => Ok(Tool::Shuttle),
        other => Err(format!("unknown tool {other:?}")),
    }
}

fn parse_expectation(name: &str) -> Result<Expectation, String> {
    match name {
        "pass" => Ok(Expectation::Pass),
        "caught" => Ok(Expectation::Caught),
        other => Err(format!("unknown expectation {other:?}")),
    }
}

fn parse_verdict(name: &str) -> Result<Verdict, String> {
    match name {
        "pass" => Ok(Verdict::Pass),
        "fail" => Ok(Verdict::Fail),
        "caught" => Ok(Verdict::Caught),
        "missed" => Ok(Verdict::Missed),
        other => Err(format!("unknown result {other:?}")),
    }
}

/// Just enough of a JSON reader for one flat object of strings and unsigned integers.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {c:?} at {:?}", self.rest))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[at + 1..];
                    return Ok(value);
                }
                '\\' => match chars.next().map(|(_, escaped)| escaped) {
                    Some('"') => value.push('"'),
                    Some('\\') => value.push('\\'),
                    Some('/') => value.push('/'),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .map_err(|_| format!("bad escape \\u{hex}"))?;
                        value.push(char::from_u32(code).ok_or(format!("bad escape \\u{hex}"))?);
                    }
                    other => return Err(format!("bad escape {other:?}")),
                },
                c => value.push(c),
            }
        }
        Err("unterminated string".to_owned())
    }

    fn number(&mut self) -> Result<u64, String> {
        self.rest = self.rest.trim_start();
        let digits = self.rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = self.rest.split_at(digits);
        self.rest = rest;
        number
            .parse()
            .map_err(|_| format!("expected a number at {rest:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_round_trip() {
        let record = Record {
            tool: Tool::Shuttle,
            model: "shuttle_deadlock::story [pct]".to_owned(),
            expect: Expectation::Caught,
            result: Verdict::Caught,
            schedules: 3,
            ms: 12,
            detail: Some("deadlock! \"quoted\" \\ tab\t\nschedule \u{1}".to_owned()),
        };
        let json = record.to_json();
        assert!(!json.contains('\n'), "one record is one line: {json}");
        assert_eq!(Record::from_json(&json), Ok(record));
    }

    #[test]
    fn the_documented_line_parses() {
        let line = r#"{"tool":"loom","model":"loom_task::wake","expect":"pass","result":"pass","schedules":48,"ms":7}"#;
        let record = Record::from_json(line).unwrap();
        assert_eq!(record.schedules, 48);
        assert_eq!(record.ms, 7);
        assert!(record.met_expectation());
        assert_eq!(record.detail, None);
    }

    #[test]
    fn corrupted_lines_are_errors() {
        assert!(Record::from_json(r#"{"tool":"loom""#).is_err());
        assert!(Record::from_json(
            r#"{"tool":"tsan","model":"m","expect":"pass","result":"pass","schedules":1,"ms":1}"#
        )
        .is_err());
        assert!(Record::from_json(
            r#"{"tool":"loom","model":"m","expect":"pass","result":"pass","ms":1}"#
        )
        .is_err());
    }
}
