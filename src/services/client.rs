//! The client side of the control socket, for `sv` and `moltd status`.

use super::control::{Answer, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long to wait for the supervisor beyond the wait asked for.
const GRACE: Duration = Duration::from_secs(5);

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    Exchange(std::io::Error),
    BadReply(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ClientError::Connect(err) => write!(f, "moltd not running: cannot connect: {err}"),
            ClientError::Exchange(err) => write!(f, "lost contact with moltd: {err}"),
            ClientError::BadReply(line) => write!(f, "unexpected reply from moltd: {line:?}"),
        }
    }
}

/// Sends one request to the supervisor at `socket` and returns its answers,
/// one per service asked about (or per service, when none was named).
pub fn ask(socket: &Path, request: &Request) -> Result<Vec<Answer>, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(ClientError::Connect)?;
    let timeout = request.wait.unwrap_or_default() + GRACE;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.encode().as_bytes()))
        .map_err(ClientError::Exchange)?;
    let mut answers = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(ClientError::Exchange)?;
        answers.push(Answer::decode(&line).ok_or(ClientError::BadReply(line))?);
    }
    Ok(answers)
}
