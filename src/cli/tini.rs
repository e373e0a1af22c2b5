//! tini's command line, for a `tini` symlink: glibc getopt rules (options may
//! follow the program name until `--`), `-p` takes `SIG`-prefixed names only,
//! and errors are worded as tini words them.

use super::{Env, Outcome, parse_exit_code, tini_level};
use crate::init::policy::{Delivery, JobControl, Rules};
use crate::init::{InitConfig, Isolation, Reaping};
use crate::personality::Personality;
use crate::signals;
use lexopt::prelude::*;
use std::ffi::{OsStr, OsString};
use std::path::Path;

fn usage(argv0: &str) -> String {
    let program = Path::new(argv0)
        .file_name()
        .map_or("tini".into(), |n| n.to_string_lossy());
    format!(
        "{program} (tini version 0.19.0, moltd {version})
Usage: {program} [OPTIONS] PROGRAM -- [ARGS] | --version

Runs PROGRAM as a child process and stands in for init: forwards signals to
it, reaps zombies, and exits with its status.

Command line options:

  --version: Print the version and exit.
  -h: Print this help and exit.
  -s: Register as a child subreaper when not PID 1.
  -p SIGNAL: Receive SIGNAL (a name such as SIGKILL) when the parent dies.
  -v: Say more; up to 3 times.
  -w: Warn about every zombie reaped.
  -g: Forward signals to the child's process group.
  -e EXIT_CODE: Report EXIT_CODE (0 to 255) as 0; repeatable.
  -l: Print the license and exit.

Environment variables:

  TINI_SUBREAPER: Register as a child subreaper when not PID 1.
  TINI_VERBOSITY: The verbosity level (default: 1).
  TINI_KILL_PROCESS_GROUP: Forward signals to the child's process group.

",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// tini's fatal line, with the pid it would show.
fn fatal(text: String) -> Outcome {
    Outcome::stderr(1, format!("[FATAL tini ({})] {text}\n", std::process::id()))
}

pub fn parse(args: Vec<OsString>, env: Env) -> Outcome {
    let program = args
        .first()
        .map_or_else(|| "tini".into(), |a| a.to_string_lossy().into_owned());
    if args.len() == 2 && args[1] == "--version" {
        return Outcome::stdout(format!(
            "tini version 0.19.0 (moltd {})\n",
            env!("CARGO_PKG_VERSION")
        ));
    }
    // getopt's own complaint, then the usage, as tini prints them.
    let getopt_error =
        |what: String| Outcome::stderr(1, format!("{program}: {what}\n{}", usage(&program)));

    let mut subreaper = env("TINI_SUBREAPER").is_some();
    let mut group = env("TINI_KILL_PROCESS_GROUP").is_some();
    let mut verbosity = 1;
    let mut warn_on_reap = false;
    let mut success_codes = Vec::new();
    let mut parent_death_signal = None;
    let mut command = Vec::new();

    let mut parser = lexopt::Parser::from_iter(args.iter().cloned());
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(lexopt::Error::MissingValue { option }) => {
                let letter = option
                    .unwrap_or_default()
                    .trim_start_matches('-')
                    .to_owned();
                return getopt_error(format!("option requires an argument -- '{letter}'"));
            }
            Err(err) => return getopt_error(err.to_string()),
        };
        match arg {
            Short('h') => return Outcome::stdout(usage(&program)),
            Short('l') => return Outcome::stdout(super::moltd::LICENSE),
            Short('s') => subreaper = true,
            Short('g') => group = true,
            Short('w') => warn_on_reap = true,
            Short('v') => verbosity += 1,
            Short('e') | Short('p') => {
                let flag = if arg == Short('e') { 'e' } else { 'p' };
                let value = match parser.value() {
                    Ok(value) => value,
                    Err(_) => {
                        return getopt_error(format!("option requires an argument -- '{flag}'"));
                    }
                };
                let invalid = || {
                    fatal(format!(
                        "Not a valid option for -{flag}: {}",
                        value.to_string_lossy()
                    ))
                };
                if flag == 'e' {
                    match parse_exit_code(&value) {
                        Some(code) => success_codes.push(code),
                        None => return invalid(),
                    }
                } else {
                    match tini_signal(&value) {
                        Some(signal) => parent_death_signal = Some(signal),
                        None => return invalid(),
                    }
                }
            }
            // getopt permutes: operands are collected and parsing goes on.
            Value(operand) => command.push(operand),
            Short(letter) => return getopt_error(format!("invalid option -- '{letter}'")),
            Long(_) => return getopt_error("invalid option -- '-'".into()),
        }
    }
    if command.is_empty() {
        return Outcome::stderr(1, usage(&program));
    }
    // tini reads TINI_VERBOSITY after the flags, and it replaces their count.
    if let Some(value) = env("TINI_VERBOSITY") {
        verbosity = atoi_verbosity(&value.to_string_lossy());
    }
    let config = InitConfig {
        personality: Personality::Tini,
        command,
        isolation: Isolation::NewProcessGroup,
        rules: Rules {
            delivery: if group {
                Delivery::Group
            } else {
                Delivery::Child
            },
            job_control: JobControl::ForwardTstpOnly,
            rewrites: Vec::new(),
            success_codes,
            term_group_on_exit: false,
            forward_faults: false,
        },
        reaping: if subreaper {
            Reaping::Subreaper
        } else {
            Reaping::WarnIfNotPid1
        },
        parent_death_signal,
        warn_on_reap,
    };
    Outcome::Run(config, tini_level(verbosity))
}

/// tini's `-p` takes exactly the `SIG`-prefixed upper-case names of its own
/// table, which lacks STKFLT, IO and PWR.
fn tini_signal(value: &OsStr) -> Option<i32> {
    let text = value.to_str()?;
    let bare = text.strip_prefix("SIG")?;
    let known =
        bare.chars().all(|c| c.is_ascii_uppercase()) && !["STKFLT", "IO", "PWR"].contains(&bare);
    known.then(|| signals::parse(text)).flatten()
}

/// tini reads its verbosity with `atoi` into an unsigned number: leading
/// digits count, garbage is 0, and a negative number means "everything".
fn atoi_verbosity(text: &str) -> u32 {
    let text = text.trim_start();
    if text.starts_with('-') && text[1..].starts_with(|c: char| c.is_ascii_digit() && c != '0') {
        return u32::MAX;
    }
    let digits: String = text
        .trim_start_matches('+')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or(if digits.is_empty() { 0 } else { u32::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_is_read_like_atoi() {
        let table = [
            ("2", 2),
            ("2x", 2),
            ("abc", 0),
            ("", 0),
            ("-1", u32::MAX),
            (" 3", 3),
            ("+4", 4),
        ];
        for (text, expected) in table {
            assert_eq!(atoi_verbosity(text), expected, "{text:?}");
        }
    }
}
