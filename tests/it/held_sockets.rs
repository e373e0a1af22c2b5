//! Sockets held by moltd (`listen` files): bound once by PID 1, passed to
//! every start of `run` by systemd's protocol, so crash restarts refuse no
//! connection; and the errors of bad `listen` files.

use crate::util::{Mode, Moltd, Running, TestDir};
use nix::libc::SIGTERM;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A small HTTP app on python's `http.server`. With `inherit` it serves
/// on the socket passed as descriptor 3 (and refuses to run unless
/// `LISTEN_PID` is its own pid and `LISTEN_FDS` is set, as
/// `sd_listen_fds(3)` does); with `bind PORT` it binds the port itself, as
/// apps did before. `GET /` answers its pid, the `LISTEN_*` variables and
/// what descriptor 3 is; `GET /crash` answers, then the app kills itself.
pub(crate) const APP: &str = r#"
import http.server, os, signal, socket, sys

if sys.argv[1] == "inherit":
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or "LISTEN_FDS" not in os.environ:
        sys.exit("not socket-activated: LISTEN_PID=%s, pid %d" % (os.environ.get("LISTEN_PID"), os.getpid()))
    sock = socket.socket(fileno=3)
else:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[2])))
    sock.listen(128)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        fds = " ".join(
            "%d=%s" % (fd, os.readlink("/proc/self/fd/%d" % fd))
            for fd in range(3, 3 + int(os.environ.get("LISTEN_FDS", "0")))
        )
        body = "pid=%d LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s %s\n" % (
            os.getpid(),
            os.environ.get("LISTEN_PID"),
            os.environ.get("LISTEN_FDS"),
            os.environ.get("LISTEN_FDNAMES"),
            fds,
        )
        self.server.crash = self.path == "/crash"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass

class Server(http.server.HTTPServer):
    crash = False

    def shutdown_request(self, request):
        super().shutdown_request(request)
        if self.crash:
            os.kill(os.getpid(), signal.SIGKILL)

server = Server(("", 0), Handler, bind_and_activate=False)
server.socket = sock
server.serve_forever()
"#;

/// The python interpreter itself, not a wrapper that may not exec it (the
/// app's pid must be the pid of `run`).
pub(crate) fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the app and a `run` that execs it with `args`.
pub(crate) fn app_service(dir: &TestDir, name: &str, args: &str) {
    dir.write("app.py", APP);
    dir.script(
        &format!("svc/{name}/run"),
        &format!(
            "#!/bin/sh\nexec {} {}/app.py {args}\n",
            python().display(),
            dir.path().display()
        ),
    );
}

fn services(dir: &TestDir) -> Moltd<'_> {
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_BACKOFF_MAX", "1")
}

/// How one request went.
pub(crate) enum Got {
    Answer(String),
    Refused,
    Failed(std::io::Error),
}

/// One request without keep-alive, as a load generator sends it.
pub(crate) fn get(port: u16, path: &str) -> Got {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_owned()),
            _ => Err(std::io::Error::other(format!("bad answer {text:?}"))),
        }
    };
    match attempt() {
        Ok(body) => Got::Answer(body),
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => Got::Refused,
        Err(err) => Got::Failed(err),
    }
}

/// The `pid=` of an answer.
pub(crate) fn pid_of(body: &str) -> &str {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .unwrap_or_default()
}

/// What a load saw while the app crashed.
#[derive(Debug, Default)]
struct Load {
    answered: usize,
    refused: usize,
    failed: Vec<String>,
}

/// Sends requests one after another while the app crashes `crashes` times
/// (it kills itself after answering `/crash`), until each new app answered.
fn crash_under_load(moltd: &mut Running, port: u16, crashes: usize) -> Load {
    let mut load = Load::default();
    let mut last = String::new();
    moltd.wait_for("the app to answer", || match get(port, "/") {
        Got::Answer(body) => {
            last = pid_of(&body).to_owned();
            true
        }
        _ => false,
    });
    for _ in 0..crashes {
        let mut path = "/crash";
        moltd.wait_for("a restarted app to answer", || {
            match get(port, path) {
                Got::Answer(body) => {
                    load.answered += 1;
                    if path == "/crash" {
                        path = "/";
                    } else if pid_of(&body) != last {
                        last = pid_of(&body).to_owned();
                        return true;
                    }
                }
                Got::Refused => load.refused += 1,
                Got::Failed(err) => load.failed.push(err.to_string()),
            }
            false
        });
    }
    load
}

#[test]
fn crash_restarts_refuse_no_connection_with_a_held_socket() {
    let dir = TestDir::new("held_crash_load");
    let port = free_port();
    app_service(&dir, "web", "inherit");
    dir.write("svc/web/listen", &format!("tcp://127.0.0.1:{port}\n"));
    let mut moltd = services(&dir).spawn();
    let load = crash_under_load(&mut moltd, port, 4);
    eprintln!("held socket, 4 crash restarts: {load:?}");
    if load.refused != 0 || !load.failed.is_empty() || load.answered < 8 {
        moltd.fail(&format!("requests were lost: {load:?}"));
    }
    let finished = moltd_stop(moltd);
    finished.expect_code(0);
}

/// The same load against the same app binding its port itself: the test
/// above would see refusals without the held socket.
#[test]
fn crash_restarts_refuse_connections_when_the_app_binds_itself() {
    let dir = TestDir::new("unheld_crash_load");
    let port = free_port();
    app_service(&dir, "web", &format!("bind {port}"));
    let mut moltd = services(&dir).spawn();
    let load = crash_under_load(&mut moltd, port, 2);
    eprintln!("app binds itself, 2 crash restarts: {load:?}");
    if load.refused == 0 {
        moltd.fail(&format!("expected refused connections: {load:?}"));
    }
    moltd_stop(moltd).expect_code(0);
}

fn moltd_stop(mut moltd: Running) -> crate::util::Finished {
    moltd.signal(SIGTERM);
    moltd.wait()
}

/// What a script writes about its environment and its descriptors 3 and 4
/// (`readlink` prints nothing for a descriptor that is not open).
const REPORT: &str = "{ echo \"LISTEN_PID=${LISTEN_PID-unset} LISTEN_FDS=${LISTEN_FDS-unset} \
LISTEN_FDNAMES=${LISTEN_FDNAMES-unset}\"; readlink /proc/$$/fd/3 /proc/$$/fd/4; echo end; }";
const NOTHING_PASSED: &str = "LISTEN_PID=unset LISTEN_FDS=unset LISTEN_FDNAMES=unset\nend\n";

/// The inode in a `socket:[N]` link.
fn socket_inode(link: &str) -> Option<&str> {
    link.strip_prefix("socket:[")?.strip_suffix(']')
}

/// The value of `name=` in a space-separated line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

#[test]
fn run_gets_listen_variables_and_sockets_and_log_and_finish_get_none() {
    let dir = TestDir::new("held_protocol");
    let port = free_port();
    app_service(&dir, "web", "inherit");
    dir.write(
        "svc/web/listen",
        &format!("# the app\nhttp=tcp://127.0.0.1:{port}\n\nadmin=unix:admin.sock mode=660\n"),
    );
    let d = dir.path().display();
    dir.script(
        "svc/web/finish",
        &format!("#!/bin/sh\n{REPORT} >> {d}/finish.env\n"),
    );
    dir.script(
        "svc/web/log/run",
        &format!("#!/bin/sh\n{REPORT} > {d}/log.env\nexec cat\n"),
    );
    let mut moltd = services(&dir).spawn();
    let mut body = String::new();
    moltd.wait_for("the app to answer", || match get(port, "/") {
        Got::Answer(text) => {
            body = text;
            true
        }
        _ => false,
    });
    assert_eq!(field(&body, "LISTEN_PID"), pid_of(&body), "{body}");
    assert_eq!(field(&body, "LISTEN_FDS"), "2", "{body}");
    assert_eq!(field(&body, "LISTEN_FDNAMES"), "http:admin", "{body}");
    let fds: Vec<&str> = body
        .split_whitespace()
        .filter(|w| w.starts_with("3=") || w.starts_with("4="))
        .collect();
    assert_eq!(fds.len(), 2, "{body}");
    // The unix socket is there with its mode, and answers: it is descriptor 4.
    let sock = dir.join("svc/web/admin.sock");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    std::os::unix::net::UnixStream::connect(&sock).expect("the unix socket listens");

    // PID 1 holds the sockets close-on-exec: only `run` gets them.
    let moltd_pid = moltd.moltd_pid();
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{moltd_pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let inode = socket_inode(link.to_str()?)?;
            let fd = e.file_name().into_string().ok()?;
            fds.iter()
                .any(|f| f.ends_with(&format!("[{inode}]")))
                .then_some(fd)
        })
        .collect();
    assert_eq!(held.len(), 2, "moltd holds both sockets: {body}");
    for fd in &held {
        let info = std::fs::read_to_string(format!("/proc/{moltd_pid}/fdinfo/{fd}")).unwrap();
        let flags = u32::from_str_radix(field(&info.replace(":\t", "="), "flags"), 8).unwrap();
        assert_ne!(
            flags & 0o2000000,
            0,
            "fd {fd} of PID 1 is not close-on-exec: {info}"
        );
    }
    moltd.wait_for_file("log.env", "end");
    assert_eq!(dir.read("log.env"), NOTHING_PASSED);

    // A rescan that finds the same sockets (on other lines) keeps them; a
    // new service, read by the same scan, shows that it happened.
    dir.write(
        "svc/web/listen",
        &format!("# changed\nhttp=tcp://127.0.0.1:{port}\nadmin=unix:admin.sock mode=660\n"),
    );
    dir.script("svc/marker/run", "#!/bin/sh\nexec sleep 1000\n");
    moltd.wait_for_sv("marker", "run: marker:");
    assert!(matches!(get(port, "/crash"), Got::Answer(_)));
    let mut again = String::new();
    moltd.wait_for("the restarted app to answer", || match get(port, "/") {
        Got::Answer(text) => {
            again = text;
            pid_of(&again) != pid_of(&body)
        }
        _ => false,
    });
    assert_ne!(pid_of(&again), pid_of(&body));
    assert_eq!(
        field(&again, "3"),
        field(&body, "3"),
        "same socket after a rescan"
    );
    assert_eq!(
        field(&again, "4"),
        field(&body, "4"),
        "same socket after a rescan"
    );
    moltd.wait_for_file("finish.env", "end");
    assert_eq!(dir.read("finish.env"), NOTHING_PASSED);
    moltd_stop(moltd).expect_code(0);
}

#[test]
fn bad_listen_files_name_service_file_and_line_and_other_services_run() {
    let dir = TestDir::new("held_errors");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let good_port = free_port();
    app_service(&dir, "good", "inherit");
    dir.write("svc/good/listen", &format!("tcp://127.0.0.1:{good_port}\n"));
    app_service(&dir, "malformed", "inherit");
    dir.write(
        "svc/malformed/listen",
        "tcp://127.0.0.1:1\ntcp://localhost:80\n",
    );
    app_service(&dir, "taken", "inherit");
    dir.write(
        "svc/taken/listen",
        &format!("# held by the test\ntcp://127.0.0.1:{busy_port}\n"),
    );
    let mut moltd = services(&dir).spawn();
    let svc = std::fs::canonicalize(dir.join("svc")).unwrap();
    let svc = svc.display();
    moltd.wait_for_file(
        "moltd.stderr",
        &format!("malformed: cannot run ./run: {svc}/malformed/listen line 2: \"localhost:80\" is not an IP address and port"),
    );
    moltd.wait_for_file(
        "moltd.stderr",
        &format!("taken: cannot run ./run: cannot listen on tcp://127.0.0.1:{busy_port} ({svc}/taken/listen line 2): address already in use"),
    );
    moltd.wait_for("the good service to answer", || {
        matches!(get(good_port, "/"), Got::Answer(_))
    });
    // The port freed, the next start binds it.
    drop(busy);
    moltd.wait_for("the taken service to answer once its port is free", || {
        matches!(get(busy_port, "/"), Got::Answer(_))
    });
    moltd_stop(moltd).expect_code(0);
}

/// An image's service folder holds a `listen` file, but the app a user's
/// release brings binds the port itself: with `MOLTD_HELD_SOCKETS=off` the
/// file is ignored and the app gets its port (held, it would find the port
/// in use and crash-loop).
#[test]
fn an_app_binding_the_port_of_a_listen_file_runs_with_held_sockets_off() {
    let dir = TestDir::new("held_sockets_off");
    let port = free_port();
    app_service(&dir, "web", &format!("bind {port}"));
    dir.write("svc/web/listen", &format!("tcp://127.0.0.1:{port}\n"));
    let mut moltd = services(&dir).env("MOLTD_HELD_SOCKETS", "off").spawn();
    let mut body = String::new();
    moltd.wait_for("the app answers on the port it bound", || {
        match get(port, "/") {
            Got::Answer(text) => {
                body = text;
                true
            }
            _ => false,
        }
    });
    if !body.contains("LISTEN_FDS=None") {
        moltd.fail(&format!("the app was passed sockets: {body}"));
    }
    moltd_stop(moltd).expect_code(0);
}
