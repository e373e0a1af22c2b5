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

use crate::personality::Personality;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

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
        let line = match self.personality {
            Personality::Tini => {
                let tag = match level {
                    Level::Error => "FATAL",
                    Level::Warn => "WARN ",
                    Level::Info => "INFO ",
                    Level::Debug => "DEBUG",
                    Level::Trace => "TRACE",
                };
                format!("[{tag} tini ({})] {}\n", self.pid, record.args())
            }
            Personality::DumbInit => format!("[dumb-init] {}\n", record.args()),
            Personality::Moltd if json() => {
                let tag = level.as_str().to_ascii_lowercase();
                json_line(&tag, &record.args().to_string(), &[("source", "moltd")])
            }
            Personality::Moltd => {
                let tag = level.as_str().to_ascii_lowercase();
                format!("moltd: {tag}: {}\n", record.args())
            }
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
