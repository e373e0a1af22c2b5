//! Observability over real sockets: `/metrics` (parsed by the strict
//! exposition-format checker below), `/healthz` with a crash-looping and
//! a given-up essential service, `POST /update` tokens, the webhook with
//! its receiver up and down, JSON logs, `moltd config`, the listener's
//! limits (slow, oversized and excess clients, oldest-idle eviction), and
//! memory under a scraping load.
//!
//! The metrics parser is written here rather than taken from a crate: the
//! rules moltd must keep (names, label syntax and escapes, one TYPE per
//! family before its samples, contiguous families, `_total` counters) fit
//! in fifty lines, and a lenient third-party parser would accept less.

use crate::apply::{App, free_port, moltd, release, served, setup, wait_for_state};
use crate::feed::*;
use crate::util::{Mode, Moltd, TestDir, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP/1.1 request to moltd's listener: (status code, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    request(port, method, path, auth.as_deref())
}

/// One request with a raw `Authorization` value: (status code, body).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Samples by `name{labels}`, after checking the exposition format.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current = String::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "no final newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name_ok(name), "bad name in {line:?}");
            if kind == "TYPE" {
                let ty = parts.next().unwrap();
                assert!(["counter", "gauge"].contains(&ty), "{line:?}");
                assert!(
                    types.insert(name.into(), ty.into()).is_none(),
                    "second TYPE: {line:?}"
                );
                assert!(!ty.eq("counter") || name.ends_with("_total"), "{line:?}");
                if current != name {
                    finished.insert(std::mem::replace(&mut current, name.into()));
                }
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample without value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "bad name: {line:?}");
        assert!(types.contains_key(name), "sample before TYPE: {line:?}");
        assert!(
            name == current && !finished.contains(name),
            "family split: {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let mut rest = inner.unwrap_or_else(|| panic!("bad labels: {line:?}"));
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").expect("label without value");
                assert!(
                    name_ok(label) && !label.contains(':'),
                    "bad label: {line:?}"
                );
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("unterminated label value") {
                        (_, '\\') => {
                            let (_, c) = chars.next().unwrap();
                            assert!(['\\', '"', 'n'].contains(&c), "bad escape: {line:?}");
                        }
                        (i, '"') => break i,
                        _ => {}
                    }
                };
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate: {line:?}"
        );
    }
    samples
}

/// A loopback webhook receiver on `port` that records JSON bodies.
fn receiver(port: u16) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let log = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let body = loop {
                let Ok(n @ 1..) = stream.read(&mut buf) else {
                    break None;
                };
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some(body[..length].to_owned());
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(json) = body.and_then(|b| serde_json::from_str(&b).ok()) {
                log.lock().unwrap().push(json);
            }
        }
    });
    got
}

fn events(got: &Arc<Mutex<Vec<serde_json::Value>>>) -> Vec<String> {
    let got = got.lock().unwrap();
    got.iter()
        .map(|n| n["event"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The web service of `setup`, a crash-looping one, the listener, a token,
/// the metrics file, a webhook and JSON logs.
fn observed<'a>(dir: &'a TestDir, feed: &Feed, listen: u16, hook: u16) -> Moltd<'a> {
    dir.script("services/crashy/run", "#!/bin/sh\necho crashing\nexit 1\n");
    moltd(dir, feed, Mode::Pid1)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_API_TOKEN", "right-token")
        .env("MOLTD_METRICS_FILE", dir.join("metrics/moltd.prom"))
        .env("MOLTD_WEBHOOK", format!("http://127.0.0.1:{hook}/hook"))
        .env("MOLTD_LOG_FORMAT", "json")
        .env("MOLTD_RESTART", "web")
}

#[test]
fn metrics_health_tokens_webhook_and_json_logs() {
    let (dir, port) = setup("observe_all");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let (listen, hook) = (free_port(), free_port());
    let got = receiver(hook);
    let mut running = observed(&dir, &feed, listen, hook).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let restarts = "moltd_service_restarts_total{service=\"crashy\"}";
    running.wait_for("crashy to crash-loop", || {
        http(listen, "GET", "/metrics", None).is_some_and(|(_, text)| {
            parse_metrics(&text)
                .get(restarts)
                .is_some_and(|r| *r >= 3.0)
        })
    });
    // A crash-looping service that is not essential leaves moltd healthy.
    assert_eq!(http(listen, "GET", "/healthz", None).unwrap().0, 200);
    let (code, text) = http(listen, "GET", "/metrics", None).unwrap();
    let metrics = parse_metrics(&text);
    assert_eq!(code, 200);
    for (series, value) in [
        ("moltd_release_info{tag=\"v1.0.0\"}", 1.0),
        ("moltd_service_state{service=\"web\",state=\"run\"}", 1.0),
        ("moltd_healthy", 1.0),
        ("moltd_updates_suspended", 0.0),
    ] {
        assert_eq!(metrics.get(series), Some(&value), "{series}\n{text}");
    }
    assert!(metrics["moltd_update_checks_total"] >= 1.0, "{text}");
    assert!(metrics["moltd_resident_memory_bytes"] > 0.0);
    assert!(metrics.contains_key("moltd_last_successful_check_timestamp_seconds"));
    running.wait_for("the metrics file", || {
        std::fs::read_to_string(dir.join("metrics/moltd.prom"))
            .is_ok_and(|t| parse_metrics(&t).contains_key("moltd_release_info{tag=\"v1.0.0\"}"))
    });
    // POST /update: refused without and with a wrong token.
    feed.publish(release("2.0.0", App::Good));
    assert_eq!(http(listen, "POST", "/update", None).unwrap().0, 401);
    assert_eq!(
        http(listen, "POST", "/update", Some("wrong-token"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http(listen, "GET", "/update", Some("right-token"))
            .unwrap()
            .0,
        405
    );
    let (code, body) = http(listen, "POST", "/update", Some("right-token")).unwrap();
    if code != 200 || !body.contains("v2.0.0") {
        running.fail(&format!("POST /update: {code} {body}"));
    }
    let (_, status) = http(listen, "GET", "/status", None).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["current"], "v2.0.0");
    assert!(
        status["counters"]["applied"].as_u64() >= Some(1),
        "{status}"
    );
    running.wait_for("the webhook notices", || {
        let e = events(&got);
        e.contains(&"available".into()) && e.iter().filter(|e| *e == "applied").count() == 2
    });
    let applied = got
        .lock()
        .unwrap()
        .iter()
        .find(|n| n["event"] == "applied" && n["to"] == "v2.0.0")
        .cloned()
        .unwrap();
    assert_eq!(
        (applied["from"].as_str(), applied["to"].as_str()),
        (Some("v1.0.0"), Some("v2.0.0"))
    );
    assert!(applied["host"].as_str().is_some_and(|h| !h.is_empty()));
    running.signal(nix::libc::SIGTERM);
    let finished = running.wait();
    let (mut own, mut service) = (0, 0);
    for line in finished.stderr.lines().chain(finished.stdout.lines()) {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"));
        assert!(json["ts"].is_string() && json["level"].is_string() && json["msg"].is_string());
        match json["source"].as_str() {
            Some("moltd") => own += 1,
            Some("service") => service += usize::from(json["service"] == "crashy"),
            other => panic!("source {other:?} in {line:?}"),
        }
    }
    assert!(
        own > 0 && service > 0,
        "{own} moltd lines, {service} service lines"
    );
}

#[test]
fn healthz_fails_when_an_essential_service_gave_up() {
    let dir = TestDir::new("observe_essential");
    let listen = free_port();
    dir.script("services/core/run", "#!/bin/sh\nexit 1\n");
    dir.write("services/core/essential", "");
    // Keeps the shutdown going for SVWAIT, so /healthz can be asked.
    dir.script(
        "services/stubborn/run",
        "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n",
    );
    let mut running = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("SVWAIT", "20")
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .spawn();
    running.wait_for("/healthz to answer 503", || {
        http(listen, "GET", "/healthz", None).is_some_and(|(code, _)| code == 503)
    });
    let (_, text) = http(listen, "GET", "/metrics", None).unwrap();
    assert_eq!(parse_metrics(&text)["moltd_healthy"], 0.0);
    running.signal(nix::libc::SIGKILL);
}

#[test]
fn webhook_receiver_down_does_not_hold_the_update() {
    let (dir, port) = setup("observe_hook_down");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let (listen, hook) = (free_port(), free_port());
    let mut running = observed(&dir, &feed, listen, hook).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // Past the first boot's health gate: an update is refused while it runs.
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(release("2.0.0", App::Good));
    let (code, body) = http(listen, "POST", "/update", Some("right-token")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(served(port).as_deref(), Some("2.0.0"));
    // The receiver comes up late; the retries deliver what was queued.
    let got = receiver(hook);
    // Only the v2 notice proves a retry: v1's was also queued while down.
    running.wait_for("the retried v2 notice", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|n| n["event"] == "applied" && n["to"] == "v2.0.0")
    });
    running.signal(nix::libc::SIGKILL);
}

#[test]
fn memory_stays_flat_under_scraping() {
    let (dir, port) = setup("observe_load");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let (listen, hook) = (free_port(), free_port());
    let _got = receiver(hook);
    let mut running = observed(&dir, &feed, listen, hook).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    // The agent serves the scrapes; PID 1 holds none of it.
    let agent = running.agent_pid(None);
    let rss = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap();
        kb.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let hammer = |count: usize| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    for n in 0..count {
                        let path = if (n + i) % 2 == 0 {
                            "/metrics"
                        } else {
                            "/status"
                        };
                        let _ = http(listen, "GET", path, None);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    };
    hammer(100);
    let before = rss(agent);
    feed.publish(release("2.0.0", App::Good));
    let update = std::thread::spawn(move || http(listen, "POST", "/update", Some("right-token")));
    hammer(750);
    let (code, body) = update.join().unwrap().unwrap();
    assert_eq!(code, 200, "{body}");
    // Supervision still answers.
    let status = dir.sv(&["status", "web"]);
    assert!(status.stdout.starts_with("run: web"), "{}", status.stdout);
    wait_until("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let after = rss(agent);
    assert!(
        after < before + 2 * 1024 * 1024,
        "RSS grew from {before} to {after}"
    );
    running.signal(nix::libc::SIGKILL);
}

/// How many connections to `port` moltd (`pid`) has accepted: its socket
/// descriptors that are established TCP connections with that local port.
/// Counted this way rather than by all descriptors, which other work of
/// moltd's opens and closes meanwhile.
fn accepted(pid: i32, port: u16) -> usize {
    let local = format!(":{port:04X}");
    let inodes: BTreeSet<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let established = fields.get(3) == Some(&"01");
            (fields[1].ends_with(&local) && established).then(|| fields[9].to_owned())
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|link| {
            let link = link.to_string_lossy();
            let inode = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'));
            inode.is_some_and(|inode| inodes.contains(inode))
        })
        .count()
}

/// The connections waiting in the accept queue of the socket listening on
/// `port` (the receive-queue column of a listening socket).
fn queued(port: u16) -> usize {
    let local = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields[1].ends_with(&local) && fields[3] == "0A")
        .and_then(|fields| {
            let (_, rx) = fields[4].split_once(':')?;
            usize::from_str_radix(rx, 16).ok()
        })
        .unwrap_or(0)
}

/// moltd as PID 1 with one idle service and the listener on `listen`.
pub(crate) fn listening(dir: &TestDir, listen: u16) -> Moltd<'_> {
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
}

#[test]
fn listener_bounds_slow_oversized_and_excess_clients() {
    let dir = TestDir::new("observe_bounds");
    let listen = free_port();
    let mut running = listening(&dir, listen).spawn();
    running.wait_for("the listener", || {
        http(listen, "GET", "/healthz", None).is_some()
    });
    let long_path = format!("/{}", "a".repeat(9000));
    let (code, _) = http(listen, "GET", &long_path, None).unwrap();
    assert_eq!(code, 431, "an oversized request head is refused");
    // Sixty-four clients that never send a request take every slot; each
    // of sixteen more is accepted in place of the oldest idle one, so moltd
    // never holds more than 64 of them (plus the one it is placing). They
    // are the update agent's: PID 1 holds none...
    let pid = running.agent_pid(None);
    let idle: Vec<TcpStream> = (0..64 + 16)
        .map(|_| TcpStream::connect(("127.0.0.1", listen)).unwrap())
        .collect();
    running.wait_for("64 clients accepted and none left queued", || {
        accepted(pid, listen) == 64 && queued(listen) == 0
    });
    for (n, stream) in idle.iter().take(16).enumerate() {
        stream.set_nonblocking(true).unwrap();
        let closed = (&*stream).read(&mut [0; 1]);
        assert!(
            matches!(closed, Ok(0)),
            "idle client {n} was not the one evicted: {closed:?}"
        );
    }
    // ...and the head deadline closes the rest, and the listener serves again.
    for mut stream in idle.into_iter().skip(16) {
        stream.set_read_timeout(Some(crate::util::TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let closed = stream.read_to_end(&mut rest);
        assert!(
            closed.is_ok(),
            "a silent client was not dropped: {closed:?}"
        );
    }
    running.wait_for("the listener to serve again", || {
        http(listen, "GET", "/healthz", None).is_some_and(|(code, _)| code == 200)
    });
    running.signal(nix::libc::SIGKILL);
}

#[test]
fn config_reports_sources_and_rejects_bad_values() {
    let dir = TestDir::new("observe_config");
    let good = Moltd::new(&dir, Mode::Child)
        .args(["--control", "/tmp/x.sock", "config"])
        .env("SVWAIT", "3")
        .env("MOLTD_API_TOKEN", "hush")
        .run();
    good.expect_code(0)
        .expect_stdout_contains("configuration is valid");
    let line = |name: &str| {
        good.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("SVWAIT").ends_with("(environment)"), "{}", good.stdout);
    assert!(line("MOLTD_CONTROL").ends_with("(flag)"), "{}", good.stdout);
    assert!(line("MOLTD_KEEP").ends_with("(default)"), "{}", good.stdout);
    assert!(!good.stdout.contains("hush"));
    let bad = [
        ("MOLTD_INTERVAL", "5 parsecs"),
        ("MOLTD_LISTEN", "localhost:nine"),
        ("MOLTD_MODE", "yolo"),
        ("MOLTD_LOG_FORMAT", "xml"),
    ];
    // Also with updates off (no source): a bad value is still reported, not
    // skipped because the updater never starts.
    for (name, value) in bad {
        for (args, repo) in [
            (vec!["config"], "acme/app"),
            (vec!["--services", "services"], "acme/app"),
            (vec!["config"], ""),
            (vec!["--", "true"], ""),
        ] {
            let finished = Moltd::new(&dir, Mode::Child)
                .args(args)
                .env("MOLTD_REPO", repo)
                .env(name, value)
                .run();
            finished
                .expect_code(1)
                .expect_stderr_contains(&format!("bad {name}"));
            assert_eq!(finished.stderr.lines().count(), 1, "{}", finished.stderr);
        }
    }
}
