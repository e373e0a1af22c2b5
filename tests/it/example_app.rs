//! The container image's example app (`moltd-example-app`, the image's
//! `bin/app`) under moltd: it serves its release's version on the socket
//! moltd holds, says `READY=1`, answers the request in hand on TERM and
//! exits 0; and two generations on one socket both stop on TERM.

use crate::held_sockets::{Got, free_port, get};
use crate::util::{Mode, Moltd, Running, TestDir, wait_until};
use nix::libc::SIGTERM;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A release folder holding the app as `bin/app` and `VERSION` (a hard
/// link or a copy, not a symlink: the app finds its release from the path
/// of its program, symlinks resolved).
fn release(dir: &TestDir, version: &str) -> PathBuf {
    let release = dir.join(&format!("releases/v{version}"));
    std::fs::create_dir_all(release.join("bin")).unwrap();
    let (built, app) = (
        env!("CARGO_BIN_EXE_moltd-example-app"),
        release.join("bin/app"),
    );
    if std::fs::hard_link(built, &app).is_err() {
        std::fs::copy(built, &app).unwrap();
    }
    std::fs::write(release.join("VERSION"), format!("{version}\n")).unwrap();
    release
}

/// Service `web` running the app of `release` on a held socket on `port`,
/// ready only by its `READY=1` (a `notify` file), with `finish` recording
/// how `run` ended (runit's arguments: exit code and signal).
fn web_service(dir: &TestDir, release: &std::path::Path, port: u16) {
    dir.script(
        "svc/web/run",
        &format!("#!/bin/sh\nexec {}/bin/app\n", release.display()),
    );
    dir.write("svc/web/listen", &format!("tcp://127.0.0.1:{port}\n"));
    dir.write("svc/web/notify", "");
    dir.script(
        "svc/web/finish",
        &format!(
            "#!/bin/sh\necho \"$1 $2\" >> {}/ended\n",
            dir.path().display()
        ),
    );
}

/// moltd supervising `web`, the app at `version` on a free port: the port.
fn start<'a>(dir: &'a TestDir, version: &str) -> (u16, Running<'a>) {
    let port = free_port();
    web_service(dir, &release(dir, version), port);
    let moltd = Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        // Long enough that a stop within the tests' wait is not SVWAIT's KILL.
        .env("SVWAIT", "60")
        .spawn();
    (port, moltd)
}

/// The app's pid as the test sees it, once it answered: the one child of
/// moltd here (`run` execs it).
fn app_pid(moltd: &mut Running) -> i32 {
    match moltd.children().0[..] {
        [pid] => pid,
        ref others => moltd.fail(&format!("expected the app alone, found {others:?}")),
    }
}

/// How many descriptors `pid` has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Whether TERM is pending for process `pid` (its `ShdPnd` mask).
fn term_pending(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTERM - 1)) != 0)
}

#[test]
fn example_app_serves_its_version_on_the_held_socket_and_is_ready_by_notify() {
    let dir = TestDir::new("example_app_held");
    let (port, mut moltd) = start(&dir, "1.2.3");
    moltd.wait_for_sv("web", "run: web: (pid ");
    // Only READY=1 can make a `notify` service ready.
    let up = dir.sv(&["-w", "20", "up", "web"]);
    if !up.stdout.starts_with("ok: run: web: ") {
        moltd.fail(&format!("sv -w up: {}{}", up.stdout, up.stderr));
    }
    match get(port, "/VERSION") {
        Got::Answer(body) if body == "1.2.3\n" => {}
        Got::Answer(body) => moltd.fail(&format!("GET /VERSION answered {body:?}")),
        Got::Refused => moltd.fail("GET /VERSION refused"),
        Got::Failed(err) => moltd.fail(&format!("GET /VERSION failed: {err}")),
    }
    moltd.wait_for_file("moltd.stdout", "(the socket moltd holds, LISTEN_FDS)");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
    assert_eq!(dir.read("ended"), "0 0\n", "the app exits 0 on TERM");
}

/// `sv down` while the app holds a request not yet whole: the app answers
/// it, then exits 0 (not SVWAIT's KILL, 60 s here).
#[test]
fn example_app_answers_the_request_in_hand_then_exits_0_on_term() {
    let dir = TestDir::new("example_app_term");
    let (port, mut moltd) = start(&dir, "2.0.0");
    moltd.wait_for("the app to answer", || {
        matches!(get(port, "/VERSION"), Got::Answer(_))
    });
    let app = app_pid(&mut moltd);
    let idle = open_fds(app);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"GET /VERSION HTTP/1.0\r\n").unwrap();
    moltd.wait_for("the app to accept the connection", || open_fds(app) > idle);
    let mut down = dir.sv_background(&["down", "web"]);
    // TERM is sent (pending: the app reads it from a signalfd once the
    // request in hand is answered).
    moltd.wait_for("TERM to be pending for the app", || term_pending(app));
    client.write_all(b"Host: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    if !answer.starts_with("HTTP/1.0 200 OK") || !answer.ends_with("\r\n\r\n2.0.0\n") {
        moltd.fail(&format!("the request in hand got {answer:?}"));
    }
    crate::util::wait_child(&mut down, "sv down");
    moltd.wait_for_file("ended", "\n");
    assert_eq!(dir.read("ended"), "0 0\n", "the app exits 0 on TERM");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}

/// Bursts of connections, and connections a burst, sent to two apps.
const BURSTS: usize = 20;
const BURST: usize = 20;

/// The app of `release` accepting on `listener` as descriptor 3, with
/// `LISTEN_PID` set to its own pid by the shell that execs it.
fn app_on(listener: &TcpListener, release: &std::path::Path) -> Child {
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\"",
            &format!("{}/bin/app", release.display()),
        ])
        .stdout(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe. Descriptor 3 is left
    // open across exec: a copy by dup2 is not close-on-exec, and the
    // listener itself, if it is 3, is made so.
    unsafe {
        command.pre_exec(move || {
            let done = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, 3)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

/// Two generations on one socket, as during an overlap: each connection
/// wakes both and one takes it. The other must go back to waiting for TERM
/// as well as for connections, not block in `accept`: after a burst of
/// requests, a TERM to both ends both, with status 0.
#[test]
fn example_app_generations_sharing_a_socket_both_stop_on_term() {
    let dir = TestDir::new("example_app_two");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let release = release(&dir, "3.0.0");
    let mut apps = [app_on(&listener, &release), app_on(&listener, &release)];
    // Bursts: several connections queued at once wake both apps, and the
    // one that finds the queue empty must not stay in `accept`.
    for _ in 0..BURSTS {
        let clients: Vec<TcpStream> = (0..BURST)
            .map(|_| {
                let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
                client.write_all(b"GET /VERSION HTTP/1.0\r\n\r\n").unwrap();
                client
            })
            .collect();
        for mut client in clients {
            client.set_read_timeout(Some(crate::util::TIMEOUT)).unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            assert!(answer.ends_with("\r\n\r\n3.0.0\n"), "{answer:?}");
        }
    }
    for app in &apps {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { nix::libc::kill(app.id() as i32, SIGTERM) };
    }
    for app in &mut apps {
        let mut status = None;
        let pid = app.id();
        wait_until(&format!("app {pid} to exit on TERM"), || {
            status = app.try_wait().unwrap();
            status.is_some()
        });
        assert_eq!(status.unwrap().code(), Some(0), "app {pid}");
    }
    // Nothing accepts any more, and the socket still queues.
    let _queued =
        TcpStream::connect_timeout(&listener.local_addr().unwrap(), Duration::from_secs(5))
            .unwrap();
}
