//! Control answers while work is in flight: `moltd status`, `sv`, `moltd
//! update` and `moltd rollback` (and `POST /update`) answer at once while a
//! download trickles in from the loopback feed, during first boot too; a
//! rollback cancels a download; every client gives up on a supervisor that
//! does not answer, saying which timeout expired; a user without access to
//! the socket is told "permission denied".

use crate::apply::{App, current, moltd, release, served, setup, status, wait_for_state};
use crate::feed::*;
use crate::util::{Client, Mode, TestDir, wait_child};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bound a control request must answer within in these tests: the
/// issue asks for 100 ms; a busy two-core machine gets a generous margin.
const QUICK: Duration = Duration::from_secs(1);

/// Bytes that do not compress, so the archive is as big as its content.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A good release `v<version>` whose archive also holds 1 MiB of noise.
fn big_release(version: &str) -> FakeRelease {
    let small = release(version, App::Good);
    let asset = &small.assets[0];
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&asset.data[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header().clone();
        builder.append(&header, entry).unwrap();
    }
    let blob = noise(1 << 20);
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(blob.len() as u64);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, format!("app-{version}/blob"), &blob[..])
        .unwrap();
    let data = gzip(&builder.into_inner().unwrap());
    FakeRelease::new(&small.tag, vec![FakeAsset::new(&asset.name, data)])
}

/// A feed serving `releases`, where the assets of `slow` trickle in at
/// about 20 KB/s: a download of a big release takes close to a minute.
fn trickling_feed(releases: Vec<FakeRelease>, slow: &FakeRelease) -> Feed {
    let tag = slow.tag.clone();
    let assets: Vec<(String, Vec<u8>)> = slow
        .assets
        .iter()
        .map(|a| (format!("/dl/{tag}/{}", a.name), a.data.clone()))
        .collect();
    Feed::with_hook(
        releases,
        Box::new(move |request, _| {
            let (_, data) = assets.iter().find(|(path, _)| *path == request.path)?;
            let mut response = serve_file(request, data, true);
            response.trickle = Some((2048, Duration::from_millis(100)));
            Some(response)
        }),
    )
}

/// Runs a client, and fails unless it ended within [`QUICK`].
fn quickly(what: &str, run: impl FnOnce() -> Client) -> Client {
    let started = Instant::now();
    let client = run();
    let took = started.elapsed();
    assert!(
        took < QUICK,
        "{what} took {took:?}, more than {QUICK:?}: {client:?}"
    );
    client
}

/// Runs `moltd ARGS`, and fails unless it ended quickly with exit code 1
/// and said `why`.
fn refused_quickly(dir: &TestDir, args: &[&str], why: &str) {
    let client = quickly(&format!("moltd {args:?}"), || dir.moltd_client(args));
    assert_eq!(client.code, Some(1), "{client:?}");
    assert!(client.stderr.contains(why), "{client:?}");
}

/// While a download runs: `moltd status` shows it (and `more`), `sv status
/// web` starts with `sv_line`, a second update is refused; all quickly.
fn answers_during_download(dir: &TestDir, sv_line: &str, more: &[&str]) {
    let status = quickly("moltd status", || dir.moltd_client(&["status"]));
    assert_eq!(status.code, Some(0), "{status:?}");
    for text in ["update: downloading, step 2/9"].iter().chain(more) {
        assert!(status.stdout.contains(text), "{status:?}");
    }
    let sv = quickly("sv status", || dir.sv(&["status", "web"]));
    assert!(sv.stdout.starts_with(sv_line), "{sv:?}");
    let busy = "already updating, step 2/9 (downloading)";
    refused_quickly(dir, &["update"], busy);
}

/// Starts `moltd ARGS` as a client without waiting for it.
fn client_background(dir: &TestDir, args: &[&str]) -> Child {
    Command::new(crate::util::moltd_bin())
        .args(args)
        .env("MOLTD_CONTROL", dir.control_socket())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client")
}

/// Waits for a background client and returns its exit code and output.
fn finish(mut child: Child, what: &str) -> Client {
    let status = wait_child(&mut child, what);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Client {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn status_update_and_sv_answer_during_a_trickling_download() {
    let (dir, _port) = setup("control_download");
    let slow = big_release("2.0.0");
    let feed = trickling_feed(vec![release("1.0.0", App::Good)], &slow);
    let listen = crate::apply::free_port();
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_API_TOKEN", "sesame")
        .spawn();
    running.wait_for("v1 to be installed", || current(&dir) == "v1.0.0");
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(slow);
    let update = client_background(&dir, &["update"]);
    wait_for_state(&mut running, &dir, "downloading");

    answers_during_download(&dir, "run: web", &[]);
    let check = quickly("moltd update --check", || {
        dir.moltd_client(&["update", "--check"])
    });
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check.stdout.contains("newer release v2.0.0 available")
            && check.stdout.contains("an update is in progress, step 2/9"),
        "{check:?}"
    );
    let started = Instant::now();
    let answer = crate::observe::http(listen, "POST", "/update", Some("sesame"));
    let took = started.elapsed();
    assert!(took < QUICK, "POST /update took {took:?}: {answer:?}");
    let (code, body) = answer.expect("an answer to POST /update");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already updating, step 2/9"), "{body}");

    // The first update is still downloading, and its client still waits,
    // having been told what for.
    assert_eq!(status_state(&dir), "downloading");
    let mut update = update;
    if update.try_wait().unwrap().is_some() {
        let client = finish(update, "moltd update");
        running.fail(&format!("moltd update ended early: {client:?}"));
    }
    let _ = update.kill();
    let client = finish(update, "moltd update");
    assert!(
        client
            .stderr
            .contains("moltd: checking for a newer release and applying it; waiting up to"),
        "{client:?}"
    );
}

fn status_state(dir: &TestDir) -> String {
    status(dir)["state"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn rollback_during_a_download_cancels_it() {
    let (dir, port) = setup("control_rollback");
    let slow = big_release("3.0.0");
    let feed = trickling_feed(vec![release("1.0.0", App::Good)], &slow);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(release("2.0.0", App::Good));
    let updated = dir.moltd_client(&["update"]);
    assert_eq!(updated.code, Some(0), "{updated:?}");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));

    feed.publish(slow);
    let update = client_background(&dir, &["update"]);
    running.wait_for("part of v3 to be downloaded", || {
        let doc = status(&dir);
        doc["state"] == "downloading" && doc["bytes_done"].as_u64() > Some(0)
    });
    let rollback = client_background(&dir, &["rollback"]);
    let rollback = finish(rollback, "moltd rollback");
    assert_eq!(rollback.code, Some(0), "{rollback:?}");
    assert!(
        rollback
            .stderr
            .contains("cancelling the update in progress at step 2/9 (downloading), then rolling back to v1.0.0"),
        "{rollback:?}"
    );
    assert!(
        rollback.stdout.contains("rolled back to v1.0.0"),
        "{rollback:?}"
    );
    let update = finish(update, "moltd update");
    assert_eq!(update.code, Some(1), "{update:?}");
    assert!(
        update.stderr.contains("cancelled by rollback"),
        "{update:?}"
    );

    // The running release is the one rolled back to; the cancelled one is
    // not marked bad (v2, rolled back from, is), and left nothing behind.
    assert_eq!(current(&dir), "v1.0.0");
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let doc = status(&dir);
    let bad: Vec<&str> = doc["bad_releases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(bad, ["v2.0.0"], "{doc}");
    assert_eq!(doc["counters"]["failed"], 0, "{doc}");
    // Regression: the cancelled download's percentage stayed in the status.
    assert_eq!(doc["progress"], serde_json::Value::Null, "{doc}");
    assert_eq!(doc["bytes_done"], 0, "{doc}");
    let releases = std::fs::read_dir(dir.join("app/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        !releases
            .iter()
            .any(|r| r.contains("3.0.0") || r.starts_with(".staging")),
        "{releases:?}"
    );
    // Said once, as what it is: not a failure.
    let log = dir.read("moltd.stderr");
    assert_eq!(log.matches("cancelled by rollback").count(), 1, "{log}");
    // The download was not resumed after the cancel.
    assert_eq!(feed.server.requests_to("/dl/v3.0.0/").len(), 1);
    // And the cancel is spent: the next update runs to its end.
    feed.publish(release("4.0.0", App::Good));
    let updated = dir.moltd_client(&["update"]);
    assert_eq!(updated.code, Some(0), "{updated:?}");
    assert!(updated.stdout.contains("updated to v4.0.0"), "{updated:?}");
    running.wait_for("v4 to serve", || served(port).as_deref() == Some("4.0.0"));
}

#[test]
fn control_answers_during_first_boot() {
    let (dir, _port) = setup("control_first_boot");
    let slow = big_release("1.0.0");
    let feed = trickling_feed(vec![slow.clone()], &slow);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    wait_for_state(&mut running, &dir, "downloading");

    answers_during_download(&dir, "fail: web", &["first boot: the services start once"]);
    let nothing = "no release is installed yet: nothing to roll back";
    refused_quickly(&dir, &["rollback"], nothing);
    // Nothing of that disturbed the install.
    assert_eq!(status_state(&dir), "downloading");
}

/// A control socket that accepts connections and never answers.
fn silent_socket(dir: &TestDir) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(dir.control_socket()).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    })
}

/// Runs a client (`moltd` or `sv`) against `socket` with
/// `MOLTD_CLIENT_TIMEOUT=timeout`; returns its exit code, its stderr and
/// stdout, and how long it took.
fn client_with_timeout(
    program: &Path,
    args: &[&str],
    socket: &Path,
    timeout: &str,
) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .env("MOLTD_CONTROL", socket)
        .env("MOLTD_CLIENT_TIMEOUT", timeout)
        .env_remove("SVWAIT")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), text, started.elapsed())
}

/// A Unix stream socket, as nix makes it.
fn unix_socket(flags: SockFlag) -> OwnedFd {
    socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap()
}

#[test]
fn clients_say_which_timeout_expired() {
    let dir = TestDir::new("control_timeouts");
    let _silent = silent_socket(&dir);
    let moltd = crate::util::moltd_bin();
    let sv = dir.moltd_as("sv");
    let cases: [(&Path, &[&str], &str); 7] = [
        (&moltd, &["status"], "0.3s"),
        (&moltd, &["update"], "0.3s"),
        (&moltd, &["update", "--check"], "0.3s"),
        (&moltd, &["rollback"], "0.3s"),
        (&moltd, &["unmark", "v1"], "0.3s"),
        (&sv, &["status", "web"], "0.3s"),
        // sv -w: the wait it asked for, and the timeout on top.
        (&sv, &["-w", "1", "up", "web"], "1.3s"),
    ];
    for (program, args, within) in cases {
        let socket = dir.control_socket();
        let (code, text, took) = client_with_timeout(program, args, &socket, "300ms");
        assert_ne!(code, Some(0), "{args:?}: {text}");
        let expected =
            format!("no answer from moltd within {within} (reply timeout; MOLTD_CLIENT_TIMEOUT)");
        assert!(text.contains(&expected), "{args:?}: {text}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }

    // A supervisor too busy to accept: its listen queue is full.
    let path = dir.join("full.sock");
    let listener = unix_socket(SockFlag::SOCK_CLOEXEC);
    let address = UnixAddr::new(&path).unwrap();
    bind(listener.as_raw_fd(), &address).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = unix_socket(SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK);
        if connect(fd.as_raw_fd(), &address).is_err() {
            break;
        }
        queued.push(fd);
        assert!(queued.len() < 1000, "the listen queue never filled");
    }
    let (code, text, took) = client_with_timeout(&moltd, &["status"], &path, "300ms");
    assert_eq!(code, Some(1), "{text}");
    let expected =
        "moltd did not accept the connection within 0.3s (connect timeout; MOLTD_CLIENT_TIMEOUT)";
    assert!(text.contains(expected), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let (code, text, _) = client_with_timeout(&moltd, &["status"], &path, "soon");
    assert_eq!(code, Some(1), "{text}");
    let expected = "bad MOLTD_CLIENT_TIMEOUT \"soon\": expected a duration";
    assert!(text.contains(expected), "{text}");
}

#[test]
fn status_without_access_says_permission_denied() {
    let dir = TestDir::new("control_denied");
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    let mut running = crate::util::Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "services"])
        .spawn();
    running.wait_for_sv("idle", "run:");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::moltd_bin())
        .arg("status")
        .env("MOLTD_CONTROL", dir.control_socket())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(!stderr.contains("not running"), "{stderr}");
    assert!(!running.has_exited());
}
