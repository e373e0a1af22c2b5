//! moltd's own command line: the union of tini's and dumb-init's flags where
//! they do not clash, with dumb-init's defaults (see the README for why).

use super::{
    Env, Outcome, control_socket, job_control_rewrites, parse_exit_code, parse_rewrite, truthy,
};
use crate::init::policy::{Delivery, JobControl, Rules};
use crate::init::{InitConfig, Isolation, Reaping};
use crate::personality::Personality;
use crate::secrets;
use crate::services::{self, ServicesConfig, Settings};
use crate::signals;
use crate::update;
use lexopt::prelude::*;
use log::LevelFilter;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HELP: &str = "\
moltd: a container PID 1 that reaps zombies and forwards signals.

Usage: moltd [OPTIONS] [--] COMMAND [ARGS...]
       moltd [OPTIONS] --services DIR [[--] COMMAND [ARGS...]]
       moltd [--control PATH] sv [-v] [-w SEC] VERB SERVICE...
       moltd [--control PATH] status [SERVICE...]
       moltd [--control PATH] update [--check | --force | --stage-only]
       moltd [--control PATH] rollback
       moltd [--control PATH] unmark TAG...
       moltd [--control PATH] self-update [--force] FILE
       moltd [OPTIONS] config
       moltd help [env]

Runs COMMAND as its child, forwards signals to it and exits with its status
(128+N when it dies of signal N). With a services directory (and with no
COMMAND at all, /etc/service), it also supervises every service folder in it
runit-style; `sv` and `status` control them through the control socket.

Options:
      --services DIR         supervise the service folders in DIR
      --control PATH         the control socket (default /run/moltd/control.sock)
  -c, --single-child         forward signals to the child only, and keep it in
                             moltd's session (default: its whole process group,
                             in a session of its own)
  -g, --group                forward signals to the child's process group (default)
  -r, --rewrite S:R          forward signal S as signal R; R=0 drops S (repeatable)
  -e, --success-exit CODE    report the child's exit code CODE as 0 (repeatable)
  -s, --subreaper            reap orphans when not PID 1 (always on: accepted for tini)
  -p, --parent-death-signal SIGNAL
                             receive SIGNAL when moltd's parent dies
  -w, --warn-on-reap         warn about every zombie reaped that was not the child
  -v, --verbose              say more (repeat for more)
  -V, --version              print the version and exit
  -h, --help                 print this help and exit
  -l, --license              print the license and exit

Environment: `moltd help env` lists every variable, briefly. The ones that
matter most: MOLTD_REPO=owner/repo (or GH_USER and GH_REPO) turns updates
on, MOLTD_INTERVAL (or SLEEP) spaces the checks, GITHUB_TOKEN or
MOLTD_TOKEN_FILE authenticates them, MOLTD_LOG (or VERBOSE=1) sets how much
moltd says, SVWAIT how long a stopping service gets. `moltd config` prints
what moltd will do with them, where each value came from, and warnings
about settings that do nothing.
Installed as `tini` or `dumb-init` (a symlink), moltd behaves as that program.
";

pub const LICENSE: &str = "moltd is distributed under the MIT license.\n";

fn usage_error(problem: impl std::fmt::Display) -> Outcome {
    Outcome::stderr(1, format!("moltd: error: {problem} (see 'moltd --help')\n"))
}

/// Parses moltd's command line; `names` are the names in the environment
/// (for `moltd config`'s warnings about unknown ones).
pub fn parse(args: Vec<OsString>, env: Env, names: &[OsString]) -> Outcome {
    match parse_args(args, env, names) {
        Ok(outcome) => outcome,
        Err(err) => usage_error(err),
    }
}

fn parse_args(args: Vec<OsString>, env: Env, names: &[OsString]) -> Result<Outcome, lexopt::Error> {
    let mut single_child = env("DUMB_INIT_SETSID").is_some_and(|v| v == "0");
    let mut user_rewrites = Vec::new();
    let mut success_codes = Vec::new();
    let mut parent_death_signal = None;
    let mut warn_on_reap = false;
    let mut verbose = 0u32;
    let mut services_dir = env("MOLTD_SERVICES").map(PathBuf::from);
    let mut services_flag = false;
    let mut control = None;
    let mut command = Vec::new();
    // Whether `--` came before the first operand: `moltd -- status` runs a
    // program named status, `moltd status` is the subcommand.
    let mut after_dashes = false;

    let mut parser = lexopt::Parser::from_iter(args);
    loop {
        if let Some(raw) = parser.try_raw_args() {
            after_dashes |= raw.peek() == Some("--".as_ref());
        }
        let Some(arg) = parser.next()? else {
            break;
        };
        match arg {
            Long("services") => {
                services_dir = Some(parser.value()?.into());
                services_flag = true;
            }
            Long("control") => control = Some(parser.value()?.into()),
            Short('c') | Long("single-child") => single_child = true,
            Short('g') | Long("group") => single_child = false,
            Short('s') | Long("subreaper") => {}
            Short('w') | Long("warn-on-reap") => warn_on_reap = true,
            Short('v') | Long("verbose") => verbose += 1,
            Short('r') | Long("rewrite") => {
                let value = parser.value()?;
                let pair = parse_rewrite(&value).ok_or_else(|| {
                    format!("bad rewrite {value:?}: expected S:R with S in 1-31 and R in 0-31")
                })?;
                user_rewrites.push(pair);
            }
            Short('e') | Long("success-exit") => {
                let value = parser.value()?;
                let code = parse_exit_code(&value)
                    .ok_or_else(|| format!("bad exit code {value:?}: expected 0-255"))?;
                success_codes.push(code);
            }
            Short('p') | Long("parent-death-signal") => {
                let value = parser.value()?;
                let signal = value.to_str().and_then(signals::parse);
                parent_death_signal = Some(
                    signal
                        .ok_or_else(|| format!("bad signal {value:?}: expected a name or 1-64"))?,
                );
            }
            Short('V') | Long("version") => {
                return Ok(Outcome::stdout(format!(
                    "moltd {}\n",
                    crate::version::version()
                )));
            }
            Short('h') | Long("help") => return Ok(Outcome::stdout(HELP)),
            Short('l') | Long("license") => return Ok(Outcome::stdout(LICENSE)),
            Value(first) => {
                command.push(first);
                command.extend(parser.raw_args()?);
                break;
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let subcommand = command.first().filter(|_| !after_dashes).cloned();
    let socket = || control_socket(control.clone(), env);
    match subcommand.as_ref().and_then(|c| c.to_str()) {
        Some("sv") => {
            return Ok(Outcome::Sv {
                args: command.split_off(1),
                socket: socket(),
            });
        }
        Some("status") => {
            return Ok(Outcome::Status {
                names: command.split_off(1),
                socket: socket(),
            });
        }
        Some("update") => {
            return Ok(super::update::parse(command.split_off(1), socket(), env));
        }
        Some("rollback") => return Ok(Outcome::Rollback { socket: socket() }),
        Some("self-update") => {
            return Ok(super::self_update::parse(command.split_off(1), socket()));
        }
        Some("unmark") => {
            return Ok(super::update::parse_unmark(command.split_off(1), socket()));
        }
        Some("help") => {
            return match command.get(1).and_then(|t| t.to_str()) {
                None if command.len() == 1 => Ok(Outcome::stdout(HELP)),
                Some("env") if command.len() == 2 => Ok(Outcome::stdout(super::vars::help())),
                _ => Err(
                    format!("help takes env or nothing, got {:?}", command[1..].to_vec()).into(),
                ),
            };
        }
        Some("config") if command.len() > 1 => {
            return Err(format!("config takes no operands, got {:?}", command[1]).into());
        }
        Some("config") => command.clear(),
        _ => {}
    }
    // Checked at every start, so a typo fails here rather than later.
    log_format(env)?;
    let observe = crate::observe::Config::from_env(env).map_err(|err| update::chain(&err))?;
    let withheld = secrets::withheld(env).map_err(|err| err.to_string())?;
    // The update agent's; checked here so that a typo fails at start.
    crate::confinement::Settings::from_env(env).map_err(|err| update::chain(&err))?;

    let level = log_level(verbose, env, LevelFilter::Warn)?;
    let (isolation, delivery, mut rewrites) = if single_child {
        (Isolation::NewProcessGroup, Delivery::Child, Vec::new())
    } else {
        (
            Isolation::NewSession,
            Delivery::Group,
            job_control_rewrites(),
        )
    };
    rewrites.extend(user_rewrites);
    let config = InitConfig {
        personality: Personality::Moltd,
        command: command.clone(),
        isolation,
        rules: Rules {
            delivery,
            job_control: JobControl::ForwardThenStop,
            rewrites,
            success_codes,
            term_group_on_exit: !single_child,
            forward_faults: false,
        },
        reaping: Reaping::Subreaper,
        parent_death_signal,
        warn_on_reap,
    };
    let mut updates = match update::Config::from_env(env) {
        Ok(updates) => Some(updates),
        Err(update::Error::NoSource) => None,
        Err(err) => return Err(update::chain(&err).into()),
    };
    // `moltd -- /app/current/bin/server`: each release must hold bin/server,
    // as if MOLTD_ENTRY said so.
    if let (Some(updates), Some(program)) = (updates.as_mut(), command.first()) {
        let below = Path::new(program).strip_prefix(updates.app_dir.join("current"));
        let entry = below
            .ok()
            .and_then(|p| update::unpack::entry_path(p, 0).ok().flatten());
        updates.entry = updates.entry.take().or(entry);
    }
    // With updates (the app's, or moltd's own only), a lone command runs
    // under the supervisor, which can stop and start it for an update, or
    // replace itself, without exiting.
    if command.is_empty() || services_dir.is_some() || updates.is_some() {
        let settings = Settings {
            svwait: seconds_from(env, "SVWAIT", services::DEFAULT_SVWAIT, 0)?,
            backoff_max: seconds_from(env, "MOLTD_BACKOFF_MAX", services::DEFAULT_BACKOFF_MAX, 1)?,
            ready_grace: ready_grace(env)?,
        };
        let dir = match (services_dir, command.is_empty()) {
            (None, true) => Some(services::DEFAULT_DIR.into()),
            (dir, _) => dir,
        };
        let services = ServicesConfig {
            dir,
            control: socket(),
            settings,
            main: (!command.is_empty()).then_some(config),
            updates,
            observe,
            withheld,
            hold_sockets: held_sockets(env)?,
        };
        if subcommand.is_some_and(|c| c == "config") {
            let mut flags = Vec::new();
            if let Some(dir) = services.dir.as_ref().filter(|_| services_flag) {
                flags.push(("MOLTD_SERVICES", dir.display().to_string()));
            }
            if control.is_some() {
                flags.push(("MOLTD_CONTROL", services.control.display().to_string()));
            }
            if verbose > 0 {
                flags.push(("MOLTD_LOG", level.to_string().to_lowercase()));
            }
            let report = super::config::report(env, names, &services, level, &flags);
            return Ok(Outcome::stdout(report));
        }
        return Ok(Outcome::Services(Box::new(services), level));
    }
    Ok(Outcome::Run(config, level))
}

/// `MOLTD_LOG_FORMAT`: true for one JSON object per line.
pub(super) fn log_format(env: Env) -> Result<bool, String> {
    match env("MOLTD_LOG_FORMAT").as_ref().and_then(|v| v.to_str()) {
        None | Some("" | "human" | "text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(format!(
            "bad MOLTD_LOG_FORMAT {other:?}: expected human or json"
        )),
    }
}

/// The log level: from `-v` flags, else `MOLTD_LOG`, else `VERBOSE`, else
/// `default`.
pub(super) fn log_level(
    verbose: u32,
    env: Env,
    default: LevelFilter,
) -> Result<LevelFilter, String> {
    Ok(match env("MOLTD_LOG") {
        _ if verbose > 0 => level_for_verbose(verbose),
        Some(name) => match name.to_str().and_then(|n| n.parse().ok()) {
            Some(level) => level,
            None => {
                return Err(format!(
                    "bad MOLTD_LOG {name:?}: expected error, warn, info, debug or trace"
                ));
            }
        },
        None if env("VERBOSE").is_some_and(|v| truthy(&v)) => LevelFilter::Debug,
        None => default,
    })
}

/// Reads a whole number of seconds, at least `min`, from the environment.
fn seconds_from(
    env: Env,
    name: &str,
    default: Duration,
    min: u64,
) -> Result<Duration, lexopt::Error> {
    let Some(value) = env(name) else {
        return Ok(default);
    };
    match value.to_str().and_then(|v| v.parse::<u64>().ok()) {
        Some(secs) if secs >= min => Ok(Duration::from_secs(secs)),
        _ => Err(format!("bad {name} {value:?}: expected whole seconds, at least {min}").into()),
    }
}

/// `MOLTD_HELD_SOCKETS`: `off` ignores every `listen` file, for an image
/// whose service folders hold one but whose app binds its port itself.
fn held_sockets(env: Env) -> Result<bool, lexopt::Error> {
    match env("MOLTD_HELD_SOCKETS").as_ref().map(|v| v.to_str()) {
        None | Some(Some("on")) => Ok(true),
        Some(Some("off")) => Ok(false),
        Some(value) => Err(format!(
            "bad MOLTD_HELD_SOCKETS {:?}: expected on or off",
            value.unwrap_or("(not UTF-8)")
        )
        .into()),
    }
}

/// `MOLTD_READY_GRACE`: how long a service with no other way to say it is
/// ready must stay up (`500ms`, `2s`; `0` makes it ready once it runs).
fn ready_grace(env: Env) -> Result<Duration, lexopt::Error> {
    let Some(value) = env("MOLTD_READY_GRACE") else {
        return Ok(services::DEFAULT_READY_GRACE);
    };
    value
        .to_str()
        .and_then(crate::update::config::parse_duration)
        .ok_or_else(|| {
            format!("bad MOLTD_READY_GRACE {value:?}: expected a duration such as 1s or 500ms")
                .into()
        })
}

fn level_for_verbose(count: u32) -> LevelFilter {
    match count {
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// `moltd agent` (hidden from the help): the update agent, which a
/// supervising moltd starts with its link on descriptor 3 and its own log
/// level in `MOLTD_LOG`. Returns its exit code.
pub fn agent(env: Env) -> i32 {
    // First, before anything opens a file over the passed descriptors.
    let passed = crate::agent::take_passed();
    let level = log_level(0, env, LevelFilter::Warn).unwrap_or(LevelFilter::Warn);
    let json = log_format(env).unwrap_or(false);
    crate::logging::init(Personality::Moltd, level, json);
    let outcome = passed.and_then(|passed| {
        let config = agent_config(env).map_err(crate::agent::AgentError::Start)?;
        crate::agent::run(passed, config)
    });
    crate::agent::exit_code(outcome)
}

/// The agent's settings, from the environment PID 1 was started with (the
/// same checks PID 1 made, so they pass).
fn agent_config(env: Env) -> Result<crate::agent::Config, String> {
    let updates = match update::Config::from_env(env) {
        Ok(updates) => Some(updates),
        Err(update::Error::NoSource) => None,
        Err(err) => return Err(update::chain(&err)),
    };
    Ok(crate::agent::Config {
        updates,
        observe: crate::observe::Config::from_env(env).map_err(|err| update::chain(&err))?,
        svwait: seconds_from(env, "SVWAIT", services::DEFAULT_SVWAIT, 0)
            .map_err(|err| err.to_string())?,
        confine: crate::confinement::Settings::from_env(env).map_err(|err| update::chain(&err))?,
    })
}
