//! The signal mask and the signalfd moltd sleeps on.
//!
//! moltd installs no signal handlers. Every signal it can catch is blocked and
//! read synchronously from a signalfd, so there is no handler to race with, and
//! a PID 1 with nothing to do sleeps in `read` without any timeout.

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};

/// Signals that mean moltd itself is broken. Like every other signal they
/// are blocked, so one sent with kill() lands in the signalfd and is dropped
/// (forwarded under dumb-init's rules); a real fault in moltd still kills
/// it, because the kernel unblocks a synchronous fault signal when it
/// delivers it. Under the name `tini` they are unblocked again
/// ([`SignalSource::unblock_faults`]), as tini leaves them.
pub const FAULT_SIGNALS: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// The signal state moltd was started with, which every child gets back
/// before exec: the mask, and whether SIGCHLD was ignored (the one ignored
/// signal moltd cannot keep, because the kernel would then reap its children
/// for it and never tell).
#[derive(Clone, Copy, Debug)]
pub struct Inherited {
    pub mask: SigSet,
    pub sigchld_ignored: bool,
    /// Put signals 1-31 back to their default action in the child.
    pub reset_dispositions: bool,
}

impl Inherited {
    /// Records the start-up state, then blocks every signal so that none is
    /// lost before the signalfd exists. The first thing PID 1 does.
    pub fn capture_and_block() -> Result<Inherited, Errno> {
        let mask = SigSet::thread_get_mask()?;
        let sigchld_ignored = set_sigchld_handler(libc::SIG_DFL)? == libc::SIG_IGN;
        SigSet::all().thread_block()?;
        Ok(Inherited {
            mask,
            sigchld_ignored,
            reset_dispositions: false,
        })
    }

    /// What dumb-init hands its child whatever it was started with: nothing
    /// blocked, and signals 1-31 at their default action (it catches them
    /// all, and exec resets caught signals); 32 and up stay as they were.
    pub fn clean_slate() -> Inherited {
        Inherited {
            mask: SigSet::empty(),
            sigchld_ignored: false,
            reset_dispositions: true,
        }
    }

    /// Puts the start-up state back, for commands that are clients rather
    /// than PID 1 (`sv`, `status`, `update`, help).
    pub fn restore(&self) {
        if self.sigchld_ignored {
            let _ = set_sigchld_handler(libc::SIG_IGN);
        }
        let _ = self.mask.thread_set_mask();
    }
}

/// Sets SIGCHLD's disposition and returns the previous one.
fn set_sigchld_handler(handler: libc::sighandler_t) -> Result<libc::sighandler_t, Errno> {
    // SAFETY: only SIG_DFL and SIG_IGN are installed, never a function; both
    // structs are fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        let mut previous: libc::sigaction = std::mem::zeroed();
        Errno::result(libc::sigaction(libc::SIGCHLD, &action, &mut previous))?;
        Ok(previous.sa_sigaction)
    }
}

/// Where moltd's signals arrive, plus the state it was started with.
pub struct SignalSource {
    fd: SignalFd,
    inherited: Inherited,
    own_pid: u32,
}

impl SignalSource {
    /// Opens a signalfd for every signal (all blocked by
    /// [`Inherited::capture_and_block`]). Call it before any thread starts:
    /// threads inherit the mask, and a thread with a signal unblocked would
    /// steal it from the signalfd.
    pub fn install(inherited: Inherited) -> Result<Self, Errno> {
        let fd = SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalSource {
            fd,
            inherited,
            own_pid: std::process::id(),
        })
    }

    /// Lets the fault signals take their default action, as tini does: sent
    /// with kill(), they kill moltd and leave the child orphaned, except as
    /// PID 1 of a namespace, which the kernel spares signals it has no
    /// handler for. The signalfd stops asking for them first, or its read
    /// would take them before the kernel acts on them.
    pub fn unblock_faults(&mut self) -> Result<(), Errno> {
        let mut faults = SigSet::empty();
        let mut rest = SigSet::all();
        for fault in FAULT_SIGNALS {
            faults.add(fault);
            rest.remove(fault);
        }
        self.fd.set_mask(&rest)?;
        faults.thread_unblock()
    }

    /// The signal state moltd was started with.
    pub fn inherited(&self) -> &Inherited {
        &self.inherited
    }

    /// Sleeps until a signal arrives and returns its number. Signals moltd
    /// raised on itself are skipped: a SIGPIPE from writing a log line to a
    /// closed pipe is moltd's own business, and forwarding it would only
    /// cause the next one.
    pub fn wait(&mut self) -> Result<i32, Errno> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) if info.ssi_pid == self.own_pid => continue,
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

/// Takes SIGHUP and SIGCONT off moltd's pending set and returns those that
/// were there. Giving up the terminal as session leader makes the kernel
/// send both to moltd's group at once; they are not meant for the child.
/// (They would also reach the signalfd as raised by moltd itself, and be
/// skipped there, but then not before a later SIGHUP from outside.)
pub fn take_hand_off_signals() -> Vec<i32> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    [libc::SIGHUP, libc::SIGCONT]
        .into_iter()
        .filter(|&signal| {
            let mut set = SigSet::empty();
            set.add(Signal::try_from(signal).unwrap_or(Signal::SIGHUP));
            // SAFETY: both pointers are valid for the call; info may be null.
            unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero) == signal }
        })
        .collect()
}

/// The C library's description of a signal ("Terminated"), as tini prints it.
pub fn describe_signal(signal: i32) -> String {
    // SAFETY: strsignal returns a string that stays valid until the next call
    // in this thread; it is copied out at once.
    let text = unsafe { std::ffi::CStr::from_ptr(nix::libc::strsignal(signal)) };
    text.to_string_lossy().into_owned()
}

impl Inherited {
    /// The start-up state as text, for PID 1's frozen state (a program that
    /// resumes it was started with everything blocked, and must give
    /// children what the first moltd got): the blocked signals, comma
    /// separated, then whether SIGCHLD was ignored and dispositions reset.
    pub fn encode(&self) -> String {
        let blocked: Vec<String> = (1..=libc::SIGRTMAX())
            .filter(|&signal| {
                // SAFETY: sigismember reads the set; a number out of range
                // gives -1, which counts as not blocked.
                unsafe { libc::sigismember(self.mask.as_ref(), signal) == 1 }
            })
            .map(|signal| signal.to_string())
            .collect();
        format!(
            "{} {} {}",
            if blocked.is_empty() {
                "-".to_owned()
            } else {
                blocked.join(",")
            },
            u8::from(self.sigchld_ignored),
            u8::from(self.reset_dispositions)
        )
    }

    /// The inverse of [`Inherited::encode`].
    pub fn decode(text: &str) -> Option<Inherited> {
        let [blocked, ignored, reset] = text.split(' ').collect::<Vec<_>>()[..] else {
            return None;
        };
        let mut set: libc::sigset_t = *SigSet::empty().as_ref();
        for number in blocked.split(',').filter(|n| *n != "-") {
            let signal: i32 = number.parse().ok()?;
            // SAFETY: sigaddset writes into the set it is given; a number
            // out of range gives -1, refused here.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return None;
            }
        }
        let flag = |text: &str| match text {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        Some(Inherited {
            // SAFETY: `set` was made by sigemptyset and sigaddset.
            mask: unsafe { SigSet::from_sigset_t_unchecked(set) },
            sigchld_ignored: flag(ignored)?,
            reset_dispositions: flag(reset)?,
        })
    }
}
