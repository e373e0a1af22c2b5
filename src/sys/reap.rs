//! The one place in moltd that calls `waitpid`.
//!
//! Whoever starts a process records its pid before returning to the event
//! loop, and only the event loop calls [`reap_terminated`], so a pid is always
//! known before its exit can be collected. Keeping a single caller also means
//! no other code can steal an exit status that belongs to someone else.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell would report: the exit code, or 128 plus the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }
}

/// Collects every terminated child without blocking and hands each to
/// `on_exit`. Returns once no terminated child is left.
pub fn reap_terminated(mut on_exit: impl FnMut(i32, ExitStatus)) -> Result<(), Errno> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => on_exit(pid.as_raw(), ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                on_exit(pid.as_raw(), ExitStatus::Signaled(signal as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
            // Stops and continues are not asked for (no WUNTRACED/WCONTINUED).
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => return Err(err),
        }
    }
}
