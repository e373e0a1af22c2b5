//! The client side of the control socket, for `sv`, `moltd status`,
//! `moltd update` and `moltd rollback`.
//!
//! Every exchange has a deadline, and an expired one says which it was: the
//! connect (a supervisor too busy to accept), the reply (one that accepted
//! but does not answer), or, for the updater's requests, the outcome (the
//! supervisor took the request, said what it does, and is still at it). A
//! liveness probe that runs `moltd status` gets an answer or a clear error
//! within its own timeout, never a hang.

use super::control::{Answer, Request};
use crate::control::{self, SelfUpdate, UpdateReply, UpdateRequest};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::time::TimeVal;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The variable that sets [`Control::timeout`].
pub const TIMEOUT_VAR: &str = "MOLTD_CLIENT_TIMEOUT";
/// The variable that sets [`Control::wait`].
pub const WAIT_VAR: &str = "MOLTD_CLIENT_WAIT";
/// How long to wait for the supervisor to accept and to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `moltd update`/`rollback` wait for the outcome of a request the
/// supervisor took (a download, a switch and a health check).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30 * 60);

/// The longest either may be (a week): deadlines stay representable.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a request got no answer. Printed whole by the clients, so each
/// message carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("moltd not running: cannot connect: {0}")]
    NotRunning(std::io::Error),
    #[error("permission denied: cannot connect to moltd (run as the user moltd runs as)")]
    PermissionDenied,
    #[error("cannot connect to moltd: {0}")]
    Connect(std::io::Error),
    #[error("moltd did not accept the connection within {} (connect timeout; {TIMEOUT_VAR})", secs(.0))]
    ConnectTimeout(Duration),
    #[error("no answer from moltd within {} (reply timeout; {TIMEOUT_VAR})", secs(.0))]
    ReplyTimeout(Duration),
    #[error(
        "no outcome from moltd within {} (outcome timeout; {WAIT_VAR}): it goes on in moltd, see moltd status",
        secs(.0)
    )]
    OutcomeTimeout(Duration),
    #[error("lost contact with moltd: {0}")]
    Exchange(std::io::Error),
    #[error("unexpected reply from moltd: {0:?}")]
    BadReply(String),
    #[error("{0}")]
    BadRequest(String),
}

fn secs(duration: &Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// Where the supervisor listens, and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
    /// For the connection to be accepted, and for the first answer (beyond
    /// the wait a request asks for, as `sv -w` does).
    pub timeout: Duration,
    /// For the outcome of an update, rollback or unmark once the supervisor
    /// took it.
    pub wait: Duration,
}

impl Control {
    /// The default timeouts on `socket`.
    pub fn new(socket: PathBuf) -> Control {
        Control {
            socket,
            timeout: DEFAULT_TIMEOUT,
            wait: DEFAULT_WAIT,
        }
    }

    /// Connects within the timeout: a supervisor whose listen queue is full
    /// makes a blocking connect wait, for as long as the send timeout.
    fn connect(&self) -> Result<UnixStream, ClientError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|errno| ClientError::Connect(errno.into()))?;
        let timeout = TimeVal::new(
            self.timeout.as_secs() as _,
            self.timeout.subsec_micros() as _,
        );
        socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)
            .map_err(|errno| ClientError::Connect(errno.into()))?;
        let address =
            UnixAddr::new(&self.socket).map_err(|errno| ClientError::Connect(errno.into()))?;
        match socket::connect(fd.as_raw_fd(), &address) {
            Ok(()) => Ok(UnixStream::from(fd)),
            Err(Errno::EAGAIN) => Err(ClientError::ConnectTimeout(self.timeout)),
            Err(Errno::EACCES | Errno::EPERM) => Err(ClientError::PermissionDenied),
            Err(errno @ (Errno::ENOENT | Errno::ECONNREFUSED)) => {
                Err(ClientError::NotRunning(errno.into()))
            }
            Err(errno) => Err(ClientError::Connect(errno.into())),
        }
    }

    /// Sends one request to the supervisor and returns its answers, one
    /// per service asked about (or per service, when none was named).
    pub fn ask(&self, request: &Request) -> Result<Vec<Answer>, ClientError> {
        let mut stream = self.connect()?;
        stream
            .write_all(request.encode().as_bytes())
            .map_err(ClientError::Exchange)?;
        let limit = request.wait.unwrap_or_default() + self.timeout;
        let mut text = Vec::new();
        if read_until(&mut stream, &mut text, Instant::now() + limit, |_| false)? != Ended::Closed {
            return Err(ClientError::ReplyTimeout(limit));
        }
        String::from_utf8_lossy(&text)
            .lines()
            .map(|line| Answer::decode(line).ok_or(ClientError::BadReply(line.to_owned())))
            .collect()
    }

    /// Sends one request to the updater inside the supervisor and returns
    /// its reply. A request the updater carries out is acknowledged first
    /// with what it does: `pending` gets that text, and the outcome is then
    /// waited for up to [`Control::wait`].
    pub fn ask_updater(
        &self,
        request: UpdateRequest,
        pending: &mut dyn FnMut(&str),
    ) -> Result<UpdateReply, ClientError> {
        self.exchange(&request.encode(), pending)
    }

    /// Asks PID 1 to replace itself with the binary `request` names; the
    /// reply comes from the new PID 1 once it resumed (or from the old one,
    /// with why nothing changed).
    pub fn ask_self_update(
        &self,
        request: &SelfUpdate,
        pending: &mut dyn FnMut(&str),
    ) -> Result<UpdateReply, ClientError> {
        let line = request
            .encode()
            .map_err(|bad| ClientError::BadRequest(bad.to_string()))?;
        self.exchange(&format!("{line}\n"), pending)
    }

    /// Sends one request line and reads a reply that may start with a
    /// `pending` line (then the outcome may take [`Control::wait`]).
    fn exchange(
        &self,
        line: &str,
        pending: &mut dyn FnMut(&str),
    ) -> Result<UpdateReply, ClientError> {
        let mut stream = self.connect()?;
        stream
            .write_all(line.as_bytes())
            .map_err(ClientError::Exchange)?;
        let mut text = Vec::new();
        let deadline = Instant::now() + self.timeout;
        let first_line = |text: &[u8]| text.contains(&b'\n');
        if read_until(&mut stream, &mut text, deadline, first_line)? == Ended::Expired {
            return Err(ClientError::ReplyTimeout(self.timeout));
        }
        let (deadline, expired) = match text.strip_prefix(control::PENDING.as_bytes()) {
            Some(rest) => {
                let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                pending(&String::from_utf8_lossy(&rest[..end]));
                text.drain(..(control::PENDING.len() + end + 1).min(text.len()));
                let outcome = ClientError::OutcomeTimeout(self.wait);
                (Instant::now() + self.wait, outcome)
            }
            None => (deadline, ClientError::ReplyTimeout(self.timeout)),
        };
        if read_until(&mut stream, &mut text, deadline, |_| false)? != Ended::Closed {
            return Err(expired);
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        control::decode_reply(&text).ok_or(ClientError::BadReply(text))
    }
}

/// How a read ended.
#[derive(PartialEq, Eq)]
enum Ended {
    /// The supervisor closed the connection: the reply is whole.
    Closed,
    /// Enough was read.
    Enough,
    Expired,
}

/// Reads into `text` until the supervisor closes the connection, `enough`
/// holds for what was read, or `deadline` passes.
fn read_until(
    stream: &mut UnixStream,
    text: &mut Vec<u8>,
    deadline: Instant,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<Ended, ClientError> {
    let mut buf = [0u8; 4096];
    while !enough(text) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Ended::Expired);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::Exchange)?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(Ended::Closed),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(err) => match err.kind() {
                ErrorKind::Interrupted => {}
                ErrorKind::WouldBlock | ErrorKind::TimedOut => return Ok(Ended::Expired),
                _ => return Err(ClientError::Exchange(err)),
            },
        }
    }
    Ok(Ended::Enough)
}
