//! Descriptors moltd owns on behalf of its services: the standard streams it
//! hands down, output pipes, the private control socket, and the listening
//! sockets it holds for services (bound once, passed to every start).

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::stat::{Mode, umask};
use nix::unistd::pipe2;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were
/// closed). Otherwise a pipe could be given one of those numbers, and
/// installing it as a child's stdio would clobber another of them.
pub fn ensure_std_fds() -> Result<(), Errno> {
    for fd in 0..3 {
        // SAFETY: fd is only probed with F_GETFD, never used as owned.
        let probe = unsafe { BorrowedFd::borrow_raw(fd) };
        if fcntl(probe, FcntlArg::F_GETFD) == Err(Errno::EBADF) {
            // open returns the lowest free number: the missing one. It must
            // stay open for moltd's whole life, so it is leaked on purpose.
            std::mem::forget(open("/dev/null", OFlag::O_RDWR, Mode::empty())?);
        }
    }
    Ok(())
}

/// A pipe whose both ends moltd keeps open for as long as it lives, so that
/// children come and go without the reader ever seeing end of file. Neither
/// end leaks into children except where it is installed as a standard
/// stream.
#[derive(Debug)]
pub struct Pipe {
    pub read: OwnedFd,
    pub write: Option<OwnedFd>,
}

impl Pipe {
    /// `nonblocking_read` is for pipes moltd reads itself; a pipe whose read
    /// end becomes a child's stdin must block, as the child expects.
    pub fn new(nonblocking_read: bool) -> Result<Pipe, Errno> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        if nonblocking_read {
            let flags = OFlag::from_bits_truncate(fcntl(&read, FcntlArg::F_GETFL)?);
            fcntl(&read, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(Pipe {
            read,
            write: Some(write),
        })
    }

    /// The write end, while moltd still holds it.
    pub fn writer(&self) -> Option<BorrowedFd<'_>> {
        self.write.as_ref().map(AsFd::as_fd)
    }

    /// Reads what is available without blocking; `Ok(0)` when nothing is.
    pub fn read_some(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        match nix::unistd::read(&self.read, buf) {
            Err(Errno::EAGAIN) => Ok(0),
            other => other,
        }
    }
}

/// Binds a Unix socket that only moltd's own user can connect to: it is
/// created with mode 0600 (through the umask, so there is no window in which
/// it is open to others). A stale socket left by an earlier moltd is
/// replaced; a live one is not.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    remove_stale_socket(path, "another moltd is listening there")?;
    // moltd is single-threaded here, so no other file is created meanwhile.
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes a socket file nobody listens on any more; refuses, saying
/// `in_use`, if someone does.
fn remove_stale_socket(path: &Path, in_use: &str) -> std::io::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, in_use));
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// A TCP socket listening on `addr` with SO_REUSEADDR (std sets it, so a
/// port whose last connections are in TIME_WAIT can be bound again) and the
/// largest backlog, so connections queue while no process accepts. It is
/// close-on-exec: only the children it is passed to get it.
pub fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    let listener = std::net::TcpListener::bind(addr)?;
    // std listened with a backlog of 128; listening again only raises it.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)?;
    Ok(OwnedFd::from(listener))
}

/// A Unix stream socket listening at `path` (a stale socket file is
/// replaced, a live one is not), with the largest backlog, then given
/// `mode` and `owner` (uid, gid) if set. Close-on-exec, like [`listen_tcp`].
pub fn listen_unix(
    path: &Path,
    mode: Option<u32>,
    owner: Option<(u32, Option<u32>)>,
) -> std::io::Result<OwnedFd> {
    remove_stale_socket(path, "a process listens there")?;
    let listener = UnixListener::bind(path)?;
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXCONN)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), gid)?;
    }
    Ok(OwnedFd::from(listener))
}

/// What an inherited descriptor must be (see [`take_inherited`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inherited {
    /// The update agent's link and listener.
    Socket,
    /// The lent `supervisor.lock`.
    File,
}

/// Takes over descriptor `fd`, inherited from the parent, and makes it
/// close-on-exec. `None` when it is not open or not of the kind expected.
/// Call it once per number.
pub fn take_inherited(fd: std::os::fd::RawFd, kind: Inherited) -> Option<OwnedFd> {
    // SAFETY: fd is only probed, never used as owned, until it is known to
    // be open and of the kind the parent passed there.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(probe).ok()?;
    let expected = match kind {
        Inherited::Socket => nix::libc::S_IFSOCK,
        Inherited::File => nix::libc::S_IFREG,
    };
    if stat.st_mode & nix::libc::S_IFMT != expected {
        return None;
    }
    fcntl(probe, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
    // SAFETY: nothing else in this process owns an inherited number (the
    // caller takes each once, at start), so ownership is taken exactly once.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
