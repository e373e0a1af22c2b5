//! `moltd self-update [--force] FILE`: asks the running PID 1 (through its
//! control socket) to replace itself with the moltd binary FILE, keeping
//! every service running (see `services::reexec`).

use super::Outcome;
use crate::control::SelfUpdate;
use crate::services::client::Control;
use std::ffi::OsString;
use std::path::PathBuf;

const HELP: &str = "\
Usage: moltd self-update [--force] FILE

Asks the running moltd (PID 1) to replace itself with the moltd binary FILE
without restarting any service. FILE must be an executable for this machine
that passes its self-test and is newer than the running moltd; --force also
takes the same or an older version. The answer comes from the new moltd once
it runs, or from the running one with why nothing changed.

  --force        take FILE whatever its version
  -h, --help     print this help and exit
";

/// Parses the arguments after `self-update`.
pub fn parse(args: Vec<OsString>, socket: PathBuf) -> Outcome {
    let mut force = false;
    let mut file = None;
    for arg in args {
        match arg.to_str() {
            Some("-h" | "--help") => return Outcome::stdout(HELP),
            Some("--force") => force = true,
            Some(flag) if flag.starts_with('-') => {
                return usage_error(format!("unexpected option {flag:?} for self-update"));
            }
            _ if file.is_some() => return usage_error("self-update takes one FILE"),
            _ => file = Some(PathBuf::from(arg)),
        }
    }
    let Some(file) = file else {
        return usage_error("self-update needs the FILE of the new moltd");
    };
    // PID 1 runs elsewhere: a relative path is the caller's.
    let path = std::path::absolute(&file).unwrap_or(file);
    Outcome::SelfUpdate {
        request: SelfUpdate { path, force },
        socket,
    }
}

fn usage_error(problem: impl std::fmt::Display) -> Outcome {
    Outcome::stderr(
        1,
        format!("moltd: error: {problem} (see 'moltd self-update --help')\n"),
    )
}

/// Sends the request and prints the outcome.
pub fn run(request: &SelfUpdate, control: &Control) -> i32 {
    match control.ask_self_update(request, &mut super::update::waiting(control)) {
        Err(err) => super::client_failed(&err, control),
        Ok(reply) => super::update::print_reply(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_update_takes_one_file_and_force() {
        let socket = PathBuf::from("/run/c.sock");
        let parse =
            |args: &[&str]| parse(args.iter().map(OsString::from).collect(), socket.clone());
        assert_eq!(
            parse(&["--force", "/tmp/moltd"]),
            Outcome::SelfUpdate {
                request: SelfUpdate {
                    path: "/tmp/moltd".into(),
                    force: true
                },
                socket: socket.clone()
            }
        );
        for bad in [&[][..], &["/a", "/b"], &["--now", "/a"]] {
            assert!(
                matches!(parse(bad), Outcome::Exit { code: 1, .. }),
                "{bad:?}"
            );
        }
    }
}
