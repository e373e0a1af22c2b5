//! moltd's own log lines, worded per personality.
//!
//! Under the name `tini` lines look like tini's (`[WARN  tini (7)] ...`, with
//! info and below on stdout as tini does), under `dumb-init` like dumb-init's
//! (`[dumb-init] ...`), and otherwise `moltd: warn: ...`. Each line is written
//! with one `write` so that lines from moltd and its children do not
//! interleave mid-line.
//!
//! With `MOLTD_LOG_FORMAT=json` (moltd's own personality only) every line
//! is one JSON object: `ts`, `level`, `msg`, and `source` (`moltd` for
//! moltd's lines, `service` for service output, which then also names the
//! service and stream), so log pipelines can tell them apart.
//!
//! Update milestones (start, download progress, switch, commit, rollback)
//! are *notices*: logged at the warn level under the target [`NOTICE`],
//! so the default level (warn) shows them while a quiet PID 1 stays quiet
//! otherwise, and `MOLTD_LOG=error` hides them; the line reads
//! `moltd: notice: ...`. The `log` crate has no level between warn and
//! info, and moving the default to info would show every service restart.
//!
//! Names in log lines often come from outside (release tags, asset and
//! entry names, server error bodies): [`Escaped`] shows their control
//! characters as escapes, so a name cannot forge a log line or drive the
//! terminal. Every text line of moltd's own personality (the only one that
//! updates) goes through it once more here, at the sink; tini's and
//! dumb-init's lines stay exactly theirs (tini's warning has newlines).

use crate::personality::Personality;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// The target of a notice (see the module docs): [`notice!`].
pub const NOTICE: &str = "notice";

/// Logs an update milestone at the default level, as `moltd: notice: ...`.
#[macro_export]
macro_rules! notice {
    ($($arg:tt)*) => {
        log::warn!(target: $crate::logging::NOTICE, $($arg)*)
    };
}

/// The word a line is tagged with: the level's, or `notice`.
fn tag(record: &Record) -> String {
    match record.target() {
        NOTICE => NOTICE.to_owned(),
        _ => record.level().as_str().to_ascii_lowercase(),
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Lines are JSON objects (`MOLTD_LOG_FORMAT=json`).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// One JSON log line, newline included.
pub fn json_line(level: &str, msg: &str, extra: &[(&str, &str)]) -> String {
    let mut object = serde_json::Map::new();
    object.insert(
        "ts".into(),
        crate::update::status::rfc3339(SystemTime::now()).into(),
    );
    object.insert("level".into(), level.into());
    object.insert("msg".into(), msg.into());
    for (key, value) in extra {
        object.insert((*key).into(), (*value).into());
    }
    let mut line = serde_json::Value::Object(object).to_string();
    line.push('\n');
    line
}

/// Text from outside, fit for one log line: control characters (newlines,
/// ESC, DEL, C1) and bidirectional overrides become `\n`, `\r`, `\t` or
/// `\u{..}`. Backslashes are kept as they are, so escaping twice changes
/// nothing.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

struct Logger {
    personality: Personality,
    pid: u32,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        let text = record.args().to_string();
        let line = match self.personality {
            Personality::Tini => {
                let tag = match level {
                    Level::Error => "FATAL",
                    Level::Warn => "WARN ",
                    Level::Info => "INFO ",
                    Level::Debug => "DEBUG",
                    Level::Trace => "TRACE",
                };
                format!("[{tag} tini ({})] {text}\n", self.pid)
            }
            Personality::DumbInit => format!("[dumb-init] {text}\n"),
            Personality::Moltd if json() => json_line(&tag(record), &text, &[("source", "moltd")]),
            Personality::Moltd => format!("moltd: {}: {}\n", tag(record), Escaped(&text)),
        };
        // Like tini: problems on stderr, chatter on stdout.
        let to_stdout = self.personality == Personality::Tini && level > Level::Warn;
        let _ = if to_stdout {
            std::io::stdout().lock().write_all(line.as_bytes())
        } else {
            std::io::stderr().lock().write_all(line.as_bytes())
        };
    }

    fn flush(&self) {}
}

/// Installs the logger. Called once, before anything is logged. `json`
/// applies to moltd's own personality only.
pub fn init(personality: Personality, level: LevelFilter, json: bool) {
    JSON.store(json && personality == Personality::Moltd, Ordering::Relaxed);
    let logger = Logger {
        personality,
        pid: std::process::id(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn escaped_text() {
        let table = [
            ("v1.0.0", "v1.0.0"),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("nul\0del\u{7f}c1\u{9b}", "nul\\u{0}del\\u{7f}c1\\u{9b}"),
            ("abc\u{202e}cba", "abc\\u{202e}cba"),
            ("caf\u{e9} \\n", "caf\u{e9} \\n"),
        ];
        for (raw, shown) in table {
            assert_eq!(Escaped(raw).to_string(), shown, "{raw:?}");
            // Idempotent: a line escaped at the call site and at the sink
            // reads the same.
            assert_eq!(Escaped(shown).to_string(), shown, "{raw:?}");
        }
    }
}
