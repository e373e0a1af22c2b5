//! Turning argv and the environment into something to run.
//!
//! Each personality has its own parser, because tini and dumb-init disagree on
//! option syntax, defaults and error wording; they all produce the same
//! [`InitConfig`], so the runtime has one code path.

mod dumb_init;
mod moltd;
mod sv;
mod tini;
mod update;

use crate::init::{self, InitConfig};
use crate::logging;
use crate::personality::Personality;
use crate::services::{self, ServicesConfig};
use log::LevelFilter;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Run a command as PID 1.
    Run(InitConfig, LevelFilter),
    /// Run `moltd update`.
    Update(update::UpdateCommand),
    /// Supervise a services directory, maybe beside a command.
    Services(Box<ServicesConfig>, LevelFilter),
    /// Be an `sv` client of the supervisor listening on `socket`.
    Sv {
        args: Vec<OsString>,
        socket: PathBuf,
    },
    /// Ask the supervisor listening on `socket` to roll back.
    Rollback { socket: PathBuf },
    /// Print the status table of the supervisor listening on `socket`.
    Status {
        names: Vec<OsString>,
        socket: PathBuf,
    },
    /// Print something (help, version, or a usage error) and exit.
    Exit {
        code: i32,
        stdout: String,
        stderr: String,
    },
}

impl Outcome {
    fn stdout(text: impl Into<String>) -> Outcome {
        Outcome::Exit {
            code: 0,
            stdout: text.into(),
            stderr: String::new(),
        }
    }

    fn stderr(code: i32, text: impl Into<String>) -> Outcome {
        Outcome::Exit {
            code,
            stdout: String::new(),
            stderr: text.into(),
        }
    }
}

/// Reads one environment variable; a parameter so parsers can be tested
/// without touching the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// moltd's whole life: parse, then run. Returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let argv0 = args.first().cloned().unwrap_or_default();
    let personality = Personality::from_argv0(&argv0);
    let env = |name: &str| std::env::var_os(name);
    if Path::new(&argv0).file_name() == Some(OsStr::new("sv")) {
        let args = args.into_iter().skip(1).collect();
        return sv::sv(args, &control_socket(None, &env), &env);
    }
    let outcome = match personality {
        Personality::Moltd => moltd::parse(args, &env),
        Personality::Tini => tini::parse(args, &env),
        Personality::DumbInit => dumb_init::parse(args, &env),
    };
    match outcome {
        Outcome::Run(config, level) => {
            logging::init(personality, level);
            init::run(config)
        }
        Outcome::Update(command) => {
            logging::init(personality, command.level);
            update::run(command)
        }
        Outcome::Services(config, level) => {
            logging::init(personality, level);
            services::run(*config)
        }
        Outcome::Sv { args, socket } => sv::sv(args, &socket, &env),
        Outcome::Status { names, socket } => sv::status(names, &socket),
        Outcome::Rollback { socket } => update::rollback(&socket),
        Outcome::Exit {
            code,
            stdout,
            stderr,
        } => {
            print!("{stdout}");
            eprint!("{stderr}");
            code
        }
    }
}

/// The control socket: the `--control` flag, else `MOLTD_CONTROL`, else the
/// default.
fn control_socket(flag: Option<PathBuf>, env: Env) -> PathBuf {
    flag.or_else(|| env("MOLTD_CONTROL").map(PathBuf::from))
        .unwrap_or_else(|| services::DEFAULT_CONTROL.into())
}

/// Parses an exit code for tini's `-e`: 0 to 255.
fn parse_exit_code(text: &OsStr) -> Option<u8> {
    text.to_str()?.parse().ok()
}

/// True for the usual spellings of "yes" in environment variables.
fn truthy(value: &OsStr) -> bool {
    matches!(
        value.to_str().map(str::to_ascii_lowercase).as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

/// Maps a tini-style verbosity (1 = warnings, the default) to a log level.
fn tini_level(verbosity: u32) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::Error,
        1 => LevelFilter::Warn,
        2 => LevelFilter::Info,
        3 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Parses dumb-init's `s:r` rewrite: both signals 1-31, `r = 0` drops `s`.
fn parse_rewrite(text: &OsStr) -> Option<(i32, i32)> {
    let (from, to) = text.to_str()?.split_once(':')?;
    let from: i32 = from.parse().ok()?;
    let to: i32 = to.parse().ok()?;
    ((1..=31).contains(&from) && (0..=31).contains(&to)).then_some((from, to))
}

/// The default rewrites of group mode: a stopped group in an orphaned session
/// would ignore TSTP, TTIN and TTOU, so they are sent as STOP.
fn job_control_rewrites() -> Vec<(i32, i32)> {
    use nix::libc::{SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU};
    vec![(SIGTSTP, SIGSTOP), (SIGTTIN, SIGSTOP), (SIGTTOU, SIGSTOP)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_syntax() {
        let table = [
            ("15:10", Some((15, 10))),
            ("15:0", Some((15, 0))),
            ("31:1", Some((31, 1))),
            ("15:99", None),
            ("99:1", None),
            ("0:1", None),
            ("abc", None),
            ("15", None),
            ("15:", None),
            (":15", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_rewrite(OsStr::new(text)), expected, "{text}");
        }
    }

    #[test]
    fn exit_code_syntax() {
        let table = [
            ("0", Some(0)),
            ("255", Some(255)),
            ("256", None),
            ("-1", None),
            ("x", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_exit_code(OsStr::new(text)), expected, "{text}");
        }
    }
}
