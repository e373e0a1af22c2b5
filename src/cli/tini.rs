//! tini's command line, for a `tini` symlink: glibc getopt rules (options may
//! follow the program name until `--`, unless `POSIXLY_CORRECT` is set, which
//! ends them at the program name), `-p` takes `SIG`-prefixed names only, and
//! errors are worded as tini words them.

use super::{Env, Outcome, tini_level};
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
        version = crate::version::version()
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
            crate::version::version()
        ));
    }
    // getopt's own complaint, then the usage, as tini prints them.
    let getopt_error =
        |what: String| Outcome::stderr(1, format!("{program}: {what}\n{}", usage(&program)));

    let posixly_correct = env("POSIXLY_CORRECT").is_some();
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
                    match tini_exit_code(&value) {
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
            // glibc's getopt permutes: operands are collected and parsing
            // goes on, unless POSIXLY_CORRECT asks it to stop at the first.
            Value(operand) => {
                command.push(operand);
                if posixly_correct {
                    command.extend(parser.raw_args().into_iter().flatten());
                    break;
                }
            }
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
/// table, which is Linux's signals 1 to 31 less STKFLT, IO and PWR; numbers,
/// bare names and other cases are refused.
fn tini_signal(value: &OsStr) -> Option<i32> {
    let bare = value.to_str()?.strip_prefix("SIG")?;
    if ["STKFLT", "IO", "PWR"].contains(&bare) {
        return None;
    }
    signals::by_name(bare)
}

/// tini reads `-e` with `strtol` in base 10 and wants nothing after the
/// number: leading white space and one sign are allowed (so `-0` is 0), and
/// an empty value, where `strtol` stops at once, is 0.
fn tini_exit_code(value: &OsStr) -> Option<u8> {
    let text = value.to_str()?;
    if text.is_empty() {
        return Some(0);
    }
    let signed = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match signed.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, signed.strip_prefix('+').unwrap_or(signed)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too long for u64 is far out of range all the same.
    let number: u64 = digits.parse().ok()?;
    if negative && number != 0 {
        return None;
    }
    u8::try_from(number).ok()
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
    fn exit_codes_are_read_like_strtol() {
        // Recorded from tini 0.19: accepted values and what they stand for.
        let table = [
            ("0", Some(0)),
            ("255", Some(255)),
            ("007", Some(7)),
            ("+1", Some(1)),
            (" +2", Some(2)),
            ("\t3", Some(3)),
            ("-0", Some(0)),
            ("", Some(0)),
            ("256", None),
            ("-1", None),
            ("1 ", None),
            ("1x", None),
            ("0x1", None),
            (" ", None),
            ("+", None),
            ("-", None),
            ("+-1", None),
            ("99999999999999999999", None),
        ];
        for (text, expected) in table {
            assert_eq!(tini_exit_code(OsStr::new(text)), expected, "{text:?}");
        }
    }

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
