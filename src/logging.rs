//! moltd's own log lines, worded per personality.
//!
//! Under the name `tini` lines look like tini's (`[WARN  tini (7)] ...`, with
//! info and below on stdout as tini does), under `dumb-init` like dumb-init's
//! (`[dumb-init] ...`), and otherwise `moltd: warn: ...`. Each line is written
//! with one `write` so that lines from moltd and its children do not
//! interleave mid-line.

use crate::personality::Personality;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

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

/// Installs the logger. Called once, before anything is logged.
pub fn init(personality: Personality, level: LevelFilter) {
    let logger = Logger {
        personality,
        pid: std::process::id(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
