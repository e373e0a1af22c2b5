//! Updates that can be seen: at the default log level an update says when
//! it starts, how its download goes, when it switches and when it is done
//! (or rolled back); a health command's output is shown, prefixed
//! `health | `, only when the gate fails; `GET /status` answers whether or
//! not a release source is configured.

use crate::apply::{
    App, current, free_port, moltd, release, served, setup, ship, status, wait_for_state,
};
use crate::feed::*;
use crate::observe::http;
use crate::util::{Finished, Mode, Moltd, Running, TestDir};
use std::time::Duration;

/// moltd as `apply::moltd` starts it, at the default log level.
fn quiet<'a>(dir: &'a TestDir, feed: &Feed) -> Moltd<'a> {
    // The last setting of a variable wins: back to the default.
    moltd(dir, feed, Mode::Pid1).env("MOLTD_LOG", "warn")
}

/// Stops moltd and returns what it logged on stderr.
fn stop(mut running: Running) -> Finished {
    running.signal(nix::libc::SIGTERM);
    running.wait()
}

/// The lines of moltd's stderr that start with `prefix`, without it.
fn after<'a>(finished: &'a Finished, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    let lines = finished.stderr.lines();
    lines.filter_map(move |l| l.strip_prefix(prefix).map(str::to_owned))
}

/// moltd's own lines tagged `tag` (`notice`, `warn`, `error`), without
/// the prefix, leaving out the download's progress lines.
fn lines(finished: &Finished, tag: &str) -> Vec<String> {
    let prefix = format!("moltd: {tag}: ");
    let lines = after(finished, &prefix);
    lines.filter(|l| !l.starts_with("downloading ")).collect()
}

/// The health command's output shown at the default level.
fn health_lines(finished: &Finished) -> Vec<String> {
    let warnings = lines(finished, "warn").into_iter();
    warnings.filter(|l| l.starts_with("health | ")).collect()
}

/// The download's progress lines for `tag`, without the prefix.
fn progress(finished: &Finished, tag: &str) -> Vec<String> {
    after(finished, &format!("moltd: notice: downloading {tag}: ")).collect()
}

/// The size of the asset of `release`.
fn size(release: &FakeRelease) -> usize {
    release.assets[0].data.len()
}

#[test]
fn an_update_and_a_rollback_log_at_the_default_level() {
    let (dir, port) = setup("visible_update");
    ship(&dir, "1.0.0");
    let v2 = release("2.0.0", App::Good);
    let v2_size = size(&v2);
    let feed = Feed::start(vec![v2, release("1.0.0", App::Good)]);
    let mut running = quiet(&dir, &feed).spawn();
    wait_for_state(&mut running, &dir, "completed");
    if served(port).as_deref() != Some("2.0.0") {
        running.fail("v2 does not serve after the update");
    }
    let reply = dir.moltd_client(&["rollback"]);
    if reply.code != Some(0) || current(&dir) != "v1.0.0" {
        running.fail(&format!("moltd rollback: {reply:?}"));
    }
    let finished = stop(running);
    let expected = [
        "update to v2.0.0 started (current: v1.0.0)",
        "switching current from v1.0.0 to v2.0.0",
        "now running v2.0.0",
        "rolling back from v2.0.0 to v1.0.0",
        "switching current from v2.0.0 to v1.0.0",
        "now running v1.0.0",
    ];
    assert_eq!(lines(&finished, "notice"), expected, "{}", finished.stderr);
    let done = format!("100% ({v2_size} of {v2_size} bytes)");
    let progress = progress(&finished, "v2.0.0");
    assert_eq!(progress.last(), Some(&done), "{}", finished.stderr);
    // Nothing else at the default level: no info lines, no warnings.
    assert!(
        !finished.stderr.contains("moltd: info:") && lines(&finished, "warn").is_empty(),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_failed_health_gate_logs_the_rollback_at_the_default_level() {
    let (dir, port) = setup("visible_rollback");
    ship(&dir, "2.0.0");
    let feed = Feed::start(vec![
        release("3.0.0", App::Exits),
        release("2.0.0", App::Good),
    ]);
    let mut running = quiet(&dir, &feed).spawn();
    let doc = wait_for_state(&mut running, &dir, "rolled_back");
    running.wait_for("v2 to serve again", || {
        served(port).as_deref() == Some("2.0.0")
    });
    let finished = stop(running);
    let reason = doc["last_error"].as_str().unwrap_or_default();
    let failed = reason
        .strip_suffix("; rolled back to v2.0.0")
        .unwrap_or_else(|| panic!("{doc}"));
    let notices = [
        "update to v3.0.0 started (current: v2.0.0)",
        "switching current from v2.0.0 to v3.0.0",
        "switching current back to v2.0.0",
    ];
    assert_eq!(lines(&finished, "notice"), notices, "{}", finished.stderr);
    let warning = format!("{failed}; switching back to v2.0.0");
    // The supervisor may also say that the crashing service crash-loops
    // while the start waits for it to be ready: a line about the service,
    // not about the update.
    let mut warnings = lines(&finished, "warn");
    warnings.retain(|line| !line.starts_with("web: crash-looping"));
    assert_eq!(warnings, [warning], "{}", finished.stderr);
    // The rollback's error, once (the shutdown may add its own lines).
    let errors = lines(&finished, "error");
    assert_eq!(
        errors.first(),
        Some(&reason.to_owned()),
        "{}",
        finished.stderr
    );
    assert_eq!(errors.iter().filter(|e| e.contains("v3.0.0")).count(), 1);
}

/// A release `v<version>` like `apply::release`'s good one, with `blob`
/// bytes of noise that do not compress, so its download takes reads.
fn big_release(version: &str, blob: usize) -> FakeRelease {
    let good = release(version, App::Good);
    let top = format!("app-{version}");
    let unpacked = std::io::Cursor::new(gunzip(&good.assets[0].data));
    let mut archive = tar::Archive::new(unpacked);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        builder.append(&header, &mut entry).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    let noise = noise(blob);
    header.set_mode(0o644);
    header.set_size(noise.len() as u64);
    builder
        .append_data(&mut header, format!("{top}/blob"), &noise[..])
        .unwrap();
    let data = gzip(&builder.into_inner().unwrap());
    FakeRelease::new(&good.tag, vec![FakeAsset::new(&good.assets[0].name, data)])
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

#[test]
fn a_slow_download_logs_its_progress() {
    let (dir, _port) = setup("visible_progress");
    ship(&dir, "1.0.0");
    let v2 = big_release("2.0.0", 64 * 1024);
    let total = size(&v2);
    let path = format!("/dl/v2.0.0/{}", v2.assets[0].name);
    let data = v2.assets[0].data.clone();
    // 20 pieces, 50 ms apart.
    let piece = total.div_ceil(20);
    let feed = Feed::with_hook(
        vec![v2, release("1.0.0", App::Good)],
        Box::new(move |request, _| {
            (request.path == path).then(|| {
                let mut response = serve_file(request, &data, true);
                response.trickle = Some((piece, Duration::from_millis(50)));
                response
            })
        }),
    );
    let mut running = quiet(&dir, &feed).spawn();
    wait_for_state(&mut running, &dir, "completed");
    let finished = stop(running);
    let progress = progress(&finished, "v2.0.0");
    // A line when the download enters a new tenth: one per tenth when
    // the reads are small (a busy machine may read two pieces at once).
    let tenths: Vec<u64> = progress
        .iter()
        .map(|l| l.split('%').next().and_then(|p| p.parse().ok()).unwrap())
        .map(|percent: u64| percent / 10)
        .collect();
    let rising = tenths.windows(2).all(|w| w[0] < w[1]);
    assert!(rising && tenths.len() >= 5, "{}", finished.stderr);
    let done = format!("100% ({total} of {total} bytes)");
    assert_eq!(progress.last(), Some(&done), "{}", finished.stderr);
}

/// An update to v2 gated by `MOLTD_HEALTH_CMD=command`, in which `$V`
/// is the version `current` serves and `$MARK` a path in the test's
/// folder; returns what moltd logged and the
/// state it ended in.
fn gated_by(name: &str, command: &str) -> (Finished, serde_json::Value) {
    let (dir, _port) = setup(name);
    let version = dir.join("app/current/www/version");
    let mark = dir.join("mark");
    let command = format!(
        "V=$(cat {}); MARK={}; {command}",
        version.display(),
        mark.display()
    );
    ship(&dir, "1.0.0");
    let feed = Feed::start(vec![
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ]);
    let mut running = quiet(&dir, &feed)
        .env("MOLTD_HEALTH_CMD", &command)
        .env("MOLTD_HEALTH_TIMEOUT", "2s")
        .spawn();
    running.wait_for("the update to end", || {
        ["completed", "rolled_back"].contains(&status(&dir)["state"].as_str().unwrap_or_default())
    });
    let doc = status(&dir);
    (stop(running), doc)
}

#[test]
fn a_failing_health_command_shows_its_output_prefixed_once() {
    // v2 fails, v1 passes (and prints too) when it is back.
    let command = "echo \"probing $V with $# arguments\"; \
                   [ $V = 1.0.0 ] || { echo 'wget: cannot connect' >&2; exit 1; }";
    let (finished, doc) = gated_by("visible_health_fails", command);
    assert_eq!(doc["state"], "rolled_back", "{doc}");
    let shown = health_lines(&finished);
    // The last try's lines, once; the earlier tries' nowhere.
    assert_eq!(
        shown,
        [
            "health | probing 2.0.0 with 0 arguments",
            "health | wget: cannot connect"
        ],
        "{}",
        finished.stderr
    );
    let everywhere = format!("{}{}", finished.stdout, finished.stderr);
    assert_eq!(
        everywhere.matches("wget: cannot connect").count(),
        1,
        "{everywhere}"
    );
    assert!(!everywhere.contains("probing 1.0.0"), "{everywhere}");
}

#[test]
fn a_passing_health_command_shows_nothing() {
    let (finished, doc) = gated_by("visible_health_passes", "echo all-good; exit 0");
    assert_eq!(doc["state"], "completed", "{doc}");
    let everywhere = format!("{}{}", finished.stdout, finished.stderr);
    assert!(
        !everywhere.contains("all-good") && !everywhere.contains("health |"),
        "{everywhere}"
    );
}

#[test]
fn status_without_a_release_source_gives_the_services() {
    let dir = TestDir::new("visible_status");
    let listen = free_port();
    dir.script("services/web/run", "#!/bin/sh\nexec sleep 1000\n");
    dir.write("services/web/essential", "");
    let mut running = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .spawn();
    let expected = serde_json::json!({
        "services": [{"name": "web", "state": "run", "restarts": 0, "essential": true}],
        "healthy": true,
    });
    // The agent hears of web once it runs: the list is empty before.
    let mut last = None;
    running.wait_for("GET /status to show web running", || {
        last = http(listen, "GET", "/status", None);
        last.as_ref().is_some_and(|(code, body)| {
            *code == 200
                && serde_json::from_str::<serde_json::Value>(body).ok() == Some(expected.clone())
        })
    });
    let (code, body) = last.unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if code != 200 || doc["services"][0]["name"] != "web" {
        running.fail(&format!("GET /status: {code} {body}"));
    }
    stop(running).expect_code(0);
}

#[test]
fn a_health_command_cut_short_by_the_deadline_shows_the_last_try_that_exited() {
    // The first try says why and fails; the next hangs until it is killed.
    let command = "if [ $V = 1.0.0 ]; then exit 0; fi; \
                   if [ -e \"$MARK\" ]; then echo hanging; exec sleep 100; fi; \
                   touch \"$MARK\"; echo 'connection refused'; exit 1";
    let (finished, doc) = gated_by("visible_health_cut_short", command);
    assert_eq!(doc["state"], "rolled_back", "{doc}");
    let shown = health_lines(&finished);
    assert_eq!(
        shown,
        ["health | connection refused"],
        "{}",
        finished.stderr
    );
}
