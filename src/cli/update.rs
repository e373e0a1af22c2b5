//! `moltd update`: check, download, verify and stage from the command line.
//!
//! Recognised only as moltd's very first argument, so `moltd -- update` and
//! `moltd ./update` still run a program called update as PID 1. Settings come
//! from the same environment variables the supervisor reads.

use super::{Env, Outcome, write_err, write_out};
use crate::update::{self, Config, Mode, Updater};
use lexopt::prelude::*;
use log::LevelFilter;
use std::ffi::OsString;

const HELP: &str = "\
Usage: moltd update [--check | --stage-only] [--watch]

Looks for a newer release of the payload (see the README's Updates section
for the environment variables that say where and which).

  --check        only report the newest eligible release
  --stage-only   download, verify and stage it; print the staged folder
  --watch        keep checking on the schedule (SLEEP / MOLTD_INTERVAL)
  -h, --help     print this help and exit

Without --check or --stage-only, MOLTD_MODE decides (check, stage, auto).
Progress is logged on stderr and written to MOLTD_STATUS_FILE.
";

/// A parsed `moltd update` command.
#[derive(Debug, PartialEq, Eq)]
pub struct UpdateCommand {
    pub mode: Option<Mode>,
    pub watch: bool,
    pub level: LevelFilter,
}

/// Parses the arguments after `update`.
pub fn parse(args: impl IntoIterator<Item = OsString>, env: Env) -> Outcome {
    // Steps are worth seeing here: info by default.
    let level = match super::moltd::log_level(0, env, LevelFilter::Info) {
        Ok(level) => level,
        Err(problem) => return usage_error(problem),
    };
    let mut command = UpdateCommand {
        mode: None,
        watch: false,
        level,
    };
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(err) => return usage_error(err),
        };
        match arg {
            Long("check") => command.mode = Some(Mode::Check),
            Long("stage-only") => command.mode = Some(Mode::Stage),
            Long("watch") => command.watch = true,
            Short('h') | Long("help") => return Outcome::stdout(HELP),
            other => return usage_error(other.unexpected()),
        }
    }
    Outcome::Update(command)
}

fn usage_error(problem: impl std::fmt::Display) -> Outcome {
    Outcome::stderr(
        1,
        format!("moltd: error: {problem} (see 'moltd update --help')\n"),
    )
}

/// Runs the command; returns the exit code.
pub fn run(command: UpdateCommand) -> i32 {
    let env = |name: &str| std::env::var_os(name);
    let updater = Config::from_env(&env).and_then(Updater::new);
    let mut updater = match updater {
        Ok(updater) => updater,
        Err(err) => {
            write_err(&format!("moltd: error: {}\n", update::chain(&err)));
            return 1;
        }
    };
    let mode = command.mode.unwrap_or(updater.config().mode);
    if mode == Mode::Auto {
        log::info!(
            "MOLTD_MODE=auto: staging only, switching to the staged release is not available yet"
        );
    }
    if command.watch {
        updater.watch(mode);
    }
    match updater.run_once(mode) {
        Ok(ran) => {
            let current = ran.current.as_deref().unwrap_or("nothing installed");
            match (ran.staged, ran.newer) {
                (Some(path), _) => write_out(&format!("{}\n", path.display())),
                (None, Some(newer)) => {
                    let url = newer
                        .release
                        .url
                        .map(|u| format!(": {u}"))
                        .unwrap_or_default();
                    write_out(&format!(
                        "newer release {} available (current: {current}){url}\n",
                        newer.release.tag
                    ));
                }
                (None, None) => write_out(&format!("no newer release (current: {current})\n")),
            }
            0
        }
        // The reporter has logged the error with its causes.
        Err(_) => 1,
    }
}
