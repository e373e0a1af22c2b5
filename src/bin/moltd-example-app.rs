//! The container image's example payload app (`/app/releases/v0.0.0/bin/app`),
//! built from this repository so that the image's first command shows a
//! restart no client notices: it serves on the socket moltd holds for it.
//!
//! - **Its socket.** When `LISTEN_PID` is its own pid and `LISTEN_FDS` is at
//!   least 1 (systemd's `sd_listen_fds(3)`, which moltd's `listen` file
//!   speaks), it accepts on descriptor 3; otherwise it binds the address
//!   given as its one argument, else `0.0.0.0:$PORT` (8080) itself.
//! - **What it serves.** `GET /VERSION` (and `/`) answers the `VERSION` file
//!   of the release it runs from (`bin/..`): the image's health check and
//!   readiness probe. HTTP/1.0, one request per connection.
//! - **Readiness.** `READY=1` on `NOTIFY_SOCKET` once it accepts.
//! - **Stopping.** TERM or INT, read from a signalfd beside the socket, ends
//!   it with status 0 once the request in hand is answered; connections
//!   still queued on a held socket belong to the next start.
//!
//! One thread answering one connection at a time keeps it small (it ships
//! in every image); a slow client is cut off after [`CLIENT_TIMEOUT`]. The
//! listening socket is made non-blocking: with two generations accepting on
//! one held socket (an overlap), the one that loses a connection to the
//! other must go back to waiting for TERM, not block in `accept`.

use moltd::sys::io::{Inherited, take_inherited};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read; the rest is not looked at.
const MAX_REQUEST: usize = 8192;
/// The port bound without a held socket and without an argument or `PORT`.
const DEFAULT_PORT: &str = "8080";

/// Why the app cannot start.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("cannot find the release folder from the program's path")]
    NoRelease(#[source] std::io::Error),
    #[error("cannot read {}", .0.display())]
    Version(PathBuf, #[source] std::io::Error),
    #[error("{0:?} is not an address and port (HOST:PORT, or PORT in $PORT)")]
    Address(String),
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("LISTEN_FDS is set for this process, but descriptor 3 is not a socket")]
    NotASocket,
    #[error("descriptor 3 (LISTEN_FDS) is not a TCP socket")]
    NotTcp(#[source] std::io::Error),
    #[error("cannot set up the listening socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot take TERM and INT from a signalfd")]
    Signals(#[source] Errno),
    #[error("cannot wait for connections and signals")]
    Poll(#[source] Errno),
}

fn main() {
    if let Err(err) = run() {
        let mut text = format!("app: {err}");
        let mut cause = std::error::Error::source(&err);
        while let Some(inner) = cause {
            text.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        eprintln!("{text}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), AppError> {
    // Blocked before anything else, so a TERM during start-up waits in the
    // signalfd instead of killing the process by default.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().map_err(AppError::Signals)?;
    let signals = SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC).map_err(AppError::Signals)?;

    let version = read_version()?;
    let (listener, how) = listener()?;
    listener.set_nonblocking(true).map_err(AppError::Socket)?;
    let address = listener.local_addr().map_err(AppError::Socket)?;
    println!("app {version} serving on {address} ({how})");
    notify_ready(&version);

    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(AppError::Poll(errno)),
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(false) {
            let signal = signals.read_signal().ok().flatten();
            let name = signal
                .and_then(|info| Signal::try_from(info.ssi_signo as i32).ok())
                .map_or("a signal", Signal::as_str);
            println!("app {version}: {name}, stopping");
            return Ok(());
        }
        match listener.accept() {
            Ok((stream, _)) => serve(stream, &version),
            // Another process took it (an overlap), or the client left.
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => eprintln!("app: cannot accept: {err}"),
        }
    }
}

/// The `VERSION` file of the release this program belongs to (`bin/..`),
/// without its trailing newline.
fn read_version() -> Result<String, AppError> {
    let program = std::env::current_exe().map_err(AppError::NoRelease)?;
    let release = program
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| AppError::NoRelease(ErrorKind::NotFound.into()))?;
    let path = release.join("VERSION");
    let text = std::fs::read_to_string(&path).map_err(|err| AppError::Version(path, err))?;
    Ok(text.trim_end().to_owned())
}

/// The socket moltd passed (descriptor 3, when `LISTEN_PID` names this
/// process as `sd_listen_fds(3)` requires), else one bound here; and which.
fn listener() -> Result<(TcpListener, &'static str), AppError> {
    if passed_sockets(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    ) > 0
    {
        let fd = take_inherited(3, Inherited::Socket).ok_or(AppError::NotASocket)?;
        let listener = TcpListener::from(fd);
        listener.local_addr().map_err(AppError::NotTcp)?;
        return Ok((listener, "the socket moltd holds, LISTEN_FDS"));
    }
    let address = own_address(
        std::env::args().nth(1).as_deref(),
        std::env::var("PORT").ok().as_deref(),
    )?;
    let listener = TcpListener::bind(address).map_err(|err| AppError::Bind(address, err))?;
    Ok((listener, "a socket of its own"))
}

/// How many sockets were passed to the process `pid`: `LISTEN_FDS` when
/// `LISTEN_PID` is `pid`, else none (they were meant for another process,
/// one that started this one without `exec`).
fn passed_sockets(listen_pid: Option<&str>, listen_fds: Option<&str>, pid: u32) -> u32 {
    if listen_pid.and_then(|p| p.parse().ok()) != Some(pid) {
        return 0;
    }
    listen_fds.and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The address to bind without a passed socket: the argument (HOST:PORT),
/// else every IPv4 address on `port` (`PORT`), else on 8080.
fn own_address(argument: Option<&str>, port: Option<&str>) -> Result<SocketAddr, AppError> {
    let text = match argument {
        Some(address) => address.to_owned(),
        None => format!("0.0.0.0:{}", port.unwrap_or(DEFAULT_PORT)),
    };
    text.parse().map_err(|_| AppError::Address(text))
}

/// Says `READY=1` (and what it serves) on `NOTIFY_SOCKET`, if set: a path,
/// or `@NAME` in the abstract namespace. A failure is reported, not fatal:
/// the supervisor then judges readiness its own way.
fn notify_ready(version: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nSTATUS=serving {version}\n");
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &address)
        } else {
            socket.send_to(message.as_bytes(), &target)
        }
    });
    if let Err(err) = sent {
        eprintln!("app: cannot notify {}: {err}", target.to_string_lossy());
    }
}

/// Reads one request from `stream` and answers it; a client that fails or
/// dawdles only loses its own answer.
fn serve(mut stream: TcpStream, version: &str) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    if head.is_empty() {
        return;
    }
    let _ = stream.write_all(&answer(&head, version));
}

/// The whole answer to a request whose head (or its start) is `head`.
fn answer(head: &[u8], version: &str) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or_default();
    let body = format!("{version}\n");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/VERSION" | "/") => ("200 OK", body.as_str()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n"),
        _ if path.starts_with('/') => ("405 Method Not Allowed", "only GET and HEAD\n"),
        _ => ("400 Bad Request", "bad request\n"),
    };
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_count_only_for_the_pid_they_name() {
        assert_eq!(passed_sockets(Some("42"), Some("1"), 42), 1);
        assert_eq!(passed_sockets(Some("42"), Some("2"), 42), 2);
        // Meant for a wrapper that did not exec this program.
        assert_eq!(passed_sockets(Some("41"), Some("1"), 42), 0);
        assert_eq!(passed_sockets(None, Some("1"), 42), 0);
        assert_eq!(passed_sockets(Some("42"), None, 42), 0);
        assert_eq!(passed_sockets(Some("42"), Some("x"), 42), 0);
    }

    #[test]
    fn own_address_from_argument_port_or_default() {
        let addr = |a, p| own_address(a, p).ok().map(|a| a.to_string());
        assert_eq!(
            addr(Some("127.0.0.1:9"), Some("1")).as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(addr(None, Some("9090")).as_deref(), Some("0.0.0.0:9090"));
        assert_eq!(addr(None, None).as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(addr(Some("localhost:80"), None), None);
        assert_eq!(addr(None, Some("http")), None);
    }

    fn text(head: &str) -> String {
        String::from_utf8(answer(head.as_bytes(), "1.2.3")).unwrap()
    }

    #[test]
    fn version_answers_the_release_version() {
        let got = text("GET /VERSION HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
        assert!(got.contains("Content-Length: 6\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n1.2.3\n"), "{got}");
        assert!(text("GET /?probe=1 HTTP/1.0\r\n\r\n").ends_with("\r\n\r\n1.2.3\n"));
        let head = text("HEAD /VERSION HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.0 200 OK") && head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn other_requests_get_an_error_status() {
        assert!(text("GET /etc/passwd HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
        assert!(text("POST /VERSION HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405"));
        assert!(text("\x16\x03\x01garbage").starts_with("HTTP/1.0 400"));
    }
}
