//! Control clients: the socket `sv` and `moltd` connect to, one request
//! line each. Requests for services go to the supervisor; `update\t` lines
//! are forwarded unparsed to the update agent, which answers them (or the
//! reason it cannot, if it is down).

use super::Runner;
use super::self_update::Requester;
use crate::control;
use crate::services::control::Request;
use crate::services::machine::{ClientId, Event};
use crate::sys::io;
use log::warn;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// The longest request a client may send.
const MAX_REQUEST: usize = 64 * 1024;

/// Binds the control socket, creating its folder. Service mode works
/// without it, so a failure is a warning.
pub(super) fn open_control(path: &Path) -> Option<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(err) = std::fs::create_dir_all(parent) {
            warn!(
                "cannot create {}: {err}; sv will not work",
                parent.display()
            );
            return None;
        }
    }
    io::bind_private(path)
        .inspect_err(|err| {
            warn!(
                "cannot listen on {}: {err}; sv will not work",
                path.display()
            )
        })
        .ok()
}

/// A connected control client.
pub(super) struct Client {
    pub(super) stream: UnixStream,
    request: Vec<u8>,
    /// Its request is being handled: wait for the reply, read no more.
    pub(super) asked: bool,
}

impl Client {
    /// A client whose request is being handled (it gets its reply).
    pub(super) fn answering(stream: UnixStream) -> Client {
        Client {
            stream,
            request: Vec::new(),
            asked: true,
        }
    }
}

impl Runner {
    pub(super) fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.next_client += 1;
            self.clients.insert(
                self.next_client,
                Client {
                    stream,
                    request: Vec::new(),
                    asked: false,
                },
            );
        }
    }

    pub(super) fn read_client(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let closed = loop {
            match client.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => client.request.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let Some(end) = client.request.iter().position(|&b| b == b'\n') else {
            if closed || client.request.len() > MAX_REQUEST {
                self.clients.remove(&id);
            }
            return;
        };
        client.asked = true;
        let line = std::str::from_utf8(&client.request[..end]).unwrap_or_default();
        if line.starts_with(control::UPDATE_PREFIX) {
            let line = line.to_owned();
            let forwarded = match &mut self.agent {
                Some(link) => link.forward(id, &line),
                None => Err(control::NOT_CONFIGURED.to_owned()),
            };
            if let Err(why) = forwarded {
                self.reply(id, &control::encode_reply(&Err(why)));
            }
            return;
        }
        if let Some(request) = control::SelfUpdate::decode(line) {
            match request {
                Ok(request) => self.self_update(request, Requester::Socket(id)),
                Err(bad) => self.reply(id, &control::encode_reply(&Err(bad.to_string()))),
            }
            return;
        }
        match Request::decode(line) {
            Some(request) => self.handle(Event::Command {
                client: ClientId::Socket(id),
                request,
            }),
            None => {
                let _ = client.stream.write_all(b"error\tbad request\n");
                self.clients.remove(&id);
            }
        }
    }

    /// Writes to a client and keeps it (a `pending` line).
    pub(super) fn write_client(&mut self, id: u64, text: &str) {
        if let Some(client) = self.clients.get_mut(&id) {
            let _ = client.stream.write_all(text.as_bytes());
        }
    }

    pub(super) fn reply(&mut self, id: u64, text: &str) {
        let Some(mut client) = self.clients.remove(&id) else {
            return;
        };
        // Replies are small; a client that does not read them loses them.
        let _ = client.stream.write_all(text.as_bytes());
    }
}
