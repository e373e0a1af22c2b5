//! The client side of the control socket, for `sv`, `moltd status`,
//! `moltd update` and `moltd rollback`.

use super::control::{self, Answer, Request, UpdateOp, UpdateReply};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long to wait for the supervisor beyond the wait asked for.
const GRACE: Duration = Duration::from_secs(5);

/// Why a request got no answer. Printed whole by the clients, so each
/// message carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("moltd not running: cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("lost contact with moltd: {0}")]
    Exchange(std::io::Error),
    #[error("unexpected reply from moltd: {0:?}")]
    BadReply(String),
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

/// Sends one request to the updater inside the supervisor at `socket` and
/// waits for its reply, however long the update takes (the supervisor
/// always answers: every step of an update has a deadline).
pub fn ask_updater(socket: &Path, op: UpdateOp) -> Result<UpdateReply, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(ClientError::Connect)?;
    stream
        .write_all(op.encode().as_bytes())
        .map_err(ClientError::Exchange)?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(ClientError::Exchange)?;
    control::decode_update_reply(&text).ok_or(ClientError::BadReply(text))
}
