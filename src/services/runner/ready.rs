//! The two ways a service tells PID 1 it is ready, as descriptors the loop
//! polls: `NOTIFY_SOCKET` (systemd's `sd_notify(3)`: one datagram socket
//! for all services, `READY=1`) and the `notification-fd` pipe of each `run`
//! (s6: a newline on it). The supervisor decides what a notification means
//! (`Event::Ready`); `./check` and the grace period are its own timers.
//!
//! The socket asks the kernel for each sender's credentials
//! (`SO_PASSCRED`), so a message counts only for the `run` whose pid sent it
//! or whose process group the sender is in: a service cannot make another
//! one ready. It is writable by every user (services may drop privileges),
//! as systemd's is; the credentials are what counts.

use crate::services::machine::{Notifier, Which};
use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};
use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The longest message read; the rest of a longer datagram is dropped
/// (`READY=1` and its like are a few bytes; systemd's own bound is larger
/// only for file-descriptor stores, which moltd does not keep).
const MAX_MESSAGE: usize = 4096;
/// Messages read per wake-up, so a service flooding the socket cannot hold
/// up the loop; the rest wait for the next round.
const MAX_PER_ROUND: usize = 64;

/// Where the notify socket lives: beside the control socket.
pub fn notify_path(control: &Path) -> PathBuf {
    control.with_file_name("notify.sock")
}

/// Why the notify socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the notify socket {path}: {what}: {errno}", path = path.display(), errno = errno.desc())]
pub struct NotifyError {
    path: PathBuf,
    what: &'static str,
    #[source]
    errno: Errno,
}

/// PID 1's end of `NOTIFY_SOCKET`.
pub struct NotifySocket {
    fd: OwnedFd,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds the datagram socket at `path` (a stale file there is
    /// replaced: the control socket, taken first, says no other moltd runs).
    pub fn bind(path: &Path) -> Result<NotifySocket, NotifyError> {
        let fail = |what| {
            move |errno| NotifyError {
                path: path.to_owned(),
                what,
                errno,
            }
        };
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(fail("socket"))?;
        socket::setsockopt(&fd, sockopt::PassCred, &true).map_err(fail("SO_PASSCRED"))?;
        let address = UnixAddr::new(path).map_err(fail("address"))?;
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(fail("removing the old one")(Errno::from_raw(
                    err.raw_os_error().unwrap_or(0),
                )));
            }
            _ => {}
        }
        socket::bind(fd.as_raw_fd(), &address).map_err(fail("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|err| fail("chmod")(Errno::from_raw(err.raw_os_error().unwrap_or(0))))?;
        Ok(NotifySocket {
            fd,
            path: path.to_owned(),
        })
    }

    /// The socket the previous PID 1 bound, taken back after a self-update.
    pub fn adopt(fd: OwnedFd, path: PathBuf) -> NotifySocket {
        NotifySocket { fd, path }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what is waiting (up to a round's worth); returns a notifier
    /// for each `READY=1`.
    pub fn receive(&self) -> Vec<Notifier> {
        let mut ready = Vec::new();
        let mut buf = [0u8; MAX_MESSAGE];
        for _ in 0..MAX_PER_ROUND {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let (len, pid) = match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let pid = msg.cmsgs().ok().and_then(|mut cmsgs| {
                        cmsgs.find_map(|c| match c {
                            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                            _ => None,
                        })
                    });
                    (msg.bytes, pid)
                }
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(err) => {
                    warn!("cannot read the notify socket: {}", err.desc());
                    break;
                }
            };
            let Some(pid) = pid.filter(|&p| p > 0) else {
                debug!("a notification without credentials, dropped");
                continue;
            };
            if says_ready(&buf[..len.min(MAX_MESSAGE)]) {
                let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                    .ok()
                    .map(|p| p.as_raw());
                ready.push(Notifier::Process { pid, pgid });
            }
        }
        ready
    }
}

/// Whether a notification holds the line `READY=1` (its other lines, such
/// as `STATUS=`, are not kept).
fn says_ready(message: &[u8]) -> bool {
    message
        .split(|&b| b == b'\n')
        .any(|line| line == b"READY=1")
}

/// The read ends of the `notification-fd` pipes of programs not yet ready.
#[derive(Default)]
pub struct ReadyPipes {
    pipes: BTreeMap<(String, Which), OwnedFd>,
}

impl ReadyPipes {
    /// A new pipe for the program about to start (replacing its last one);
    /// returns the write end, for the child alone.
    pub fn open(&mut self, service: &str, which: Which) -> nix::Result<OwnedFd> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        nix::fcntl::fcntl(
            &read,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        self.pipes.insert((service.to_owned(), which), read);
        Ok(write)
    }

    /// Whether no program waits to say it is ready on one.
    pub fn is_empty(&self) -> bool {
        self.pipes.is_empty()
    }

    /// Drops the pipe of a program that is gone or started without one.
    pub fn close(&mut self, service: &str, which: Which) {
        self.pipes.remove(&(service.to_owned(), which));
    }

    /// The descriptors to poll, with what they belong to.
    pub fn fds(&self) -> impl Iterator<Item = (&(String, Which), BorrowedFd<'_>)> {
        self.pipes.iter().map(|(key, fd)| (key, fd.as_fd()))
    }

    /// Reads the pipe of `key`: a newline makes its program ready (and the
    /// pipe is dropped, as s6 stops reading); so does nothing else, and end
    /// of file drops it too.
    pub fn read(&mut self, key: &(String, Which)) -> Option<Notifier> {
        let fd = self.pipes.get(key)?;
        let mut buf = [0u8; 512];
        let outcome = loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break None,
                Ok(n) if buf[..n].contains(&b'\n') => {
                    break Some(Notifier::Service {
                        service: key.0.clone(),
                        which: key.1,
                    });
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return None,
                Err(err) => {
                    debug!("{}: cannot read its notification fd: {}", key.0, err.desc());
                    break None;
                }
            }
        };
        self.pipes.remove(key);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_a_line_of_its_own() {
        for (message, ready) in [
            (&b"READY=1"[..], true),
            (b"STATUS=up\nREADY=1\n", true),
            (b"READY=1\nSTATUS=serving", true),
            (b"READY=0", false),
            (b"READY=10", false),
            (b"STATUS=READY=1", false),
            (b"", false),
        ] {
            assert_eq!(says_ready(message), ready, "{message:?}");
        }
    }
}
