//! The HTTP listener (`MOLTD_LISTEN`): hyper's HTTP/1 server.
//!
//! Why hyper: it is already in the tree as reqwest's HTTP stack, so serving
//! with it costs only its server half, not a second HTTP implementation with
//! its own parsing bugs. It runs on a current-thread tokio runtime of its
//! own, on one thread; with no connection open that thread sleeps in
//! `epoll_wait` with no timer armed, so an idle moltd stays asleep.
//!
//! Robustness: at most [`MAX_CONNECTIONS`] connections are served at once
//! (more wait in the listen backlog, holding no descriptor of moltd's), a request head must arrive within [`HEAD_DEADLINE`] and
//! fit in [`MAX_HEAD`] bytes, and each connection carries one request
//! (no keep-alive), so a slow or hostile client only holds its own slot.
//! Nothing here touches the event loop: state comes from snapshots, and
//! update requests go to the updater thread on a blocking-pool thread,
//! because an update can take as long as its download and health check;
//! one that cannot run now (an update in progress) is answered at once.

use super::{Secret, Shared};
use crate::services::control::{UpdateOp, UpdateReply};
use crate::services::updates::{Admission, ReplyTo, ToAgent, admit};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// The longest request head (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;
/// How long a client gets to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors), so it is not retried in
/// a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type Reply = Response<Full<Bytes>>;

/// What every request handler needs.
struct Context {
    shared: Arc<Shared>,
    token: Option<Secret>,
}

/// Binds `addr` and serves it from a thread.
pub fn start(addr: SocketAddr, token: Option<Secret>, shared: Arc<Shared>) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(MAX_CONNECTIONS)
        .thread_stack_size(256 * 1024)
        .build()
        .map_err(|err| format!("cannot start the http runtime: {err}"))?;
    let context = Arc::new(Context { shared, token });
    super::spawn("http", move || runtime.block_on(serve(listener, context)))
}

async fn serve(listener: std::net::TcpListener, context: Arc<Context>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => return log::error!("cannot serve MOLTD_LISTEN: {err}"),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then accept: while all are taken, further clients
        // wait in the kernel's listen backlog and hold none of PID 1's
        // descriptors (which the supervisor needs for pipes and sockets).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                log::debug!("http: accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let context = context.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let context = context.clone();
                async move { Ok::<_, Infallible>(route(&context, request).await) }
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
            drop(slot);
        });
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
        (&Method::GET, "/status") => match shared.update() {
            Some(status) => {
                let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
                reply(StatusCode::OK, "application/json", json)
            }
            None => not_configured(),
        },
        (&Method::POST, "/update" | "/rollback") => {
            let Some(token) = &context.token else {
                let why = "disabled: set MOLTD_API_TOKEN to enable\n";
                return text(StatusCode::NOT_FOUND, why);
            };
            let given = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if !token.matches(given.trim().as_bytes()) {
                let mut refused = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                let challenge = HeaderValue::from_static("Bearer");
                refused.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                return refused;
            }
            let op = match path {
                "/rollback" => UpdateOp::Rollback,
                _ => UpdateOp::Update {
                    check_only: query.split('&').any(|p| p == "check"),
                    force: query.split('&').any(|p| p == "force"),
                },
            };
            let shared = shared.clone();
            let asked = tokio::task::spawn_blocking(move || ask_updater(&shared, op)).await;
            match asked.ok().flatten() {
                Some(Ok(done)) => text(StatusCode::OK, format!("{done}\n")),
                Some(Err(problem)) => text(StatusCode::CONFLICT, format!("{problem}\n")),
                None => not_configured(),
            }
        }
        (_, "/healthz" | "/metrics" | "/status" | "/update" | "/rollback") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn not_configured() -> Reply {
    let why = "updates are not configured (set MOLTD_REPO or MOLTD_URL)\n";
    text(StatusCode::NOT_FOUND, why)
}

/// Answers at once what cannot run now (an update while one is in
/// progress: 409), else hands the request to the updater thread and waits
/// for its answer (an update can take as long as its download and health
/// check).
fn ask_updater(shared: &Shared, op: UpdateOp) -> Option<UpdateReply> {
    let to_agent = shared.to_agent.get()?;
    let status = shared.update.get()?;
    if let Admission::Answer(reply) = admit(shared.work.get()?, status, &op) {
        return Some(reply);
    }
    let (reply, replied) = mpsc::channel();
    let to = ReplyTo::Http(reply);
    to_agent.send(ToAgent::Client { to, op }).ok()?;
    Some(
        replied
            .recv()
            .unwrap_or_else(|_| Err("the updater has ended".into())),
    )
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
