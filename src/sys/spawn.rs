//! Starting a child: fork, set it up, exec.
//!
//! Everything the child needs (the paths to try, argv as C strings, the mask
//! to restore, the directory and the descriptors to install) is prepared
//! before `fork`. Between `fork` and `exec` the child only makes
//! async-signal-safe calls (`setsid`, `setpgid`, `ioctl`, `tcsetpgrp`,
//! `chdir`, `dup2`, `fcntl`, `sigaction`, `pthread_sigmask`, `getpid`,
//! `execv`, `execve`, `write`, `_exit`; `LISTEN_PID` is written into room
//! prepared before fork),
//! because moltd may have other threads whose locks the child would inherit
//! held.
//!
//! A failed exec is reported through a close-on-exec pipe, so the parent
//! learns the errno and can word the error the way the personality in use
//! (moltd, tini or dumb-init) does.
//!
//! Children inherit moltd's environment, unless [`set_environment`] fixed
//! another one (moltd's own without its secrets, see `crate::secrets`): it is
//! set once, before the first spawn, and applies to every child, so no call
//! site can forget it.

use super::signals::Inherited;
use nix::errno::Errno;
use nix::libc;
use nix::unistd::{ForkResult, fork, pipe2};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::OnceLock;

const SHELL: &CStr = c"/bin/sh";
/// The most descriptors [`Options::pass`] may hold (the child copies them
/// through an array on its stack: it must not allocate).
pub const MAX_PASS: usize = 16;

/// The environment of every child, as `NAME=value` strings; unset: moltd's.
static ENVIRONMENT: OnceLock<Vec<CString>> = OnceLock::new();

/// Gives every child spawned from now on `vars` as its environment instead of
/// moltd's. Only the first call counts.
pub fn set_environment(vars: Vec<(OsString, OsString)>) {
    let _ = ENVIRONMENT.set(environment(vars));
}

/// `vars` as `NAME=value` strings for exec (see [`Options::environment`]).
pub fn environment(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<CString> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            // The process environment holds no NUL bytes.
            CString::new(entry).ok()
        })
        .collect()
}

/// Where the child lives in the session and process-group hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Its own session (setsid), taking over stdin's terminal if moltd let go
    /// of it. Signals can then reach its whole process group.
    NewSession,
    /// Its own process group in moltd's session, in the terminal's foreground.
    NewProcessGroup,
    /// moltd's own process group and session (dumb-init without setsid).
    Shared,
    /// Its own process group, left in the background: a supervised service,
    /// which must neither take the terminal from the main command nor be hit
    /// by signals meant for moltd's group.
    Background,
}

/// How to set the child up between fork and exec.
pub struct Options<'a> {
    pub isolation: Isolation,
    /// The signal state the child gets back (the one moltd was started with).
    pub inherited: &'a Inherited,
    /// The working directory to change to before exec.
    pub cwd: Option<&'a CStr>,
    /// Descriptors to install as stdin, stdout and stderr; `None` inherits
    /// moltd's. They must not be 0, 1 or 2 themselves (see
    /// [`crate::sys::io::ensure_std_fds`]).
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// Descriptors to pass on as 3, 4, 5... (close-on-exec cleared in the
    /// child only): the update agent's link, listener and lock.
    pub pass: &'a [BorrowedFd<'a>],
    /// The child's environment instead of the one every child gets (see
    /// [`set_environment`]): the update agent needs moltd's own.
    pub environment: Option<&'a [CString]>,
    /// A descriptor to install at a number of its own choosing (3 or
    /// more): a service's `notification-fd`. Installed after `pass`.
    pub at: Option<(BorrowedFd<'a>, i32)>,
    /// `NAME=value` entries set for this child on top of its environment
    /// (replacing those of the same name): `LISTEN_FDS`, `LISTEN_FDNAMES`.
    pub add: &'a [CString],
    /// Sets `LISTEN_PID` to the child's own pid. It is only known after
    /// fork, so the entry is prepared with room for the digits and the
    /// child writes them in.
    pub listen_pid: bool,
}

impl<'a> Options<'a> {
    /// Inherit directory and standard streams.
    pub fn new(isolation: Isolation, inherited: &'a Inherited) -> Options<'a> {
        Options {
            isolation,
            inherited,
            cwd: None,
            stdio: [None; 3],
            pass: &[],
            environment: None,
            at: None,
            add: &[],
            listen_pid: false,
        }
    }
}

/// A command ready to be started: argv and every path `execvp` would try.
#[derive(Debug)]
pub struct Program {
    name: OsString,
    candidates: Vec<CString>,
    argv: Vec<CString>,
}

/// Why a child could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// An argument held a NUL byte, which exec cannot pass.
    NulInArgument(OsString),
    /// fork or pipe failed.
    Setup(&'static str, Errno),
    /// Every candidate path failed to exec; the child exited with 127.
    Exec { pid: i32, errno: Errno },
}

impl Program {
    /// Resolves `argv[0]` against `path` (the value of `PATH`) the way
    /// `execvp` does: a name holding a slash is used as it is.
    pub fn new(argv: &[OsString], path: Option<&OsStr>) -> Result<Program, SpawnError> {
        let name = argv.first().cloned().unwrap_or_default();
        let c_string = |arg: &OsStr| {
            CString::new(arg.as_bytes()).map_err(|_| SpawnError::NulInArgument(arg.to_owned()))
        };
        let argv = argv
            .iter()
            .map(|arg| c_string(arg))
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = if name.as_bytes().contains(&b'/') {
            vec![c_string(&name)?]
        } else if name.is_empty() {
            Vec::new()
        } else {
            // glibc's default when PATH is unset.
            let path = path.map_or(&b"/bin:/usr/bin"[..], OsStr::as_bytes);
            path.split(|&b| b == b':')
                .map(|dir| {
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    let mut full = dir.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(name.as_bytes());
                    c_string(OsStr::from_bytes(&full))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Program {
            name,
            candidates,
            argv,
        })
    }

    /// Executes `path` with `argv` as given (argv[0] is only a name).
    pub fn at(path: &CStr, argv: &[OsString]) -> Result<Program, SpawnError> {
        let mut program = Program::new(argv, None)?;
        program.candidates = vec![path.to_owned()];
        Ok(program)
    }

    /// The command as the user wrote it.
    pub fn name(&self) -> &OsStr {
        &self.name
    }
}

/// Forks and execs `program`, set up as `options` says. Returns the child's
/// pid once exec has succeeded; by then it has its own group if asked, so its
/// group can be signalled at once.
pub fn spawn(program: &Program, options: &Options) -> Result<i32, SpawnError> {
    let mut argv: Vec<*const libc::c_char> = program.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // For a file without a `#!` line, execvp's fallback: `/bin/sh FILE ARGS`.
    // Slot 1 is filled in by the child with the path that failed.
    let mut script_argv = vec![SHELL.as_ptr(), std::ptr::null()];
    script_argv.extend_from_slice(argv.get(1..).unwrap_or(&[std::ptr::null()]));
    let environment = options.environment.or(ENVIRONMENT.get().map(Vec::as_slice));
    // A child given variables of its own gets its environment without
    // those names (nor `LISTEN_PID`), then them.
    let merged: Option<Vec<CString>> = (!options.add.is_empty() || options.listen_pid).then(|| {
        let base =
            environment.map_or_else(|| self::environment(std::env::vars_os()), <[_]>::to_vec);
        let replaced = |entry: &CString| {
            let name = variable_name(entry.as_bytes());
            name == variable_name(PID_PREFIX)
                || options
                    .add
                    .iter()
                    .any(|a| variable_name(a.as_bytes()) == name)
        };
        base.into_iter()
            .filter(|entry| !replaced(entry))
            .chain(options.add.iter().cloned())
            .collect()
    });
    // `LISTEN_PID=` and room for the digits and the NUL, which the child
    // writes (in its own copy of this frame).
    let mut pid_entry = [0u8; PID_PREFIX.len() + PID_ROOM];
    pid_entry[..PID_PREFIX.len()].copy_from_slice(PID_PREFIX);
    let pid_entry = pid_entry.as_mut_ptr();
    let envp: Option<Vec<*const libc::c_char>> = merged.as_deref().or(environment).map(|vars| {
        let mut envp: Vec<_> = vars.iter().map(|v| v.as_ptr()).collect();
        if options.listen_pid {
            envp.push(pid_entry.cast_const().cast());
        }
        envp.push(std::ptr::null());
        envp
    });
    let (report_read, report_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Setup("pipe", e))?;
    let setup = ChildSetup {
        isolation: options.isolation,
        inherited: options.inherited,
        cwd: options.cwd,
        stdio: options.stdio.map(|fd| fd.map(|fd| fd.as_raw_fd())),
        pass: options.pass.iter().map(|fd| fd.as_raw_fd()).collect(),
        at: options.at.map(|(fd, target)| (fd.as_raw_fd(), target)),
        // SAFETY: the digits start inside the array, after the prefix.
        pid_digits: options
            .listen_pid
            .then(|| unsafe { pid_entry.add(PID_PREFIX.len()) }),
    };
    if setup.pass.len() > MAX_PASS {
        return Err(SpawnError::Setup("passing descriptors", Errno::EMFILE));
    }

    // SAFETY: the child branch only calls async-signal-safe functions on data
    // prepared above, and leaves through exec or _exit.
    match unsafe { fork() }.map_err(|e| SpawnError::Setup("fork", e))? {
        ForkResult::Child => {
            let envp = envp.as_deref();
            let errno = exec_in_child(&program.candidates, &argv, &mut script_argv, envp, &setup);
            let bytes = errno.to_ne_bytes();
            // SAFETY: write and _exit are async-signal-safe.
            unsafe {
                libc::write(report_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127);
            }
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            match read_exec_report(report_read) {
                None => Ok(child.as_raw()),
                Some(errno) => Err(SpawnError::Exec {
                    pid: child.as_raw(),
                    errno,
                }),
            }
        }
    }
}

/// [`Options`] reduced to plain values the child can use without allocating.
struct ChildSetup<'a> {
    isolation: Isolation,
    inherited: &'a Inherited,
    cwd: Option<&'a CStr>,
    stdio: [Option<RawFd>; 3],
    pass: Vec<RawFd>,
    at: Option<(RawFd, libc::c_int)>,
    /// Where the child writes its pid into `LISTEN_PID=` ([`PID_ROOM`] bytes).
    pid_digits: Option<*mut u8>,
}

/// The `LISTEN_PID` entry's start, and the room after it: the 10 digits of
/// the largest pid and a NUL.
const PID_PREFIX: &[u8] = b"LISTEN_PID=";
const PID_ROOM: usize = 11;

/// The name of a `NAME=value` entry.
fn variable_name(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or_default()
}

/// Writes `pid` in decimal and a NUL into `room`, without allocating (the
/// child calls it between fork and exec).
fn write_pid(room: &mut [u8; PID_ROOM], pid: libc::pid_t) {
    let mut digits = [0u8; PID_ROOM];
    let mut left = pid.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (left % 10) as u8;
        left /= 10;
        count += 1;
        if left == 0 {
            break;
        }
    }
    for (to, from) in room.iter_mut().zip(digits[..count].iter().rev()) {
        *to = *from;
    }
    room[count] = 0;
}

/// Runs in the child. Returns only if the set-up or exec failed, with the
/// errno `execvp` would have reported.
fn exec_in_child(
    candidates: &[CString],
    argv: &[*const libc::c_char],
    script_argv: &mut [*const libc::c_char],
    envp: Option<&[*const libc::c_char]>,
    setup: &ChildSetup,
) -> i32 {
    // SAFETY: all calls below are async-signal-safe and take valid pointers
    // prepared before fork. Failures of the terminal calls are deliberately
    // ignored: a child without a terminal is still a working child.
    unsafe {
        match setup.isolation {
            Isolation::NewSession => {
                libc::setsid();
                libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0);
            }
            Isolation::NewProcessGroup => {
                libc::setpgid(0, 0);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            }
            Isolation::Background => {
                libc::setpgid(0, 0);
            }
            Isolation::Shared => {}
        }
        if let Some(cwd) = setup.cwd {
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Errno::last_raw();
            }
        }
        for (target, source) in (0..).zip(setup.stdio) {
            // dup2 clears close-on-exec on the copy it makes.
            if let Some(source) = source {
                if libc::dup2(source, target) < 0 {
                    return Errno::last_raw();
                }
            }
        }
        // All copied above every target first, so that no dup2 below
        // clobbers a descriptor still to be passed; the copies stay
        // close-on-exec.
        let mut high = [0; MAX_PASS];
        let first = 3 + setup.pass.len() as libc::c_int;
        for (copy, &source) in high.iter_mut().zip(&setup.pass) {
            *copy = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, first);
            if *copy < 0 {
                return Errno::last_raw();
            }
        }
        // Likewise above its own target and the passed ones, before those
        // are installed over where it may be.
        let at = match setup.at {
            Some((source, target)) => {
                let copy = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, first.max(target + 1));
                if copy < 0 {
                    return Errno::last_raw();
                }
                Some((copy, target))
            }
            None => None,
        };
        for (target, &copy) in (3..).zip(&high[..setup.pass.len()]) {
            if libc::dup2(copy, target) < 0 {
                return Errno::last_raw();
            }
        }
        if let Some((copy, target)) = at {
            if libc::dup2(copy, target) < 0 {
                return Errno::last_raw();
            }
        }
        if let Some(digits) = setup.pid_digits {
            write_pid(&mut *digits.cast::<[u8; PID_ROOM]>(), libc::getpid());
        }
        if setup.inherited.reset_dispositions {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            // KILL and STOP refuse, and are at their default anyway.
            for signal in 1..=31 {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if setup.inherited.sigchld_ignored {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGCHLD, &ignore, std::ptr::null_mut());
        }
        libc::pthread_sigmask(
            libc::SIG_SETMASK,
            setup.inherited.mask.as_ref(),
            std::ptr::null_mut(),
        );
        let exec = |path: *const libc::c_char, argv: *const *const libc::c_char| match envp {
            Some(envp) => libc::execve(path, argv, envp.as_ptr()),
            None => libc::execv(path, argv),
        };
        let mut permission_denied = false;
        let mut last = libc::ENOENT;
        for path in candidates {
            exec(path.as_ptr(), argv.as_ptr());
            last = Errno::last_raw();
            if last == libc::ENOEXEC {
                script_argv[1] = path.as_ptr();
                exec(SHELL.as_ptr(), script_argv.as_ptr());
                return Errno::last_raw();
            }
            match last {
                libc::EACCES => permission_denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return last,
            }
        }
        if permission_denied {
            libc::EACCES
        } else {
            last
        }
    }
}

/// Reads the child's exec report: end of file means exec succeeded.
fn read_exec_report(pipe: OwnedFd) -> Option<Errno> {
    let mut buf = [0u8; 4];
    let mut filled = 0;
    while filled < buf.len() {
        match nix::unistd::read(&pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    (filled == buf.len()).then(|| Errno::from_raw(i32::from_ne_bytes(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_digits_fill_the_room_without_allocating() {
        for (pid, text) in [
            (1, &b"1"[..]),
            (42, b"42"),
            (4_194_304, b"4194304"),
            (i32::MAX, b"2147483647"),
        ] {
            let mut room = [b'x'; PID_ROOM];
            write_pid(&mut room, pid);
            assert_eq!(&room[..text.len()], text, "{pid}");
            assert_eq!(room[text.len()], 0, "{pid}");
        }
    }

    #[test]
    fn variable_names() {
        assert_eq!(variable_name(b"LISTEN_PID=12"), b"LISTEN_PID");
        assert_eq!(variable_name(b"A=b=c"), b"A");
        assert_eq!(variable_name(b"EMPTY="), b"EMPTY");
    }
}
