//! Switching to a new release inside a running supervisor: real services
//! (busybox httpd serving the release's files), a real feed on loopback,
//! real tar.gz releases. Update, health-gated rollback, hooks, the trigger
//! file, `moltd update`/`rollback`/`status`, pins, hand edits, kills at every
//! step, and the app's downtime. Also single-command mode with updates
//! (`moltd -- APP`): the command itself is stopped and started.

use crate::feed::*;
use crate::util::{Mode, Moltd, Running, TestDir};
use std::fs;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a test release does when started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum App {
    /// Serves `www/` (with `version` and a healthy `cgi-bin/health`).
    Good,
    /// Exits at once.
    Exits,
    /// Serves, but `cgi-bin/health` answers 500.
    Unhealthy,
}

/// `bin/app DIR` of a good release.
fn app_script(version: &str) -> String {
    format!(
        "#!/bin/sh\necho \"$$ {version}\" >> \"$1/started\"\necho {version} > \"$1/running\"\n\
         exec busybox httpd -f -p 127.0.0.1:$(cat \"$1/port\") -h \"$(dirname \"$0\")/../www\"\n"
    )
}

/// `www/cgi-bin/health` of a good release.
const HEALTHY: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho ok\n";

/// A feed with good releases v2.0.0 and v1.0.0.
pub(crate) fn v1_and_v2() -> Feed {
    Feed::start(vec![
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ])
}

/// A release `v<version>`: `bin/app DIR` records its pid and version in
/// DIR and serves `www/` on the port in `DIR/port`.
pub(crate) fn release(version: &str, app: App) -> FakeRelease {
    let top = format!("app-{version}");
    let script = match app {
        App::Exits => "#!/bin/sh\nexit 1\n".to_owned(),
        _ => app_script(version),
    };
    let health = match app {
        App::Unhealthy => "#!/bin/sh\necho 'Status: 500 Broken'\necho\necho broken\n",
        _ => HEALTHY,
    };
    let paths = [
        format!("{top}/bin/app"),
        format!("{top}/www/version"),
        format!("{top}/www/cgi-bin/health"),
    ];
    let archive = targz(&[
        Entry::Dir(&top),
        Entry::File(&paths[0], script.as_bytes(), 0o755),
        Entry::File(&paths[1], version.as_bytes(), 0o644),
        Entry::File(&paths[2], health.as_bytes(), 0o755),
    ]);
    FakeRelease::new(
        &format!("v{version}"),
        vec![FakeAsset::new(&asset_name(version), archive)],
    )
}

/// A free loopback port for the app.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A test dir with a `web` service that runs the current release.
pub(crate) fn setup(name: &str) -> (TestDir, u16) {
    let dir = TestDir::new(name);
    let port = free_port();
    dir.write("port", &port.to_string());
    dir.script(
        "services/web/run",
        &format!(
            "#!/bin/sh\nexec {}/current/bin/app {}\n",
            dir.join("app").display(),
            dir.path().display()
        ),
    );
    (dir, port)
}

/// moltd supervising the services folder, updating from `feed`; checks only
/// when started or asked (a long interval).
pub(crate) fn moltd<'a>(dir: &'a TestDir, feed: &Feed, mode: Mode) -> Moltd<'a> {
    updating(dir, feed, mode).args(["--services", "services"])
}

/// moltd updating from `feed`, with no arguments yet.
pub(crate) fn updating<'a>(dir: &'a TestDir, feed: &Feed, mode: Mode) -> Moltd<'a> {
    Moltd::new(dir, mode)
        .env("MOLTD_LOG", "info")
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_INTERVAL", "1h")
        .env("MOLTD_JITTER", "0s")
        .env("MOLTD_HEALTH_GRACE", "1s")
        .env("MOLTD_HEALTH_TIMEOUT", "5s")
        .env("SVWAIT", "3")
}

pub(crate) fn status(dir: &TestDir) -> serde_json::Value {
    serde_json::from_str(&dir.read("status.json")).unwrap_or_default()
}

/// Waits until the status document's state is `state`.
pub(crate) fn wait_for_state(
    running: &mut Running,
    dir: &TestDir,
    state: &str,
) -> serde_json::Value {
    running.wait_for(&format!("status state {state}"), || {
        status(dir)["state"] == state
    });
    status(dir)
}

/// The tag `app/current` points to.
pub(crate) fn current(dir: &TestDir) -> String {
    fs::read_link(dir.join("app/current"))
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The version the app serves, if it answers.
pub(crate) fn served(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.trim().to_owned())
}

/// Installs `version` in `app/releases` as an image would ship it.
pub(crate) fn ship(dir: &TestDir, version: &str) {
    let release = format!("app/releases/v{version}");
    dir.script(&format!("{release}/bin/app"), &app_script(version));
    dir.write(&format!("{release}/www/version"), version);
    dir.script(&format!("{release}/www/cgi-bin/health"), HEALTHY);
}

#[test]
fn first_boot_installs_then_update_and_rollback() {
    let (dir, port) = setup("apply_e2e");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // The check at start found nothing newer.
    wait_for_state(&mut running, &dir, "idle");
    if current(&dir) != "v1.0.0" || dir.read("app/current/VERSION").trim() != "1.0.0" {
        running.fail("v1 not installed as current");
    }
    // Publish v2 and ask for it, watching the app while it updates.
    feed.publish(release("2.0.0", App::Good));
    let stop = Arc::new(AtomicBool::new(false));
    // Each failed request is recorded with the state before and after it:
    // the app may be down only while one of them is between stop and start.
    let outages = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let watcher = {
        let (stop, outages) = (stop.clone(), outages.clone());
        let status_file = dir.join("status.json");
        let state = move || {
            let doc: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&status_file).unwrap_or_default())
                    .unwrap_or_default();
            doc["state"].as_str().unwrap_or("").to_owned()
        };
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let before = state();
                if served(port).is_none() {
                    outages.lock().unwrap().push((before, state()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let reply = dir.moltd_client(&["update"]);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    if reply.code != Some(0) || !reply.stdout.contains("updated to v2.0.0") {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    let outages = outages.lock().unwrap().clone();
    let allowed = ["stopping", "switching", "starting", "health_check"];
    let outside = |(before, after): &(String, String)| {
        !allowed.contains(&before.as_str()) && !allowed.contains(&after.as_str())
    };
    if outages.iter().any(outside) {
        running.fail(&format!(
            "the app was down outside stop..start: {outages:?}"
        ));
    }
    if served(port).as_deref() != Some("2.0.0") || current(&dir) != "v2.0.0" {
        running.fail("v2 does not serve after the update");
    }
    if !dir.join("app/releases/v1.0.0/bin/app").exists() {
        running.fail("v1 was not kept for rollback");
    }
    let doc = status(&dir);
    if doc["state"] != "completed" || doc["current"] != "v2.0.0" || doc["previous"] != "v1.0.0" {
        running.fail(&format!("bad status {doc}"));
    }
    let table = dir.moltd_client(&["status"]);
    if !table.stdout.contains("release: v2.0.0 (previous: v1.0.0)") {
        running.fail(&format!("moltd status: {table:?}"));
    }
    // Roll back by hand: v1 again, and v2 is not taken again automatically.
    let reply = dir.moltd_client(&["rollback"]);
    if reply.code != Some(0) || !reply.stdout.contains("rolled back to v1.0.0") {
        running.fail(&format!("moltd rollback: {reply:?}"));
    }
    if served(port).as_deref() != Some("1.0.0") || current(&dir) != "v1.0.0" {
        running.fail("v1 does not serve after the rollback");
    }
    let reply = dir.moltd_client(&["update", "--check"]);
    if !reply.stdout.contains("no newer release") {
        running.fail(&format!("the rolled-back v2 is offered again: {reply:?}"));
    }
}

/// A bad v3 on top of a shipped v2: rolled back, marked bad, not retried.
fn rolls_back(name: &str, app: App, health_url: bool) {
    let (dir, port) = setup(name);
    let feed = Feed::start(vec![release("3.0.0", app), release("2.0.0", App::Good)]);
    ship(&dir, "2.0.0");
    let mut command = moltd(&dir, &feed, Mode::Pid1);
    if health_url {
        let url = format!("http://127.0.0.1:{port}/cgi-bin/health");
        command = command.env("MOLTD_HEALTH_URL", url);
    }
    let mut running = command.spawn();
    let doc = wait_for_state(&mut running, &dir, "rolled_back");
    let reason = doc["last_error"].as_str().unwrap_or("");
    let expected = match app {
        App::Unhealthy => "answered http 500",
        _ => "web",
    };
    if !reason.contains("release v3.0.0 failed its health check") || !reason.contains(expected) {
        running.fail(&format!("bad reason: {doc}"));
    }
    if doc["bad_releases"] != serde_json::json!(["v3.0.0"]) || doc["current"] != "v2.0.0" {
        running.fail(&format!("bad status: {doc}"));
    }
    // An app drawing "update available" from the status must not offer v3.
    if !doc["available"].is_null() {
        running.fail(&format!("the bad release is still offered: {doc}"));
    }
    running.wait_for("v2 to serve again", || {
        served(port).as_deref() == Some("2.0.0")
    });
    if current(&dir) != "v2.0.0" {
        running.fail("current is not v2");
    }
    let downloads = feed.server.requests_to("/dl/").len();
    let reply = dir.moltd_client(&["update"]);
    if !reply.stdout.contains("no newer release")
        || feed.server.requests_to("/dl/").len() != downloads
    {
        running.fail(&format!("v3 was tried again: {reply:?}"));
    }
}

#[test]
fn a_release_that_exits_at_once_is_rolled_back() {
    rolls_back("apply_exits", App::Exits, false);
}

#[test]
fn a_release_whose_health_url_fails_is_rolled_back() {
    rolls_back("apply_unhealthy", App::Unhealthy, true);
}

#[test]
fn a_failing_pre_update_hook_aborts_with_nothing_changed() {
    let (dir, port) = setup("apply_pre_hook");
    let feed = Feed::start(vec![
        release("3.0.0", App::Good),
        release("2.0.0", App::Good),
    ]);
    ship(&dir, "2.0.0");
    let hook = format!("echo \"$1 -> $2\" > {}/hook; exit 3", dir.path().display());
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_PRE_UPDATE", hook)
        .spawn();
    let doc = wait_for_state(&mut running, &dir, "failed");
    let error = doc["last_error"].as_str().unwrap_or("");
    if !error.contains("MOLTD_PRE_UPDATE exited with 3")
        || dir.read("hook").trim() != "v2.0.0 -> v3.0.0"
    {
        running.fail(&format!("bad status: {doc}"));
    }
    if current(&dir) != "v2.0.0" || served(port).as_deref() != Some("2.0.0") {
        running.fail("v2 was touched");
    }
    if dir.read("started").lines().count() != 1 {
        running.fail("web was restarted");
    }
}

#[test]
fn trigger_file_applies_a_staged_release() {
    let (dir, port) = setup("apply_trigger");
    let feed = v1_and_v2();
    ship(&dir, "1.0.0");
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_MODE", "stage")
        .spawn();
    wait_for_state(&mut running, &dir, "staged");
    // Staging may finish before the app listens: wait, do not sample once.
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    if current(&dir) != "v1.0.0" {
        running.fail("staging must not switch current");
    }
    dir.write("app/.moltd/update-requested", "");
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    running.wait_for("the trigger file to be removed", || {
        !dir.join("app/.moltd/update-requested").exists()
    });
}

#[test]
fn pin_to_an_older_version() {
    let (dir, port) = setup("apply_pin");
    let feed = v1_and_v2();
    ship(&dir, "2.0.0");
    let post = format!("echo \"$1 -> $2\" > {}/post", dir.path().display());
    let health = format!("test \"$(cat {}/running)\" = 1.0.0", dir.path().display());
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_VERSION", "=1.0.0")
        .env("MOLTD_HEALTH_CMD", health)
        .env("MOLTD_POST_UPDATE", post)
        .spawn();
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    if current(&dir) != "v1.0.0" || dir.read("post").trim() != "v2.0.0 -> v1.0.0" {
        running.fail("current is not v1, or the post-update hook did not run");
    }
}

#[test]
fn hand_edits_suspend_updates_until_forced() {
    let (dir, port) = setup("apply_manual");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(release("2.0.0", App::Good));
    dir.write("app/releases/v1.0.0/www/version", "1.0.0-hotfix");
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(1) || !reply.stderr.contains("www/version was modified") {
        running.fail(&format!("the hand edit was not noticed: {reply:?}"));
    }
    let doc = status(&dir);
    if !doc["suspended"]
        .as_str()
        .is_some_and(|s| s.contains("changed by hand"))
    {
        running.fail(&format!("status does not say why: {doc}"));
    }
    let reply = dir.moltd_client(&["update", "--force"]);
    if reply.code != Some(0) || served(port).as_deref() != Some("2.0.0") {
        running.fail(&format!("--force did not update: {reply:?}"));
    }
    // Repointing current by hand suspends updates too.
    fs::remove_file(dir.join("app/current")).unwrap();
    std::os::unix::fs::symlink("releases/v1.0.0", dir.join("app/current")).unwrap();
    let reply = dir.moltd_client(&["update"]);
    if !reply
        .stderr
        .contains("current points to v1.0.0, not to v2.0.0")
    {
        running.fail(&format!("the repointed link was not noticed: {reply:?}"));
    }
}

/// Kills every process working inside the test dir (the orphaned services
/// of a killed moltd), until none is left.
pub(crate) fn kill_leftovers(dir: &TestDir, context: &crate::util::Finished) {
    let deadline = std::time::Instant::now() + crate::util::TIMEOUT;
    loop {
        let mut found = false;
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let inside = fs::read_link(entry.path().join("cwd"))
                .is_ok_and(|cwd| cwd.starts_with(dir.path()));
            if inside {
                found = true;
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        if std::time::Instant::now() > deadline {
            context.fail("cannot end the orphaned services");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills moltd when it enters `state`, then starts it again: it comes back
/// on a whole release and finishes the update.
fn killed_at(state: &str) {
    let (dir, port) = setup(&format!("apply_kill_{state}"));
    let feed = v1_and_v2();
    ship(&dir, "1.0.0");
    let first = moltd(&dir, &feed, Mode::Child)
        .env("MOLTD_TEST_CRASH_AT", format!("pid1:{state}"))
        .run();
    if first.signal != Some(9) {
        first.fail(&format!("moltd was not killed at {state}"));
    }
    // Its services were orphaned: end them as a container restart would.
    kill_leftovers(&dir, &first);
    if let Some(tag) = not_whole(&dir) {
        first.fail(&format!("after a kill at {state}, current is {tag:?}"));
    }
    let mut running = moltd(&dir, &feed, Mode::Child).spawn();
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let staging_left = fs::read_dir(dir.join("app/releases"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with('.'));
    if staging_left || current(&dir) != "v2.0.0" {
        running.fail("leftovers after the restart");
    }
    running.signal(nix::libc::SIGTERM);
    running.wait();
}

/// What `current` names, unless it is v1 or v2 in whole.
pub(crate) fn not_whole(dir: &TestDir) -> Option<String> {
    let tag = current(dir);
    let whole = ["v1.0.0", "v2.0.0"].contains(&tag.as_str())
        && dir
            .join(&format!("app/releases/{tag}/www/version"))
            .exists();
    (!whole).then_some(tag)
}

/// Every step of an update, as `MOLTD_TEST_CRASH_AT` names them.
pub(crate) const UPDATE_STEPS: [&str; 9] = [
    "checking",
    "downloading",
    "verifying",
    "unpacking",
    "stopping",
    "switching",
    "starting",
    "health_check",
    "completed",
];

#[test]
fn killed_at_every_step_comes_back_whole() {
    for state in UPDATE_STEPS {
        killed_at(state);
    }
}

#[test]
fn first_boot_waits_for_the_feed_and_says_so() {
    let (dir, port) = setup("apply_first_boot_offline");
    let down = Arc::new(AtomicBool::new(true));
    let down_in = down.clone();
    let feed = Feed::with_hook(
        vec![release("1.0.0", App::Good)],
        Box::new(move |_, _| {
            down_in
                .load(Ordering::Relaxed)
                .then(|| Response::new(503, "maintenance"))
        }),
    );
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_INTERVAL", "1s")
        .spawn();
    let doc = wait_for_state(&mut running, &dir, "failed");
    let error = doc["last_error"].as_str().unwrap_or("");
    if !error.contains("no release installed yet") || !error.contains("retrying in") {
        running.fail(&format!("status does not say so: {doc}"));
    }
    if dir.join("running").exists() {
        running.fail("web started with no release installed");
    }
    down.store(false, Ordering::Relaxed);
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
}

/// `moltd -- app/current/bin/app DIR` updating from `feed`: single-command
/// mode with updates.
pub(crate) fn single<'a>(dir: &'a TestDir, feed: &Feed) -> Moltd<'a> {
    let app = dir.join("app/current/bin/app");
    updating(dir, feed, Mode::Pid1).args(["--".as_ref(), app.as_os_str(), dir.path().as_os_str()])
}

/// A test dir with a port for the app, and a feed with a good v1.0.0.
fn with_v1(name: &str) -> (TestDir, u16, Feed) {
    let dir = TestDir::new(name);
    let port = free_port();
    dir.write("port", &port.to_string());
    (dir, port, Feed::start(vec![release("1.0.0", App::Good)]))
}

#[test]
fn single_command_mode_updates_the_command_and_rolls_back() {
    let (dir, port, feed) = with_v1("apply_single");
    let mut running = single(&dir, &feed).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(release("2.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || !reply.stdout.contains("updated to v2.0.0") {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    if served(port).as_deref() != Some("2.0.0") || current(&dir) != "v2.0.0" {
        running.fail("v2 does not serve after the update");
    }
    // A v3 that exits at once: rolled back, and moltd carries on.
    feed.publish(release("3.0.0", App::Exits));
    let reply = dir.moltd_client(&["update"]);
    let doc = status(&dir);
    if reply.code == Some(0)
        || doc["state"] != "rolled_back"
        || doc["bad_releases"] != serde_json::json!(["v3.0.0"])
        || !doc["last_error"].as_str().unwrap_or("").contains(".main")
    {
        running.fail(&format!("v3 not rolled back: {reply:?} {doc}"));
    }
    running.wait_for("v2 to serve again", || {
        served(port).as_deref() == Some("2.0.0")
    });
    // TERM goes to the command; moltd leaves with its status.
    running.signal(nix::libc::SIGTERM);
    running.wait().expect_code(143);
}

#[test]
fn single_command_mode_with_updates_exits_with_the_commands_status() {
    let (dir, port, feed) = with_v1("apply_single_exit");
    let mut running = single(&dir, &feed).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    // Past the first boot's health gate (an exit during it fails the gate).
    wait_for_state(&mut running, &dir, "idle");
    // The app dies of USR1 on its own: moltd leaves with 128+10.
    let pid: i32 = match running.children().0.first() {
        Some(pid) => *pid,
        None => running.fail("moltd has no child but the update agent"),
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { nix::libc::kill(pid, nix::libc::SIGUSR1) };
    running.wait().expect_code(138);
}

#[test]
fn single_command_mode_without_a_source_is_unchanged() {
    let dir = TestDir::new("apply_single_none");
    // No updater, no supervisor: no control socket, the status passes through.
    Moltd::new(&dir, Mode::Pid1)
        .args(["--", "sh", "-c", "exit 3"])
        .run()
        .expect_code(3);
    if dir.control_socket().exists() {
        panic!(
            "single-command mode opened a control socket:\n{}",
            dir.listing()
        );
    }
    let mut running = Moltd::new(&dir, Mode::Pid1)
        .args(["--", "sh", "-c", "echo up > ready; exec sleep 1000"])
        .spawn();
    running.wait_for_file("ready", "up");
    running.signal(nix::libc::SIGTERM);
    running.wait().expect_code(143);
}

/// v3 fails its gate only because its "database" is down: marked bad and
/// not retried; `moltd unmark` (through the running supervisor) clears the
/// mark, and once the database is up the next `moltd update` applies v3.
#[test]
fn unmark_lets_a_release_that_failed_its_gate_be_retried() {
    let (dir, port) = setup("apply_unmark");
    let feed = Feed::start(vec![
        release("3.0.0", App::Good),
        release("2.0.0", App::Good),
    ]);
    ship(&dir, "2.0.0");
    // v3 is unhealthy until its "database" is up. Asked of `current`, not
    // of what the app says it runs: a v3 still starting would pass.
    let health = format!(
        "cd {} && case \"$(readlink app/current)\" in *v3.0.0) test -e db-up;; esac",
        dir.path().display()
    );
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_HEALTH_CMD", health)
        .spawn();
    let doc = wait_for_state(&mut running, &dir, "rolled_back");
    if doc["bad_releases"] != serde_json::json!(["v3.0.0"]) {
        running.fail(&format!("v3 not marked bad: {doc}"));
    }
    running.wait_for("v2 to serve again", || {
        served(port).as_deref() == Some("2.0.0")
    });
    refuses_beside_the_supervisor(&mut running, &dir, &feed);
    let reply = dir.moltd_client(&["unmark", "v9.9.9"]);
    if reply.code != Some(1)
        || !reply
            .stderr
            .contains("v9.9.9 not marked bad (bad releases: v3.0.0)")
    {
        running.fail(&format!("an unknown tag was accepted: {reply:?}"));
    }
    // A state file that cannot be replaced (a folder in its place): the
    // unmark fails, says why, and changes nothing, in memory either.
    let state_file = dir.join("app/.moltd/state.json");
    fs::remove_file(&state_file).unwrap();
    fs::create_dir(&state_file).unwrap();
    let reply = dir.moltd_client(&["unmark", "v3.0.0"]);
    if reply.code != Some(1) || !reply.stderr.contains("cannot save") {
        running.fail(&format!("unmark without a saved state: {reply:?}"));
    }
    if status(&dir)["bad_releases"] != serde_json::json!(["v3.0.0"]) {
        running.fail("a failed unmark cleared the mark in the status");
    }
    fs::remove_dir(&state_file).unwrap();
    let reply = dir.moltd_client(&["unmark", "v3.0.0"]);
    if reply.code != Some(0) || !reply.stdout.contains("v3.0.0 no longer marked bad") {
        running.fail(&format!("moltd unmark: {reply:?}"));
    }
    let doc = status(&dir);
    if doc["bad_releases"] != serde_json::json!([]) {
        running.fail(&format!("the status still lists v3 as bad: {doc}"));
    }
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap_or_default();
    if state["bad"] != serde_json::json!([]) {
        running.fail(&format!("the state file still marks v3 bad: {state}"));
    }
    dir.write("db-up", "");
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || !reply.stdout.contains("updated to v3.0.0") {
        running.fail(&format!("v3 was not retried: {reply:?}"));
    }
    if served(port).as_deref() != Some("3.0.0") || current(&dir) != "v3.0.0" {
        running.fail("v3 does not serve after the retry");
    }
}

/// Commands that cannot reach the running supervisor (a local
/// `--stage-only` or `--watch`, a wrong `MOLTD_CONTROL`) refuse instead of
/// writing its state file behind its back: its lock says it is there.
fn refuses_beside_the_supervisor(running: &mut Running, dir: &TestDir, feed: &Feed) {
    let state_file = dir.join("app/.moltd/state.json");
    let before = fs::read(&state_file).unwrap();
    let wrong_control = dir.join("elsewhere.sock");
    let local = |args: &[&str]| {
        Moltd::new(dir, Mode::Child)
            .args(args)
            .env("MOLTD_REPO", "acme/app")
            .env("GITHUB_API_URL", feed.url())
            .env("MOLTD_APP_DIR", dir.join("app"))
            .env("MOLTD_CONTROL", &wrong_control)
            .run()
    };
    for args in [
        &["unmark", "v3.0.0"][..],
        &["update", "--stage-only"],
        &["update", "--watch"],
        &["update", "--check"],
    ] {
        let run = local(args);
        run.expect_code(1).expect_stderr_contains(&format!(
            "another moltd manages {} (it holds {})",
            dir.join("app").display(),
            dir.join("app/.moltd/supervisor.lock").display()
        ));
        if fs::read(&state_file).unwrap() != before {
            running.fail(&format!("moltd {args:?} changed the state file"));
        }
    }
    if status(dir)["bad_releases"] != serde_json::json!(["v3.0.0"]) {
        running.fail("the supervisor lost its mark");
    }
}
