//! Secrets stay with moltd, and the listener survives idle clients.
//!
//! Every child a supervising moltd starts (a service's `run` and `log/run`,
//! an update hook, the health command, the main command in combined and in
//! single-command mode) dumps its own `/proc/<pid>/environ`; none may hold
//! a secret while the feed proves moltd used them. Tokens from files, the
//! pass-through list, the bearer scheme in any case, and `/healthz` while a
//! thousand idle connections are held.

use crate::apply::{App, free_port, moltd, release, served, setup, updating, wait_for_state};
use crate::feed::*;
use crate::observe::request;
use crate::util::{Mode, Moltd, TIMEOUT, TestDir};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Written out here rather than taken from `moltd::secrets::WITHHELD`, so
/// that a name dropped from that list fails the tests.
const SECRET_NAMES: [&str; 7] = [
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "MOLTD_TOKEN",
    "MOLTD_TOKEN_FILE",
    "MOLTD_API_TOKEN",
    "MOLTD_API_TOKEN_FILE",
    "MOLTD_WEBHOOK",
];

/// A shell command line that writes its own environment to `file`.
fn dump_env(file: &std::path::Path) -> String {
    format!("cat /proc/$$/environ > {}", file.display())
}

/// The `NAME=value` entries of an environment dumped by [`dump_env`].
fn entries(dir: &TestDir, file: &str) -> Vec<String> {
    dir.read(file)
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names of `entries` that are moltd's secrets.
fn secrets_in(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| SECRET_NAMES.iter().any(|n| e.starts_with(&format!("{n}="))))
        .cloned()
        .collect()
}

/// A feed that answers its API (the list, and assets by their API URL,
/// redirected to the download) only to `Authorization: Bearer <token>`.
fn private_feed(token: &'static str) -> Feed {
    let hook: Hook = Box::new(move |request, base| {
        let authorized = request.header("authorization") == Some(&format!("Bearer {token}"));
        let asset = request.path.strip_prefix("/assets/");
        if !request.path.starts_with("/repos/") && asset.is_none() {
            return None;
        }
        if !authorized {
            return Some(Response::new(404, r#"{"message":"Not Found"}"#));
        }
        asset.map(|path| Response::new(302, "").header("Location", format!("{base}/dl/{path}")))
    });
    Feed::with_hook(vec![release("1.0.0", App::Good)], hook)
}

/// Whether the feed was asked for its list with `token`.
fn feed_saw(feed: &Feed, token: &str) -> bool {
    let expected = format!("Bearer {token}");
    feed.server
        .requests_to("/repos/")
        .iter()
        .any(|r| r.header("authorization") == Some(expected.as_str()))
}

#[test]
fn no_child_sees_moltds_secrets() {
    let (dir, port) = setup("secrets_children");
    let feed = private_feed("moltd-token-value");
    let listen = free_port();
    let file = |name: &str| dir.join(name);
    dir.script(
        "services/dump/run",
        &format!(
            "#!/bin/sh\n{}\nexec sleep 1000\n",
            dump_env(&file("env.run"))
        ),
    );
    dir.script(
        "services/dump/log/run",
        &format!("#!/bin/sh\n{}\nexec cat\n", dump_env(&file("env.log"))),
    );
    let main = format!("{}; exec sleep 1000", dump_env(&file("env.main")));
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .args(["--", "sh", "-c", &main])
        .env("MOLTD_TOKEN", "moltd-token-value")
        .env("GITHUB_TOKEN", "github-token-value")
        .env("GH_TOKEN", "gh-token-value")
        .env("MOLTD_API_TOKEN", "api-token-value")
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_WEBHOOK", "http://127.0.0.1:9/webhook-token-value")
        .env("MOLTD_PRE_UPDATE", dump_env(&file("env.pre")))
        .env("MOLTD_HEALTH_CMD", dump_env(&file("env.health")))
        .env("MOLTD_RESTART", "web")
        .env("KEEP_ME", "visible")
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // Past the first boot's health gate: an update is refused while it runs.
    wait_for_state(&mut running, &dir, "idle");
    // The update runs the hooks; the API token is what lets it start.
    feed.publish(release("2.0.0", App::Good));
    let answer = request(listen, "POST", "/update", Some("Bearer api-token-value"));
    if !answer
        .as_ref()
        .is_some_and(|(code, body)| *code == 200 && body.contains("v2.0.0"))
    {
        running.fail(&format!("POST /update: {answer:?}"));
    }
    let files = ["env.run", "env.log", "env.main", "env.pre", "env.health"];
    running.wait_for("every child to dump its environment", || {
        files.iter().all(|f| !entries(&dir, f).is_empty())
    });
    for name in files {
        let env = entries(&dir, name);
        // The children do get the rest of the environment.
        if !env.contains(&"KEEP_ME=visible".to_owned()) || !secrets_in(&env).is_empty() {
            running.fail(&format!("{name}: {env:?}"));
        }
        if env.iter().any(|e| e.contains("-value")) {
            running.fail(&format!("{name} holds a secret value: {env:?}"));
        }
    }
    if !feed_saw(&feed, "moltd-token-value") {
        running.fail("the feed never saw the token");
    }
}

/// `moltd -- sh -c DUMP` updating from `feed` with `GITHUB_TOKEN`, plus
/// `extra`, in a directory of its own (a moltd being killed may still hold
/// the app dir's lock).
fn single_command(name: &str, feed: &Feed, extra: &[(&str, &str)]) -> Vec<String> {
    let dir = &TestDir::new(name);
    let main = format!("{}; exec sleep 1000", dump_env(&dir.join("env.main")));
    let mut moltd = updating(dir, feed, Mode::Pid1)
        .args(["--", "sh", "-c", &main])
        .env("GITHUB_TOKEN", "github-token-value")
        .env("MOLTD_API_TOKEN", "api-token-value");
    for (name, value) in extra {
        moltd = moltd.env(name, *value);
    }
    let mut running = moltd.spawn();
    running.wait_for("the command to dump its environment", || {
        !entries(dir, "env.main").is_empty()
    });
    entries(dir, "env.main")
}

#[test]
fn single_command_mode_withholds_secrets_unless_passed_on() {
    let feed = private_feed("github-token-value");
    let withheld = single_command("secrets_single", &feed, &[]);
    assert!(secrets_in(&withheld).is_empty(), "{withheld:?}");
    assert!(feed_saw(&feed, "github-token-value"));
    // MOLTD_PASS_ENV hands over exactly the variables it names.
    let passed = single_command("secrets_pass", &feed, &[("MOLTD_PASS_ENV", "GITHUB_TOKEN")]);
    assert_eq!(
        secrets_in(&passed),
        ["GITHUB_TOKEN=github-token-value"],
        "{passed:?}"
    );
}

#[test]
fn plain_command_and_tini_pass_the_environment_unchanged() {
    let dir = TestDir::new("secrets_plain");
    for name in ["moltd", "tini"] {
        let dump = dump_env(&dir.join("env"));
        let finished = Moltd::new(&dir, Mode::Pid1)
            .named(name)
            .args(["--", "sh", "-c", &dump])
            .env("GITHUB_TOKEN", "github-token-value")
            .env("MOLTD_API_TOKEN", "api-token-value")
            .run();
        finished.expect_code(0);
        let env = entries(&dir, "env");
        assert_eq!(
            secrets_in(&env),
            [
                "GITHUB_TOKEN=github-token-value",
                "MOLTD_API_TOKEN=api-token-value"
            ],
            "{name}: {env:?}"
        );
    }
}

#[test]
fn tokens_from_files() {
    let (dir, port) = setup("secrets_files");
    let feed = private_feed("file-token");
    let listen = free_port();
    let token = dir.write("secrets/token", "file-token\n");
    let api_token = dir.write("secrets/api-token", "api-file-token\n");
    dir.script(
        "services/dump/run",
        &format!(
            "#!/bin/sh\n{}\nexec sleep 1000\n",
            dump_env(&dir.join("env.run"))
        ),
    );
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_TOKEN_FILE", &token)
        .env("MOLTD_API_TOKEN_FILE", &api_token)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // Past the first boot's health gate: an update is refused while it runs.
    wait_for_state(&mut running, &dir, "idle");
    let answer = request(
        listen,
        "POST",
        "/update?check",
        Some("Bearer api-file-token"),
    );
    if answer.as_ref().map(|a| a.0) != Some(200) {
        running.fail(&format!("POST /update?check: {answer:?}"));
    }
    running.wait_for("dump to start", || !entries(&dir, "env.run").is_empty());
    let env = entries(&dir, "env.run");
    if !secrets_in(&env).is_empty() || !feed_saw(&feed, "file-token") {
        running.fail(&format!("file token not used, or passed on: {env:?}"));
    }
    // `moltd config` names the files, never what they hold.
    let config = Moltd::new(&dir, Mode::Child)
        .args(["config"])
        .env("MOLTD_TOKEN_FILE", &token)
        .env("MOLTD_WEBHOOK", "https://hooks.example/webhook-token-value")
        .run();
    config.expect_code(0);
    let file_line = config
        .stdout
        .lines()
        .find(|l| l.starts_with("MOLTD_TOKEN_FILE "));
    assert!(
        file_line.is_some_and(|l| l.contains(token.to_str().unwrap())),
        "{}",
        config.stdout
    );
    assert!(
        !config.stdout.contains("file-token") && !config.stdout.contains("webhook-token-value"),
        "{}",
        config.stdout
    );
}

#[test]
fn a_bad_token_file_or_pass_list_is_a_clear_error() {
    let dir = TestDir::new("secrets_bad_files");
    let token = dir.write("token", "t0k\n");
    let empty = dir.write("empty", "\n");
    let missing = dir.join("missing");
    let cases: [(&[(&str, &std::path::Path)], &str); 4] = [
        (
            &[("MOLTD_TOKEN_FILE", &missing)],
            &format!(
                "cannot read MOLTD_TOKEN_FILE {}: No such file",
                missing.display()
            ),
        ),
        (
            &[("MOLTD_API_TOKEN_FILE", &empty)],
            &format!("MOLTD_API_TOKEN_FILE {} is empty", empty.display()),
        ),
        (
            &[
                ("MOLTD_API_TOKEN_FILE", &token),
                ("MOLTD_API_TOKEN", std::path::Path::new("t0k")),
            ],
            "both MOLTD_API_TOKEN and MOLTD_API_TOKEN_FILE are set",
        ),
        (
            &[("MOLTD_PASS_ENV", std::path::Path::new("GITHUB_TOKN"))],
            "bad MOLTD_PASS_ENV \"GITHUB_TOKN\"",
        ),
    ];
    for (vars, message) in cases {
        for args in [&["config"][..], &["--services", "services"]] {
            let mut moltd = Moltd::new(&dir, Mode::Child)
                .args(args)
                .env("MOLTD_REPO", "acme/app");
            for (name, value) in vars {
                moltd = moltd.env(name, value);
            }
            let finished = moltd.run();
            finished.expect_code(1).expect_stderr_contains(message);
            assert_eq!(finished.stderr.lines().count(), 1, "{}", finished.stderr);
        }
    }
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let (dir, port) = setup("secrets_bearer");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let listen = free_port();
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_API_TOKEN", "tok")
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // Past the first boot's health gate: an update is refused while it runs.
    wait_for_state(&mut running, &dir, "idle");
    let code = |auth| request(listen, "POST", "/update?check", Some(auth)).map(|a| a.0);
    for auth in ["Bearer tok", "bearer tok", "BEARER tok"] {
        if code(auth) != Some(200) {
            running.fail(&format!("{auth:?} was refused: {:?}", code(auth)));
        }
    }
    for auth in ["bearer wrong", "Basic tok", "tok"] {
        if code(auth) != Some(401) {
            running.fail(&format!("{auth:?} was not refused: {:?}", code(auth)));
        }
    }
}

/// Raises this process's descriptor limit to its hard limit: the flood
/// below needs more than the usual soft limit of 1024.
fn raise_fd_limit() {
    let mut limit = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(
            nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut limit),
            0
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Opens `count` connections to `addr` that never send a byte, from a few
/// threads at once, within [`TIMEOUT`] in all; fails if any cannot connect.
fn idle_flood(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + TIMEOUT;
    let workers = 20;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    (0..count / workers)
                        .map(|_| {
                            let left = deadline.saturating_duration_since(Instant::now());
                            TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            failed, 0,
            "{failed} of {count} idle clients could not connect"
        );
        results.into_iter().flatten().collect()
    })
}

/// Keeps every one of `held` open until `stop`: whichever moltd closed is
/// opened again at once, as a client set on holding the listener would.
/// Returns how many were opened again.
fn keep_open(addr: SocketAddr, held: &mut [TcpStream], stop: &AtomicBool) -> usize {
    let mut reopened = 0;
    while !stop.load(Ordering::Relaxed) {
        for stream in held.iter_mut() {
            stream.set_nonblocking(true).unwrap();
            if !matches!((&*stream).read(&mut [0; 1]), Ok(0)) {
                continue;
            }
            if let Ok(fresh) = TcpStream::connect_timeout(&addr, TIMEOUT) {
                *stream = fresh;
                reopened += 1;
            }
        }
        std::thread::yield_now();
    }
    reopened
}

#[test]
fn healthz_answers_within_a_second_under_1000_idle_connections() {
    raise_fd_limit();
    let dir = TestDir::new("secrets_flood");
    let listen = free_port();
    let mut running = crate::observe::listening(&dir, listen).spawn();
    running.wait_for("the listener", || {
        request(listen, "GET", "/healthz", None).is_some_and(|(code, _)| code == 200)
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let mut held = idle_flood(addr, 1000);
    let stop = AtomicBool::new(false);
    let (slowest, reopened) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| keep_open(addr, &mut held, &stop));
        let mut slowest = Ok(Duration::ZERO);
        for _ in 0..20 {
            let started = Instant::now();
            let answer = request(listen, "GET", "/healthz", None);
            let took = started.elapsed();
            if answer.as_ref().map(|a| a.0) != Some(200) || took > Duration::from_secs(1) {
                slowest = Err(format!("{answer:?} after {took:?}"));
                break;
            }
            slowest = slowest.map(|s| s.max(took));
        }
        stop.store(true, Ordering::Relaxed);
        (slowest, flood.join().unwrap())
    });
    match slowest {
        Ok(slowest) => println!(
            "/healthz while 1000 idle connections are held ({reopened} opened again): \
             slowest of 20 answers {slowest:?}"
        ),
        Err(problem) => running.fail(&format!("/healthz under the flood: {problem}")),
    }
}

/// A connection to `addr` whose receive buffer is as small as the kernel
/// allows, so that a large answer stalls in moltd's writes.
fn tiny_reader(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect(addr).ok()?;
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::RcvBuf, &1024).ok()?;
    Some(stream)
}

/// Before: a feed's release notes went whole into the status, so 6 MB of
/// notes made every `GET /status` 6 MB long, and 80 clients that asked for
/// it and never read kept `/healthz` waiting for 18 s (building and writing
/// the answers). Notes are now cut at 128 KiB, and a connection whose
/// answer is ready can be evicted like an idle one.
#[test]
fn healthz_answers_while_clients_never_read_a_status_with_huge_notes() {
    let (dir, port) = setup("secrets_slow_readers");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let listen = free_port();
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    // A newer release with 6 MB of notes makes `/status` 6 MB long.
    let mut big = release("2.0.0", App::Good);
    big.notes = Some("n".repeat(6 << 20));
    feed.publish(big);
    let checked = dir.moltd_client(&["update", "--check"]);
    assert_eq!(checked.code, Some(0), "{checked:?}");
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let stalled: Vec<TcpStream> = (0..80)
        .filter_map(|_| {
            let mut stream = tiny_reader(addr)?;
            std::io::Write::write_all(&mut stream, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            Some(stream)
        })
        .collect();
    assert_eq!(stalled.len(), 80);
    for _ in 0..5 {
        let started = Instant::now();
        let answer = request(listen, "GET", "/healthz", None);
        let took = started.elapsed();
        if answer.as_ref().map(|a| a.0) != Some(200) || took > Duration::from_secs(1) {
            running.fail(&format!(
                "/healthz behind stalled readers: {answer:?} after {took:?}"
            ));
        }
    }
    drop(stalled);
}
