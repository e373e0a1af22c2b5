//! What single-command mode says, in the words of the program it stands in
//! for. Users grep logs for tini's and dumb-init's lines, so under those names
//! the text matches theirs; under its own name moltd speaks plainly.
//!
//! Each function logs at the level the original program uses.

use crate::init::policy::Dropped;
use crate::personality::Personality;
use crate::signals;
use crate::sys::reap::ExitStatus;
use crate::sys::signals::describe_signal;
use crate::sys::spawn::SpawnError;
use log::{debug, error, info, trace, warn};
use nix::errno::Errno;
use std::ffi::OsStr;

pub struct Messages(pub Personality);

impl Messages {
    /// A setup syscall failed; returns the exit code to leave with.
    pub fn fatal_setup(&self, what: &str, err: Errno) -> i32 {
        error!("cannot {what}: {}", err.desc());
        1
    }

    pub fn subreaper_failed(&self, err: Errno) {
        warn!(
            "cannot register as child subreaper, orphans will not be reaped: {}",
            err.desc()
        );
    }

    /// tini's warning when it is neither PID 1 nor a subreaper.
    pub fn not_reaping(&self) {
        warn!(
            "Tini is not running as PID 1 and isn't registered as a child subreaper.\n\
             Zombie processes will not be re-parented to Tini, so zombie reaping won't work.\n\
             To fix the problem, use the -s option or set the environment variable \
             TINI_SUBREAPER to register Tini as a child subreaper, or run Tini as PID 1."
        );
    }

    /// The command could not be started; returns the exit code to leave with.
    pub fn spawn_failed(&self, command: &OsStr, err: SpawnError) -> i32 {
        let command = command.to_string_lossy();
        let errno = match err {
            SpawnError::Exec { errno, .. } => errno,
            SpawnError::Setup(what, errno) => return self.fatal_setup(what, errno),
            SpawnError::NulInArgument(arg) => {
                error!("argument {arg:?} holds a NUL byte");
                return 1;
            }
        };
        match self.0 {
            Personality::DumbInit => {
                error!("{command}: {}", errno.desc());
                2
            }
            Personality::Tini => {
                error!("exec {command} failed: {}", errno.desc());
                match errno {
                    Errno::ENOENT => 127,
                    Errno::EACCES => 126,
                    _ => 1,
                }
            }
            Personality::Moltd => {
                error!("cannot run {command}: {}", errno.desc());
                // The shell's convention: 127 not found, 126 found but not runnable.
                if errno == Errno::ENOENT { 127 } else { 126 }
            }
        }
    }

    pub fn spawned(&self, command: &OsStr, pid: i32) {
        let command = command.to_string_lossy();
        match self.0 {
            Personality::DumbInit => debug!("Child spawned with PID {pid}."),
            Personality::Tini => info!("Spawned child process '{command}' with pid '{pid}'"),
            Personality::Moltd => info!("started {command} as pid {pid}"),
        }
    }

    /// tini notes every SIGCHLD at debug level; the others say nothing.
    /// A SIGCHLD was read.
    pub fn received_sigchld(&self) {
        match self.0 {
            Personality::DumbInit => debug!("Received signal {}.", nix::libc::SIGCHLD),
            Personality::Tini => debug!("Received SIGCHLD"),
            Personality::Moltd => {}
        }
    }

    pub fn received(&self, signal: i32) {
        match self.0 {
            Personality::DumbInit => debug!("Received signal {signal}."),
            Personality::Tini => debug!("Passing signal: '{}'", describe_signal(signal)),
            Personality::Moltd => debug!("received {}", signals::name(signal)),
        }
    }

    pub fn forwarded(&self, signal: i32, target: i32) {
        match self.0 {
            Personality::DumbInit => debug!("Forwarded signal {signal} to children."),
            // tini says nothing once a signal is passed on.
            Personality::Tini => {}
            Personality::Moltd => debug!(
                "forwarded {} to {}",
                signals::name(signal),
                describe(target)
            ),
        }
    }

    pub fn forward_failed(&self, signal: i32, target: i32, err: Errno) {
        match (self.0, err) {
            // dumb-init reports the signal as forwarded whatever kill says.
            (Personality::DumbInit, _) => self.forwarded(signal, target),
            (Personality::Tini, Errno::ESRCH) => warn!("Child was dead when forwarding signal"),
            (Personality::Tini, _) => {
                error!("Unexpected error when forwarding signal: '{}'", err.desc())
            }
            _ => debug!(
                "could not send {} to {}: {}",
                signals::name(signal),
                describe(target),
                err.desc()
            ),
        }
    }

    /// `signal` was rewritten as `to` before being sent or dropped.
    pub fn rewriting(&self, signal: i32, to: i32) {
        if self.0 == Personality::DumbInit {
            debug!("Translating signal {signal} to {to}.");
        }
    }

    pub fn dropped(&self, signal: i32, why: Dropped) {
        match (self.0, why) {
            (Personality::DumbInit, Dropped::HandOff) => {
                debug!("Ignoring tty hand-off signal {signal}.")
            }
            // dumb-init names the signal after rewriting, which is 0 here.
            (Personality::DumbInit, Dropped::Rewritten) => {
                debug!("Not forwarding signal 0 to children (ignored).")
            }
            // dumb-init sends this one to the reaped pid, and says so.
            (Personality::DumbInit, Dropped::ChildGone) => {
                debug!("Forwarded signal {signal} to children.")
            }
            (Personality::DumbInit, Dropped::Rule) => {
                debug!("Not forwarding signal {signal} to children (ignored).")
            }
            _ => debug!("not forwarding {}", signals::name(signal)),
        }
    }

    /// Children are reaped after another signal woke moltd, their SIGCHLD
    /// still pending: dumb-init's log says it came first, whatever the
    /// timing (tini's says so only when it reads it).
    pub fn sigchld_pending(&self) {
        if self.0 == Personality::DumbInit {
            self.received_sigchld();
        }
    }

    /// moltd gave up stdin's terminal for the child's session: `Ok(true)`
    /// when it led the terminal's session.
    pub fn terminal_released(&self, released: Result<bool, Errno>) {
        if self.0 != Personality::DumbInit {
            return;
        }
        match released {
            Ok(true) => debug!(
                "Detached from controlling tty, ignoring the first SIGHUP and SIGCONT we receive."
            ),
            Ok(false) => debug!("Detached from controlling tty, but was not session leader."),
            Err(err) => debug!(
                "Unable to detach from controlling tty (errno={} {}).",
                err as i32,
                strerror(err)
            ),
        }
    }

    /// The child runs in a session of its own.
    pub fn new_session(&self) {
        if self.0 == Personality::DumbInit {
            debug!("setsid complete.");
        }
    }

    /// moltd could not leave its working directory for `/`.
    pub fn chdir_failed(&self, err: Errno) {
        debug!(
            "Unable to chdir(\"/\") (errno={} {})",
            err as i32,
            strerror(err)
        );
    }

    pub fn stopping_self(&self) {
        match self.0 {
            Personality::Moltd => debug!("stopping until SIGCONT, like the child"),
            _ => debug!("Suspending self due to TTY signal."),
        }
    }

    /// A process other than the child was reaped.
    pub fn reaped(&self, pid: i32, status: ExitStatus, warn_on_reap: bool) {
        match self.0 {
            Personality::DumbInit => debug!("A child with PID {pid} {}.", dumb_init_status(status)),
            Personality::Tini => {
                tini_reaped(pid);
                if warn_on_reap {
                    warn!("Reaped zombie process with pid={pid}");
                }
            }
            Personality::Moltd if warn_on_reap => {
                warn!("reaped orphan {pid} ({})", describe_status(status))
            }
            Personality::Moltd => trace!("reaped orphan {pid} ({})", describe_status(status)),
        }
    }

    /// The end of a round of reaping: tini traces whether children are left.
    pub fn reaping_done(&self, children_left: bool) {
        match (self.0, children_left) {
            (Personality::Tini, true) => trace!("No child to reap"),
            (Personality::Tini, false) => trace!("No child to wait"),
            _ => {}
        }
    }

    pub fn child_exited(&self, pid: i32, status: ExitStatus, code: i32) {
        match (self.0, status) {
            (Personality::DumbInit, _) => {
                debug!("A child with PID {pid} {}.", dumb_init_status(status))
            }
            (Personality::Tini, ExitStatus::Exited(c)) => {
                tini_reaped(pid);
                info!("Main child exited normally (with status '{c}')")
            }
            (Personality::Tini, ExitStatus::Signaled(s)) => {
                tini_reaped(pid);
                info!(
                    "Main child exited with signal (with signal '{}')",
                    describe_signal(s)
                )
            }
            (Personality::Moltd, _) => {
                info!("child {}, leaving with {code}", describe_status(status))
            }
        }
    }

    pub fn leaving(&self, code: i32) {
        match self.0 {
            Personality::DumbInit => debug!("Child exited with status {code}. Goodbye."),
            Personality::Tini => trace!("Exiting: child has exited"),
            Personality::Moltd => {}
        }
    }
}

/// tini's line for every process it reaps, the main child included.
fn tini_reaped(pid: i32) {
    debug!("Reaped child with pid: '{pid}'");
}

/// The C library's text for `err`, as dumb-init prints it (nix has its own
/// wording for a few, such as ENOTTY).
fn strerror(err: Errno) -> String {
    let text = std::io::Error::from_raw_os_error(err as i32).to_string();
    match text.rsplit_once(" (os error ") {
        Some((text, _)) => text.to_owned(),
        None => text,
    }
}

fn describe(target: i32) -> String {
    if target < 0 {
        format!("process group {}", -target)
    } else {
        format!("pid {target}")
    }
}

fn describe_status(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited with {code}"),
        ExitStatus::Signaled(signal) => format!("killed by {}", signals::name(signal)),
    }
}

fn dumb_init_status(status: ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited with exit status {code}"),
        ExitStatus::Signaled(signal) => format!("was terminated by signal {signal}"),
    }
}
