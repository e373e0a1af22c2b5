//! Turning argv and the environment into something to run.
//!
//! Each personality has its own parser, because tini and dumb-init disagree on
//! option syntax, defaults and error wording; they all produce the same
//! [`InitConfig`], so the runtime has one code path.

mod config;
mod dumb_init;
mod moltd;
mod self_update;
mod sv;
mod tini;
mod update;
mod vars;

use crate::init::{self, InitConfig};
use crate::logging;
use crate::personality::Personality;
use crate::services::client::{self, Control};
use crate::services::{self, ServicesConfig};
use crate::sys::signals::Inherited;
use log::LevelFilter;
use std::ffi::{OsStr, OsString};
use std::io::Write;
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
    /// Clear the bad mark of `tags`, through the supervisor if one answers.
    Unmark { tags: Vec<String>, socket: PathBuf },
    /// Ask the supervisor listening on `socket` to replace itself.
    SelfUpdate {
        request: crate::control::SelfUpdate,
        socket: PathBuf,
    },
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

pub use crate::Env;

/// moltd's whole life: parse, then run. Returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let argv0 = args.first().cloned().unwrap_or_default();
    let personality = Personality::from_argv0(&argv0);
    let env = |name: &str| std::env::var_os(name);
    if Path::new(&argv0).file_name() == Some(OsStr::new("sv")) {
        let args = args.into_iter().skip(1).collect();
        return sv::sv(args, control_socket(None, &env), &env);
    }
    if personality == Personality::Moltd && args.get(1).is_some_and(|a| a == "agent") {
        return moltd::agent(&env);
    }
    // Hidden: a candidate binary proving itself to the PID 1 that runs it.
    let self_test = crate::services::reexec::SELF_TEST;
    if personality == Personality::Moltd && args.get(1).is_some_and(|a| a == self_test) {
        return crate::services::reexec::self_test(&args[2..]);
    }
    // Hidden: a self-update's new PID 1 (or the previous one, falling back).
    let (args, resume) = match personality {
        Personality::Moltd => resume_args(args),
        _ => (args, None),
    };
    let control = |socket| {
        client_control(socket, &env).inspect_err(|problem| {
            write_err(&format!("moltd: error: {problem}\n"));
        })
    };
    // Block signals before parsing: as PID 1, a signal that arrives while
    // nothing waits for it would be lost. Client commands get them back.
    let inherited = match Inherited::capture_and_block() {
        Ok(inherited) => inherited,
        Err(err) => {
            write_err(&format!(
                "moltd: error: cannot block signals: {}\n",
                err.desc()
            ));
            return 1;
        }
    };
    let outcome = match personality {
        Personality::Moltd => moltd::parse(args, &env, &env_names()),
        Personality::Tini => tini::parse(args, &env),
        Personality::DumbInit => dumb_init::parse(args, &env),
    };
    if matches!(outcome, Outcome::Run(..)) {
        // From here on moltd is an init for as long as the container runs:
        // the code of start-up need not stay resident. A supervisor drops
        // it once its own start-up is over too (services::runner).
        crate::sys::mem::drop_start_up_pages();
    }
    // Checked during parsing; tini and dumb-init keep their own formats.
    let json = personality == Personality::Moltd && moltd::log_format(&env).unwrap_or(false);
    match outcome {
        Outcome::Run(config, level) => {
            logging::init(personality, level, json);
            warn_about_config(personality, &env, false);
            if personality == Personality::DumbInit {
                dumb_init::announce(&env);
            }
            init::run(config, inherited)
        }
        Outcome::Services(config, level) => {
            logging::init(personality, level, json);
            if let Some((fd, fallback)) = resume {
                return services::resume(*config, fd, fallback);
            }
            warn_about_config(personality, &env, config.updates_app());
            services::run(*config, inherited)
        }
        Outcome::Update(command) => {
            inherited.restore();
            logging::init(personality, command.level, json);
            control(command.socket.clone()).map_or(1, |c| update::run(command, &c))
        }
        Outcome::Sv { args, socket } => {
            inherited.restore();
            sv::sv(args, socket, &env)
        }
        Outcome::Status { names, socket } => {
            inherited.restore();
            control(socket).map_or(1, |c| sv::status(names, &c))
        }
        Outcome::Rollback { socket } => {
            inherited.restore();
            control(socket).map_or(1, |c| update::rollback(&c))
        }
        Outcome::SelfUpdate { request, socket } => {
            inherited.restore();
            control(socket).map_or(1, |c| self_update::run(&request, &c))
        }
        Outcome::Unmark { tags, socket } => {
            inherited.restore();
            control(socket).map_or(1, |c| update::unmark(&tags, &c, &env))
        }
        Outcome::Exit {
            code,
            stdout,
            stderr,
        } => {
            write_out(&stdout);
            write_err(&stderr);
            code
        }
    }
}

/// Takes `--resume FD [--fallback WHY]` off the front of moltd's arguments:
/// the rest are those the first moltd was given.
fn resume_args(mut args: Vec<OsString>) -> (Vec<OsString>, Option<(i32, Option<String>)>) {
    use crate::services::reexec::{FALLBACK_FLAG, RESUME_FLAG};
    if args.get(1).is_none_or(|a| a != RESUME_FLAG) {
        return (args, None);
    }
    let Some(fd) = args.get(2).and_then(|a| a.to_str()?.parse().ok()) else {
        return (args, None);
    };
    args.drain(1..3);
    let mut fallback = None;
    if args.get(1).is_some_and(|a| a == FALLBACK_FLAG) && args.len() > 2 {
        fallback = Some(args[2].to_string_lossy().into_owned());
        args.drain(1..3);
    }
    (args, Some((fd, fallback)))
}

/// The names in moltd's environment.
fn env_names() -> Vec<OsString> {
    std::env::vars_os().map(|(name, _)| name).collect()
}

/// Logs, once at start, what `moltd config` warns about (moltd's own
/// personality only: tini and dumb-init read none of these).
fn warn_about_config(personality: Personality, env: Env, updates: bool) {
    if personality == Personality::Moltd {
        for warning in config::warnings(env, &env_names(), updates) {
            log::warn!("{warning}");
        }
    }
}

/// The control socket: the `--control` flag, else `MOLTD_CONTROL`, else the
/// default.
fn control_socket(flag: Option<PathBuf>, env: Env) -> PathBuf {
    flag.or_else(|| env("MOLTD_CONTROL").map(PathBuf::from))
        .unwrap_or_else(|| services::DEFAULT_CONTROL.into())
}

/// The control socket with the clients' timeouts from the environment
/// (`MOLTD_CLIENT_TIMEOUT`, `MOLTD_CLIENT_WAIT`), or why one is bad.
fn client_control(socket: PathBuf, env: Env) -> Result<Control, String> {
    let mut control = Control::new(socket);
    for (var, slot) in [
        (client::TIMEOUT_VAR, &mut control.timeout),
        (client::WAIT_VAR, &mut control.wait),
    ] {
        if let Some(text) = env(var) {
            *slot = text
                .to_str()
                .and_then(crate::update::config::parse_duration)
                .filter(|d| !d.is_zero() && *d <= client::MAX_TIMEOUT)
                .ok_or_else(|| {
                    format!(
                        "bad {var} {text:?}: expected a duration such as 5s or 500ms, at most 168h"
                    )
                })?;
        }
    }
    Ok(control)
}

/// Says why the supervisor did not answer a client; returns the exit code.
fn client_failed(err: &client::ClientError, control: &Control) -> i32 {
    write_err(&format!(
        "moltd: error: {err} ({})\n",
        control.socket.display()
    ));
    1
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

/// Parses dumb-init's `s:r` rewrite the way its `sscanf("%d:%d")` does
/// (leading blanks and a sign allowed, trailing text ignored): `s` in 1-31,
/// `r` in 0-31, and `r = 0` drops `s`.
fn parse_rewrite(text: &OsStr) -> Option<(i32, i32)> {
    /// One `%d` as glibc reads it: skips blanks, takes a sign and digits
    /// as a saturated 64-bit number, keeps its low 32 bits (so 4294967297
    /// reads as 1, as dumb-init 1.2.5 takes it), returns the rest.
    fn scan_int(text: &str) -> Option<(i32, &str)> {
        let text = text.trim_start();
        let sign_len = usize::from(text.starts_with(['+', '-']));
        let digits = text[sign_len..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let (number, rest) = text.split_at(sign_len + digits);
        let wide = match number.parse::<i64>() {
            Ok(wide) => wide,
            Err(_) if digits == 0 => return None,
            Err(_) if number.starts_with('-') => i64::MIN,
            Err(_) => i64::MAX,
        };
        Some((wide as i32, rest))
    }
    let (from, rest) = scan_int(text.to_str()?)?;
    let (to, _) = scan_int(rest.strip_prefix(':')?)?;
    ((1..=31).contains(&from) && (0..=31).contains(&to)).then_some((from, to))
}

/// The default rewrites of group mode: a stopped group in an orphaned session
/// would ignore TSTP, TTIN and TTOU, so they are sent as STOP.
fn job_control_rewrites() -> Vec<(i32, i32)> {
    use nix::libc::{SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU};
    vec![(SIGTSTP, SIGSTOP), (SIGTTIN, SIGSTOP), (SIGTTOU, SIGSTOP)]
}

/// Writes to stdout, ignoring a closed or full stream: output that goes
/// nowhere is not worth a crash (`print!` would panic, and panics abort).
fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes to stderr, ignoring failures, for the same reason as [`write_out`].
fn write_err(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
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
            (" 15:10", Some((15, 10))),
            ("+15:10", Some((15, 10))),
            ("15:10x", Some((15, 10))),
            ("15:10:3", Some((15, 10))),
            ("15: 10", Some((15, 10))),
            ("15 :10", None),
            ("15:99", None),
            ("99:1", None),
            ("0:1", None),
            ("-1:10", None),
            ("abc", None),
            ("TERM:USR1", None),
            ("15", None),
            ("15:", None),
            (":15", None),
            // Recorded from dumb-init 1.2.5 (Debian): glibc keeps the low
            // 32 bits of an oversized number.
            ("4294967297:1", Some((1, 1))),
            ("99999999999:1", None),
            ("99999999999999999999:1", None),
            ("0x1:2", None),
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

    #[test]
    fn client_timeouts_from_the_environment() {
        let control = |timeout: Option<&str>, wait: Option<&str>| {
            let env = |name: &str| match name {
                "MOLTD_CLIENT_TIMEOUT" => timeout.map(OsString::from),
                "MOLTD_CLIENT_WAIT" => wait.map(OsString::from),
                _ => None,
            };
            client_control(PathBuf::from("/s"), &env)
        };
        let defaults = control(None, None).unwrap();
        assert_eq!(defaults.timeout, client::DEFAULT_TIMEOUT);
        assert_eq!(defaults.wait, client::DEFAULT_WAIT);
        let set = control(Some("500ms"), Some("10m")).unwrap();
        assert_eq!(set.timeout, std::time::Duration::from_millis(500));
        assert_eq!(set.wait, std::time::Duration::from_secs(600));
        for bad in ["0", "soon", "169h", "-1s"] {
            let err = control(Some(bad), None).unwrap_err();
            assert!(err.starts_with("bad MOLTD_CLIENT_TIMEOUT"), "{err}");
            let err = control(None, Some(bad)).unwrap_err();
            assert!(err.starts_with("bad MOLTD_CLIENT_WAIT"), "{err}");
        }
    }
}
