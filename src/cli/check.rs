//! runit's `./check` script, run by `sv` while it waits for a service to
//! come up.
//!
//! runit's sv(8): when `start`, `restart`, `force-restart` or `check` (and,
//! in runit's sv.c, `-v up`, `-v term` and `-v kill`) wait for a service and
//! its folder holds an executable `check`, the service counts as up only
//! once `./check` exits 0;
//! sv runs it again until it does or the wait is over. The supervisor only
//! knows that `run` is running, not whether it is ready, so this happens in
//! the client: moltd answers the wait when `run` runs (with the service's
//! folder in the answer), then sv runs `./check` in that folder.
//!
//! The check is sv's own child, so std's `Command` starts and reaps it (sv
//! is a short-lived client, never PID 1). It stays in sv's process group,
//! as in runit: a Ctrl-C on sv reaches it too, where a group of its own
//! would leave it running with nobody waiting for it. A check still running
//! at the deadline is killed (its pid only; what it started itself and left
//! behind is its own affair, as in runit, which never kills it at all).

use crate::services::client::{ClientError, Control};
use crate::services::control::{Answer, Op, Request};
use crate::services::scan;
use crate::services::status::{Phase, Status};
use nix::libc;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pause between two runs of a failing check: a check is usually a probe
/// (a connect, a query), cheap enough to repeat a few times a second, and
/// the service is reported up soon after it is ready.
const RETRY: Duration = Duration::from_millis(250);
/// How often to look whether a running check has exited: std has no wait
/// with a timeout, and `try_wait` leaves the child unreaped until sv decides,
/// so a kill at the deadline can never hit a reused pid.
const LOOK: Duration = Duration::from_millis(10);

/// Why a service's check could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot run ./check: {0}")]
    Spawn(std::io::Error),
    #[error("cannot wait for ./check: {0}")]
    Wait(std::io::Error),
    /// Asking moltd whether the service is still up failed.
    #[error(transparent)]
    Client(ClientError),
}

/// The folder of a running service whose `check` must pass before it
/// counts as up; none when there is nothing to check.
fn check_dir(status: &Status) -> Option<&Path> {
    let dir = status.dir.as_deref()?;
    let running = status.main.phase == Phase::Running && status.main.pid.is_some();
    (running && scan::is_executable(&dir.join("check"))).then_some(dir)
}

/// Turns an `ok` answer for a service with an executable `check` into `ok`
/// only once `./check` exits 0, running it until then or `deadline` (then
/// `timeout`, or `kill` with KILL sent to `run`, as runit's force verbs do).
/// Other answers pass through.
pub fn confirm(
    control: &Control,
    answer: Answer,
    deadline: Instant,
    kill_on_timeout: bool,
) -> Result<Answer, CheckError> {
    let Answer::Ok(mut status) = answer else {
        return Ok(answer);
    };
    loop {
        let Some(dir) = check_dir(&status) else {
            return Ok(Answer::Ok(status));
        };
        if run_once(dir, deadline)? {
            return Ok(Answer::Ok(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(RETRY.min(left));
        // The service may have stopped meanwhile: wait (what is left) for it
        // to be up again before checking again.
        let request = Request {
            op: Op::Check,
            names: vec![status.name.clone()],
            wait: Some(deadline.saturating_duration_since(Instant::now())),
            kill_on_timeout: false,
        };
        match control.ask(&request).map_err(CheckError::Client)?.pop() {
            Some(Answer::Ok(again)) => status = again,
            Some(other) => return Ok(other),
            None => return Err(CheckError::Client(ClientError::BadReply(String::new()))),
        }
    }
    if !kill_on_timeout {
        return Ok(Answer::Timeout(status));
    }
    let kill = Request {
        op: Op::Signal(libc::SIGKILL),
        names: vec![status.name.clone()],
        wait: None,
        kill_on_timeout: false,
    };
    control.ask(&kill).map_err(CheckError::Client)?;
    Ok(Answer::Killed(status))
}

/// Runs `./check` once in `dir` (stdin from /dev/null, its output on sv's
/// stderr, so sv's stdout stays runit's lines); returns whether it exited 0
/// before `deadline`. One still running then is killed.
fn run_once(dir: &Path, deadline: Instant) -> Result<bool, CheckError> {
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let mut child = Command::new("./check")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .map_err(CheckError::Spawn)?;
    loop {
        if let Some(status) = child.try_wait().map_err(CheckError::Wait)? {
            return Ok(status.success());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Unreaped, so its pid cannot have been reused.
            let _ = child.kill();
            child.wait().map_err(CheckError::Wait)?;
            return Ok(false);
        }
        std::thread::sleep(LOOK.min(left));
    }
}
