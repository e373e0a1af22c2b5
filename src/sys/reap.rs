//! The one place in moltd that calls `waitpid`.
//!
//! Whoever starts a process records its pid before returning to the event
//! loop, and only the event loop calls [`reap_terminated`], so a pid is always
//! known before its exit can be collected. Keeping a single caller also means
//! no other code can steal an exit status that belongs to someone else.

use nix::errno::Errno;
use nix::libc;

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
/// `on_exit`. Returns once no terminated child is left, with whether any
/// child at all is left (tini's trace lines tell the two apart).
///
/// Calls libc directly: nix's `waitpid` fails with EINVAL for a child killed
/// by a real-time signal, which has no `nix::Signal` variant.
pub fn reap_terminated(mut on_exit: impl FnMut(i32, ExitStatus)) -> Result<bool, Errno> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match Errno::result(pid) {
            Ok(0) => return Ok(true),
            Err(Errno::ECHILD) => return Ok(false),
            Ok(pid) if libc::WIFEXITED(status) => {
                on_exit(pid, ExitStatus::Exited(libc::WEXITSTATUS(status)))
            }
            Ok(pid) if libc::WIFSIGNALED(status) => {
                on_exit(pid, ExitStatus::Signaled(libc::WTERMSIG(status)))
            }
            // Stops and continues are not asked for (no WUNTRACED/WCONTINUED).
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => return Err(err),
        }
    }
}
