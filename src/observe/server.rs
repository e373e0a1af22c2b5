//! The HTTP listener (`MOLTD_LISTEN`): hyper's HTTP/1 server.
//!
//! Why hyper: it is already in the tree as reqwest's HTTP stack, so serving
//! with it costs only its server half, not a second HTTP implementation with
//! its own parsing bugs. It runs on a current-thread tokio runtime of its
//! own, on one thread; with no connection open that thread sleeps in
//! `epoll_wait` with no timer armed, so an idle moltd stays asleep.
//!
//! Robustness: at most [`MAX_CONNECTIONS`] connections are served at once,
//! a request head must arrive within [`HEAD_DEADLINE`] and fit in
//! [`MAX_HEAD`] bytes, and each connection carries one request (no
//! keep-alive), so a slow or hostile client only holds its own slot. When
//! every slot is taken, the next client is accepted and the oldest
//! connection that is not being handled is closed to make room (oldest-idle
//! eviction): one whose request head has not arrived yet, or whose answer
//! is ready and waits for the client to read it (a client that asks for
//! `/status` and never reads would otherwise hold its slot for good). If
//! every connection is being handled, the newcomer waits for a slot and
//! further clients wait in the listen backlog, so PID 1 never holds more
//! than one descriptor beyond the slots.
//! Why eviction rather than a deadline alone: a client that keeps a few
//! hundred idle connections open would otherwise hold every slot and fill
//! the backlog for as long as it likes, and `/healthz` (what restarts the
//! pod) would go unanswered; with eviction its connections churn through
//! the slots while a client that sends its request at once is served, and
//! the listen backlog ([`BACKLOG`]) is long enough that their reconnects do
//! not make the kernel drop the SYN of a probe.
//! Nothing here touches the event loop: state comes from snapshots, and
//! update requests go to the updater thread on a blocking-pool thread,
//! because an update can take as long as its download and health check;
//! one that cannot run now (an update in progress) is answered at once.

use super::{Secret, Shared};
use crate::control::UpdateRequest;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

/// Connections served at once. Each idle one costs a descriptor and a few
/// KiB; enough that a newcomer's head arrives long before it becomes the
/// oldest idle connection, even while a flood churns through the slots.
const MAX_CONNECTIONS: usize = 64;
/// The listen backlog (std's is 128). While a flood churns through the
/// slots, the kernel drops a SYN that finds the queue full, and the client
/// retries only a second later: past a probe's usual timeout. A queue
/// longer than a burst of a thousand connections keeps the probe in line
/// instead; queued connections cost kernel memory, not PID 1's descriptors.
pub const BACKLOG: i32 = 1024;
/// The longest request head (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;
/// How long a client gets to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors), so it is not retried in
/// a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type Reply = Response<Full<Bytes>>;

/// Every open connection, by accept order (so the first is the oldest).
type Connections = Arc<Mutex<BTreeMap<u64, Connection>>>;

struct Connection {
    task: AbortHandle,
    /// Its request is being handled: not to be evicted. Before the head
    /// arrives and once the answer is ready, it only waits for the client.
    handling: bool,
}

/// What every request handler needs.
struct Context {
    shared: Arc<Shared>,
    token: Option<Secret>,
}

/// Binds `addr` and serves it from a thread.
pub fn start(
    listener: std::net::TcpListener,
    token: Option<Secret>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(MAX_CONNECTIONS)
        .thread_stack_size(256 * 1024)
        .build()
        .map_err(|err| format!("cannot start the http runtime: {err}"))?;
    let listener = {
        // Registers the socket with this runtime, which then serves it.
        let _entered = runtime.enter();
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|err| format!("cannot serve the listening socket: {err}"))?
    };
    let context = Arc::new(Context { shared, token });
    super::spawn("http", move || runtime.block_on(serve(listener, context)))
}

async fn serve(listener: tokio::net::TcpListener, context: Arc<Context>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = Connections::default();
    for id in 0u64.. {
        // Accept, then find a slot: while every one is taken, the clients
        // behind this one wait in the kernel's listen backlog and hold none
        // of PID 1's descriptors (which the supervisor needs).
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                log::debug!("http: accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                evict_oldest(&connections);
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        let context = context.clone();
        let open = connections.clone();
        let task = tokio::spawn(async move {
            let headed = open.clone();
            let service = service_fn(move |request| {
                handling(&headed, id, true);
                let (context, headed) = (context.clone(), headed.clone());
                async move {
                    let reply = route(&context, request).await;
                    handling(&headed, id, false);
                    Ok::<_, Infallible>(reply)
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_DEADLINE)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                log::debug!("http: connection ended: {err}");
            }
            if let Ok(mut open) = open.lock() {
                open.remove(&id);
            }
            drop(slot);
        });
        // The task cannot have run yet: this thread is the runtime's only one.
        if let Ok(mut open) = connections.lock() {
            let task = task.abort_handle();
            open.insert(
                id,
                Connection {
                    task,
                    handling: false,
                },
            );
        }
    }
}

/// Closes the oldest connection that is not being handled, if any:
/// aborting its task drops the socket and frees its slot.
fn evict_oldest(connections: &Connections) {
    let Ok(mut open) = connections.lock() else {
        return;
    };
    let oldest = open.iter().find(|(_, c)| !c.handling).map(|(id, _)| *id);
    if let Some(connection) = oldest.and_then(|id| open.remove(&id)) {
        log::debug!("http: every slot taken; closing the oldest idle connection");
        connection.task.abort();
    }
}

/// Marks whether a connection's request is being handled.
fn handling(connections: &Connections, id: u64, handling: bool) {
    if let Ok(mut open) = connections.lock() {
        if let Some(connection) = open.get_mut(&id) {
            connection.handling = handling;
        }
    }
}

async fn route(context: &Context, request: Request<Incoming>) -> Reply {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or_default();
    let shared = &context.shared;
    match (request.method(), path) {
        (&Method::GET, "/healthz") => match shared.services().healthy() {
            true => text(StatusCode::OK, "ok\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n"),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics(),
        ),
        (&Method::GET, "/status") => reply(StatusCode::OK, "application/json", shared.status()),
        (&Method::POST, "/update" | "/rollback" | "/self-update") => {
            let Some(token) = &context.token else {
                let why = "disabled: set MOLTD_API_TOKEN to enable\n";
                return text(StatusCode::NOT_FOUND, why);
            };
            let given = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .unwrap_or_default();
            if !token.matches(given.as_bytes()) {
                let mut refused = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                let challenge = HeaderValue::from_static("Bearer");
                refused.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                return refused;
            }
            let op = match path {
                "/rollback" => Ok(UpdateRequest::Rollback),
                "/self-update" => match self_update(query) {
                    Ok(op) => Ok(op),
                    Err(bad) => return text(StatusCode::BAD_REQUEST, format!("{bad}\n")),
                },
                _ => UpdateRequest::update(
                    query.split('&').any(|p| p == "check"),
                    query.split('&').any(|p| p == "force"),
                ),
            };
            let op = match op {
                Ok(op) => op,
                Err(bad) => return text(StatusCode::BAD_REQUEST, format!("{bad}\n")),
            };
            let shared = shared.clone();
            let asked = tokio::task::spawn_blocking(move || shared.ask(op)).await;
            match asked.ok().flatten() {
                Some(Ok(done)) => text(StatusCode::OK, format!("{done}\n")),
                Some(Err(problem)) => text(StatusCode::CONFLICT, format!("{problem}\n")),
                None => not_configured(),
            }
        }
        (_, "/healthz" | "/metrics" | "/status" | "/update" | "/rollback" | "/self-update") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `POST /self-update?file=PATH[&force]`: replace PID 1 with the binary
/// PATH (an absolute path on the container's file system, percent-encoded
/// as a query value); with no query, check `MOLTD_SELF_REPO` now.
fn self_update(query: &str) -> Result<UpdateRequest, String> {
    let url = reqwest::Url::parse(&format!("http://moltd/?{query}"))
        .map_err(|err| format!("bad request: {err}"))?;
    let (mut file, mut force) = (None, false);
    for (name, value) in url.query_pairs() {
        match (name.as_ref(), value.as_ref()) {
            ("file", path) if file.is_none() => file = Some(path.to_owned()),
            ("force", "" | "1" | "true") => force = true,
            ("file", _) => return Err("bad request: file given twice".into()),
            (other, _) => {
                return Err(format!(
                    "bad request: unknown parameter {other:?} (file=PATH and force are known)"
                ));
            }
        }
    }
    let request = match (file, force) {
        (Some(path), force) => crate::control::SelfUpdate {
            path: path.into(),
            force,
        },
        (None, true) => {
            return Err("bad request: force goes with file=PATH (a newer moltd from MOLTD_SELF_REPO needs no force)".into());
        }
        (None, false) => return Ok(UpdateRequest::Itself(None)),
    };
    request.encode().map_err(|bad| bad.to_string())?;
    Ok(UpdateRequest::Itself(Some(request)))
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are the same.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim_start())
}

fn not_configured() -> Reply {
    let why = "updates are not configured (set MOLTD_REPO or MOLTD_URL)\n";
    text(StatusCode::NOT_FOUND, why)
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(code, "text/plain", body)
}

fn reply(code: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    let kind = HeaderValue::from_static(kind);
    response.headers_mut().insert(CONTENT_TYPE, kind);
    response
}

#[cfg(test)]
mod tests {
    use super::{UpdateRequest, bearer, self_update};

    #[test]
    fn self_update_queries() {
        let file = |path: &str, force| {
            Ok(UpdateRequest::Itself(Some(crate::control::SelfUpdate {
                path: path.into(),
                force,
            })))
        };
        assert_eq!(self_update(""), Ok(UpdateRequest::Itself(None)));
        assert_eq!(self_update("file=/tmp/moltd"), file("/tmp/moltd", false));
        assert_eq!(
            self_update("file=%2Ftmp%2Fmy%20moltd&force"),
            file("/tmp/my moltd", true)
        );
        for (query, why) in [
            ("file=moltd", "absolute"),
            ("file=", "absolute"),
            ("file=/a%09b", "tab"),
            ("force", "force goes with file"),
            ("file=/a&file=/b", "twice"),
            ("check", "unknown parameter"),
        ] {
            let err = self_update(query).unwrap_err();
            assert!(err.contains(why), "{query}: {err}");
        }
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        for value in [
            "Bearer tok",
            "bearer tok",
            "BEARER tok",
            "BeArEr  tok ",
            " Bearer tok",
        ] {
            assert_eq!(bearer(value), Some("tok"), "{value:?}");
        }
        for value in ["Basic tok", "Bearertok", "Bearer", "tok", ""] {
            assert_ne!(bearer(value), Some("tok"), "{value:?}");
        }
    }
}
