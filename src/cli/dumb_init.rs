//! dumb-init's command line, for a `dumb-init` symlink: options stop at the
//! first operand, `-r s:r` rewrites, `DUMB_INIT_SETSID` and `DUMB_INIT_DEBUG`,
//! and errors worded as dumb-init words them.

use super::{Env, Outcome, job_control_rewrites, parse_rewrite};
use crate::init::policy::{Delivery, JobControl, Rules};
use crate::init::{InitConfig, Isolation, Reaping};
use crate::personality::Personality;
use lexopt::prelude::*;
use log::LevelFilter;
use std::ffi::OsString;

fn help() -> String {
    format!(
        "dumb-init v1.2.5 (moltd {})
Usage: dumb-init [option] command [[arg] ...]

Runs command as a child and stands in for init: proxies signals to it (and to
its process group), reaps zombies, and exits with its status.

Optional arguments:
   -c, --single-child   Proxy signals to the direct child only, and do not
                        start it in a session of its own.
   -r, --rewrite s:r    Proxy received signal s as signal r; r = 0 drops s.
                        Repeatable.
   -v, --verbose        Print debugging information to stderr.
   -h, --help           Print this help and exit.
   -V, --version        Print the version and exit.
",
        crate::version::version()
    )
}

/// `DUMB_INIT_DEBUG=1` turns debug output on.
fn debug_from_env(env: Env) -> bool {
    env("DUMB_INIT_DEBUG").is_some_and(|v| v == "1")
}

/// `DUMB_INIT_SETSID=0` turns setsid mode off.
fn no_setsid_from_env(env: Env) -> bool {
    env("DUMB_INIT_SETSID").is_some_and(|v| v == "0")
}

/// The debug lines dumb-init prints about its environment before it starts
/// anything (once logging is set up).
pub fn announce(env: Env) {
    if debug_from_env(env) {
        log::debug!("Running in debug mode.");
    }
    if no_setsid_from_env(env) {
        log::debug!("Not running in setsid mode.");
    }
}

/// A malformed `-r` value; exit code 1 and stderr, as dumb-init.
const REWRITE_USAGE: &str = "dumb-init: -r wants two signal numbers as s:r, \
s from 1 to 31 and r from 0 to 31 (0 drops s); -r may be repeated, see --help\n";

pub fn parse(args: Vec<OsString>, env: Env) -> Outcome {
    let mut setsid = !no_setsid_from_env(env);
    let mut debug = debug_from_env(env);
    let mut user_rewrites = Vec::new();
    let mut command = Vec::new();

    let mut parser = lexopt::Parser::from_iter(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(err) => return Outcome::stderr(1, format!("dumb-init: {err}\n")),
        };
        // getopt_long accepts any unambiguous prefix of a long option.
        let arg = match arg {
            Long(name) => match long_option(name) {
                Ok(full) => Long(full),
                Err(problem) => return Outcome::stderr(1, format!("dumb-init: {problem}\n")),
            },
            other => other,
        };
        match arg {
            Short('h') | Long("help") => return Outcome::stderr(0, help()),
            Short('V') | Long("version") => {
                return Outcome::stderr(
                    0,
                    format!("dumb-init v1.2.5 (moltd {})\n", crate::version::version()),
                );
            }
            Short('v') | Long("verbose") => debug = true,
            Short('c') | Long("single-child") => setsid = false,
            Short('r') | Long("rewrite") => {
                let pair = match parser.value() {
                    Ok(value) => parse_rewrite(&value),
                    Err(_) => {
                        return Outcome::stderr(
                            1,
                            "dumb-init: option requires an argument -- 'r'\n",
                        );
                    }
                };
                match pair {
                    Some(pair) => user_rewrites.push(pair),
                    None => {
                        return Outcome::stderr(1, REWRITE_USAGE);
                    }
                }
            }
            Value(first) => {
                command.push(first);
                command.extend(parser.raw_args().into_iter().flatten());
                break;
            }
            Short(letter) => {
                return Outcome::stderr(1, format!("dumb-init: invalid option -- '{letter}'\n"));
            }
            Long(name) => {
                return Outcome::stderr(1, format!("dumb-init: unrecognized option '--{name}'\n"));
            }
        }
    }
    if command.is_empty() {
        return Outcome::stderr(
            1,
            "dumb-init: no command to run\nUsage: dumb-init [option] command [arg ...]; see dumb-init --help\n",
        );
    }
    let (isolation, delivery, mut rewrites) = if setsid {
        (
            Isolation::NewSession,
            Delivery::Group,
            job_control_rewrites(),
        )
    } else {
        (Isolation::Shared, Delivery::Child, Vec::new())
    };
    rewrites.extend(user_rewrites);
    let config = InitConfig {
        personality: Personality::DumbInit,
        command,
        isolation,
        rules: Rules {
            delivery,
            job_control: JobControl::ForwardThenStop,
            rewrites,
            success_codes: Vec::new(),
            // dumb-init sends the TERM whatever the mode; in single-child mode
            // it only reports it (see `Forwarder::on_child_gone`).
            term_group_on_exit: true,
            forward_faults: true,
        },
        reaping: Reaping::Silent,
        parent_death_signal: None,
        warn_on_reap: false,
    };
    Outcome::Run(
        config,
        if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Error
        },
    )
}

const LONG_OPTIONS: [&str; 5] = ["help", "single-child", "rewrite", "verbose", "version"];

/// Expands `name` to the one long option it names or abbreviates.
fn long_option(name: &str) -> Result<&'static str, String> {
    if let Some(&exact) = LONG_OPTIONS.iter().find(|&&o| o == name) {
        return Ok(exact);
    }
    let mut matches = LONG_OPTIONS.iter().filter(|o| o.starts_with(name));
    match (matches.next(), matches.next()) {
        (Some(&only), None) => Ok(only),
        (Some(_), Some(_)) => Err(format!("option '--{name}' is ambiguous")),
        _ => Err(format!("unrecognized option '--{name}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_options_accept_unambiguous_prefixes() {
        let table = [
            ("version", Ok("version")),
            ("vers", Ok("version")),
            ("verb", Ok("verbose")),
            ("single", Ok("single-child")),
            ("rew", Ok("rewrite")),
            ("ver", Err("option '--ver' is ambiguous".to_owned())),
            ("bogus", Err("unrecognized option '--bogus'".to_owned())),
        ];
        for (name, expected) in table {
            assert_eq!(long_option(name), expected, "{name}");
        }
    }
}
