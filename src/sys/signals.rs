//! The signal mask and the signalfd moltd sleeps on.
//!
//! moltd installs no signal handlers. Every signal it can catch is blocked and
//! read synchronously from a signalfd, so there is no handler to race with, and
//! a PID 1 with nothing to do sleeps in `read` without any timeout.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};

/// Signals that mean moltd itself is broken. They stay unblocked with their
/// default action, so a fault crashes moltd loudly; they are never forwarded.
pub const FAULT_SIGNALS: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// Where moltd's signals arrive, plus the mask it found at start-up, which
/// every child gets back before exec.
pub struct SignalSource {
    fd: SignalFd,
    inherited_mask: SigSet,
}

impl SignalSource {
    /// Blocks every catchable signal but the faults and opens a signalfd for
    /// them. Call it before any thread starts: threads inherit the mask, and a
    /// thread with a signal unblocked would steal it from the signalfd.
    pub fn install() -> Result<Self, Errno> {
        let inherited_mask = SigSet::thread_get_mask()?;
        let mut blocked = SigSet::all();
        for fault in FAULT_SIGNALS {
            blocked.remove(fault);
        }
        blocked.thread_block()?;
        let fd = SignalFd::with_flags(&blocked, SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalSource { fd, inherited_mask })
    }

    /// The mask moltd was started with.
    pub fn inherited_mask(&self) -> &SigSet {
        &self.inherited_mask
    }

    /// Sleeps until a signal arrives and returns its number.
    pub fn wait(&mut self) -> Result<i32, Errno> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => return Ok(info.ssi_signo as i32),
                Ok(None) | Err(Errno::EINTR) => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

impl AsFd for SignalSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The C library's description of a signal ("Terminated"), as tini prints it.
pub fn describe_signal(signal: i32) -> String {
    // SAFETY: strsignal returns a string that stays valid until the next call
    // in this thread; it is copied out at once.
    let text = unsafe { std::ffi::CStr::from_ptr(nix::libc::strsignal(signal)) };
    text.to_string_lossy().into_owned()
}
