//! Calls on moltd's own process: its pid, subreaper and parent-death
//! settings, its controlling terminal, and sending signals to others.

use nix::errno::Errno;
use nix::libc;
use nix::unistd::{getpid, getsid};

/// Whether moltd is PID 1 of its PID namespace, and so reaps orphans without
/// asking.
pub fn is_pid1() -> bool {
    getpid().as_raw() == 1
}

/// Makes orphaned descendants re-parent to moltd instead of to PID 1, so that
/// moltd can reap them when something else is PID 1.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Whether orphaned descendants re-parent to moltd. The bit survives exec,
/// so a wrapper may have set it before starting moltd.
pub fn is_subreaper() -> Result<bool, Errno> {
    nix::sys::prctl::get_child_subreaper()
}

/// Asks the kernel to send `signal` to moltd when its parent dies.
pub fn set_parent_death_signal(signal: i32) -> Result<(), Errno> {
    // SAFETY: PR_SET_PDEATHSIG takes the signal number as its only argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    Errno::result(rc).map(drop)
}

/// Sends `signal` to a process (`target > 0`) or a process group
/// (`target < 0`). Takes raw numbers because real-time signals have no
/// `nix::Signal` variant.
pub fn send_signal(target: i32, signal: i32) -> Result<(), Errno> {
    // SAFETY: kill has no memory-safety preconditions.
    Errno::result(unsafe { libc::kill(target, signal) }).map(drop)
}

/// Whether any process, zombies included, is left in process group `pgid`.
pub fn group_exists(pgid: i32) -> bool {
    // Signal 0 checks for existence; EPERM still means someone is there.
    send_signal(-pgid, 0) != Err(Errno::ESRCH)
}

/// Stops moltd until it receives SIGCONT (a no-op for PID 1, which the kernel
/// never stops from inside its namespace).
pub fn stop_self() -> Result<(), Errno> {
    send_signal(getpid().as_raw(), libc::SIGSTOP)
}

/// Dies at once by SIGKILL, as `kill -9` from outside would (the tests'
/// crash points; PID 1 of a namespace cannot be killed from inside, so
/// those tests run moltd as a subreaper).
#[cfg(feature = "test-hooks")]
pub fn kill_self() {
    let _ = send_signal(getpid().as_raw(), libc::SIGKILL);
}

/// How long ago the parent started (the update agent's PID 1), from
/// `/proc/PID/stat` and `/proc/uptime`; `None` if they cannot be read.
pub fn parent_age() -> Option<std::time::Duration> {
    let pid = nix::unistd::getppid().as_raw();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name, which may hold anything
    // but ends at the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let started: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let age = up - started as f64 / ticks.max(1) as f64;
    Some(std::time::Duration::from_secs_f64(age.max(0.0)))
}

/// Kills the parent by SIGKILL (the tests' crash points in the update
/// agent: its supervising moltd killed from outside).
#[cfg(feature = "test-hooks")]
pub fn kill_parent() {
    let _ = send_signal(nix::unistd::getppid().as_raw(), libc::SIGKILL);
}

/// Gives up the controlling terminal on stdin so that a child in a new
/// session can take it. Returns true when moltd led the terminal's session: the
/// kernel then sends SIGHUP and SIGCONT to moltd's group, which are not meant
/// for the child.
pub fn release_controlling_tty() -> Result<bool, Errno> {
    // SAFETY: TIOCNOTTY takes no argument.
    Errno::result(unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCNOTTY) })?;
    Ok(getsid(None).is_ok_and(|sid| sid == getpid()))
}

/// Moves moltd's own working directory to `/`, so that the directory it was
/// started in (maybe a mount point) is not kept busy by PID 1.
pub fn leave_working_directory() -> Result<(), Errno> {
    nix::unistd::chdir("/")
}
