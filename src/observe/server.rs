//! The HTTP listener (`MOLTD_LISTEN`): a minimal HTTP/1.1 responder.
//!
//! Why not hyper's server side: hyper is in the tree only as reqwest's
//! client; its server needs `http1` + `server` features and a tokio
//! runtime driven by us, which cost more binary and more RSS than five
//! routes of `Connection: close` request/response need. Requests are tiny
//! (no bodies are read), so a line reader with hard limits is enough.
//!
//! Robustness: each connection gets its own small thread, at most
//! [`MAX_CONNECTIONS`] at once (more are turned away with 503); a request
//! head must arrive within [`HEAD_DEADLINE`] and fit in [`MAX_HEAD`] bytes,
//! and writes time out, so a slow or hostile client only holds its own
//! thread. Nothing here touches the event loop: state comes from
//! snapshots, and update requests go straight to the updater thread.

use super::{Secret, Shared};
use crate::services::control::{UpdateOp, UpdateReply};
use crate::services::updates::{ReplyTo, ToAgent};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// How long a client gets to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client gets to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves it from a thread.
pub fn start(addr: SocketAddr, token: Option<Secret>, shared: Arc<Shared>) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    let token = Arc::new(token);
    let active = Arc::new(AtomicUsize::new(0));
    super::spawn("http", move || {
        for stream in listener.incoming().flatten() {
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                respond(stream, 503, "text/plain", b"busy\n", &[]);
                continue;
            }
            let (shared, token, done) = (shared.clone(), token.clone(), active.clone());
            let served = super::spawn("http-client", move || {
                serve(stream, &shared, token.as_ref().as_ref());
                done.fetch_sub(1, Ordering::SeqCst);
            });
            if served.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    authorization: Option<String>,
}

fn serve(mut stream: TcpStream, shared: &Shared, token: Option<&Secret>) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return respond(stream, 400, "text/plain", b"bad request\n", &[]);
    };
    let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    match (head.method.as_str(), path) {
        ("GET", "/healthz") => match shared.services().healthy() {
            true => respond(stream, 200, "text/plain", b"ok\n", &[]),
            false => respond(stream, 503, "text/plain", b"unhealthy\n", &[]),
        },
        ("GET", "/metrics") => {
            let text = shared.metrics();
            let kind = "text/plain; version=0.0.4; charset=utf-8";
            respond(stream, 200, kind, text.as_bytes(), &[]);
        }
        ("GET", "/status") => match shared.update() {
            Some(status) => {
                let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
                respond(stream, 200, "application/json", &json, &[]);
            }
            None => not_configured(stream),
        },
        ("POST", "/update" | "/rollback") => {
            let Some(token) = token else {
                let text = b"disabled: set MOLTD_API_TOKEN to enable\n";
                return respond(stream, 404, "text/plain", text, &[]);
            };
            let given = head
                .authorization
                .as_deref()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if !token.matches(given.trim().as_bytes()) {
                let challenge = [("WWW-Authenticate", "Bearer")];
                return respond(stream, 401, "text/plain", b"unauthorized\n", &challenge);
            }
            let op = match path {
                "/rollback" => UpdateOp::Rollback,
                _ => UpdateOp::Update {
                    check_only: query.split('&').any(|p| p == "check"),
                    force: query.split('&').any(|p| p == "force"),
                },
            };
            match ask_updater(shared, op) {
                Some(Ok(text)) => respond(
                    stream,
                    200,
                    "text/plain",
                    format!("{text}\n").as_bytes(),
                    &[],
                ),
                Some(Err(problem)) => respond(
                    stream,
                    409,
                    "text/plain",
                    format!("{problem}\n").as_bytes(),
                    &[],
                ),
                None => not_configured(stream),
            }
        }
        (_, "/healthz" | "/metrics" | "/status" | "/update" | "/rollback") => {
            respond(stream, 405, "text/plain", b"method not allowed\n", &[])
        }
        _ => respond(stream, 404, "text/plain", b"not found\n", &[]),
    }
}

fn not_configured(stream: TcpStream) {
    let text = b"updates are not configured (set MOLTD_REPO or MOLTD_URL)\n";
    respond(stream, 404, "text/plain", text, &[]);
}

/// Hands the request to the updater thread and waits for its answer
/// (an update can take as long as its download and health check).
fn ask_updater(shared: &Shared, op: UpdateOp) -> Option<UpdateReply> {
    let to_agent = shared.to_agent.get()?;
    let (reply, replied) = mpsc::channel();
    let to = ReplyTo::Http(reply);
    to_agent.send(ToAgent::Client { to, op }).ok()?;
    Some(
        replied
            .recv()
            .unwrap_or_else(|_| Err("the updater has ended".into())),
    )
}

/// Reads the request line and headers, within the size and time limits.
fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return None;
        }
    }
    let text = std::str::from_utf8(&head).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_owned());
    Some(Head {
        method,
        path,
        authorization,
    })
}

fn respond(mut stream: TcpStream, code: u16, kind: &str, body: &[u8], extra: &[(&str, &str)]) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}
