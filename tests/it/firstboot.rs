//! First boot does not depend on the newest release being good: with
//! nothing installed, moltd walks down the eligible releases until one
//! stages and passes its health gate; refused downloads are remembered by
//! tag and assets; rate limits are honoured; a read-only app dir runs the
//! shipped release with updates off; the trigger works for any user.

use crate::apply::{
    App, current, kill_leftovers, moltd, release, served, setup, ship, single, status,
    wait_for_state,
};
use crate::feed::*;
use crate::util::{Mode, TestDir};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `release(version)` whose asset's published digest is not its own.
fn with_wrong_digest(version: &str) -> FakeRelease {
    let mut bad = release(version, App::Good);
    bad.assets[0].digest = Some(format!("sha256:{}", sha256_hex(b"something else")));
    bad
}

/// A release whose archive climbs out of its folder.
fn with_traversal(version: &str) -> FakeRelease {
    let archive = targz(&[
        Entry::Dir("app"),
        Entry::File("app/../../evil", b"x", 0o644),
    ]);
    FakeRelease::new(
        &format!("v{version}"),
        vec![FakeAsset::new(&asset_name(version), archive)],
    )
}

/// The download requests for `tag`'s assets so far.
pub(crate) fn downloads(feed: &Feed, tag: &str) -> usize {
    feed.server.requests_to(&format!("/dl/{tag}/")).len()
}

#[test]
fn first_boot_walks_past_releases_that_fail_verification_unpacking_or_staging() {
    let (dir, port) = setup("firstboot_walk");
    let long = format!("v2.1.0+{}", "a".repeat(240));
    let mut too_long = release("2.1.0", App::Good);
    too_long.tag = long.clone();
    let feed = Feed::start(vec![
        with_wrong_digest("4.0.0"),
        with_traversal("3.0.0"),
        too_long,
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    // The check after the first boot finds nothing newer it may take.
    let doc = wait_for_state(&mut running, &dir, "idle");
    if current(&dir) != "v2.0.0" || downloads(&feed, "v1.0.0") != 0 {
        running.fail("v2 is not the one installed, or v1 was downloaded");
    }
    let mut marked = vec!["v3.0.0".to_owned(), "v4.0.0".to_owned(), long.clone()];
    marked.sort();
    let reasons = &doc["refused_releases"];
    let says = |tag: &str, text: &str| reasons[tag].as_str().is_some_and(|r| r.contains(text));
    if doc["bad_releases"] != serde_json::json!(marked)
        || !says("v4.0.0", "sha256 of")
        || !says("v3.0.0", "entry app/../../evil refused")
        || !says(&long, "cannot name a release folder")
    {
        running.fail(&format!("the refusals are not in the status: {doc}"));
    }
    let log = dir.read("moltd.stderr");
    for tag in ["v4.0.0", "v3.0.0", &long] {
        if !log.contains(&format!("release {tag} cannot be installed: ")) {
            running.fail(&format!("the log does not say why {tag} was skipped"));
        }
    }
    // Refused by tag and assets: not downloaded again at the next check.
    let tried = downloads(&feed, "v4.0.0");
    let reply = dir.moltd_client(&["update"]);
    if !reply.stdout.contains("no newer release") || downloads(&feed, "v4.0.0") != tried {
        running.fail(&format!("the refused v4 was downloaded again: {reply:?}"));
    }
    // Republished with a good asset: a new digest, tried again.
    feed.republish(release("4.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || !reply.stdout.contains("updated to v4.0.0") {
        running.fail(&format!("the republished v4 was not tried: {reply:?}"));
    }
    if downloads(&feed, "v4.0.0") != tried + 1 || served(port).as_deref() != Some("4.0.0") {
        running.fail("v4 does not serve after its republication");
    }
    let doc = status(&dir);
    if doc["refused_releases"].get("v4.0.0").is_some() {
        running.fail(&format!("v4 is still refused: {doc}"));
    }
}

/// Nothing that works: one line says why, then the next round does not
/// download the refused release again, until it is republished.
#[test]
fn first_boot_with_only_broken_releases_waits_and_says_why() {
    let (dir, port) = setup("firstboot_none");
    let feed = Feed::start(vec![with_wrong_digest("1.0.0")]);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_INTERVAL", "1s")
        .spawn();
    running.wait_for("a round to find that all are refused", || {
        status(&dir)["last_error"].as_str().is_some_and(|e| {
            e.contains("no release installed yet: no eligible release could be installed: all are marked bad or refused (v1.0.0)")
        })
    });
    let log = dir.read("moltd.stderr");
    let first =
        "no release installed yet: no eligible release could be installed: v1.0.0: sha256 of";
    if !log.contains(first) || downloads(&feed, "v1.0.0") != 1 || dir.join("running").exists() {
        running.fail("the first round does not say why, or v1 was downloaded again");
    }
    feed.republish(release("1.0.0", App::Good));
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
}

#[test]
fn first_boot_skips_a_release_whose_app_crashes_under_its_health_command() {
    let (dir, port) = setup("firstboot_gate");
    let feed = Feed::start(vec![
        release("2.0.0", App::Exits),
        release("1.0.0", App::Good),
    ]);
    let health = format!("busybox wget -q -O /dev/null http://127.0.0.1:{port}/version");
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_HEALTH_CMD", health)
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let doc = wait_for_state(&mut running, &dir, "idle");
    if doc["bad_releases"] != serde_json::json!(["v2.0.0"]) || doc["current"] != "v1.0.0" {
        running.fail(&format!("v2 not marked bad: {doc}"));
    }
    if dir.join("app/releases/v2.0.0").exists() || current(&dir) != "v1.0.0" {
        running.fail("the crashing v2 was kept");
    }
    if !dir
        .read("moltd.stderr")
        .contains("release v2.0.0 cannot be installed: failed its health check: ")
    {
        running.fail("the log does not say why v2 was skipped");
    }
}

/// A first boot killed during the gate of the newest release: the next
/// start does not adopt it unchecked, but gates it again.
#[test]
fn a_first_boot_killed_during_the_gate_checks_the_release_again() {
    let (dir, port) = setup("firstboot_killed");
    let feed = Feed::start(vec![
        release("2.0.0", App::Exits),
        release("1.0.0", App::Good),
    ]);
    let first = moltd(&dir, &feed, Mode::Child)
        .env("MOLTD_TEST_CRASH_AT", "pid1:health_check")
        .run();
    if first.signal != Some(9) || current(&dir) != "v2.0.0" {
        first.fail("moltd was not killed in the gate of v2");
    }
    kill_leftovers(&dir, &first);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let doc = wait_for_state(&mut running, &dir, "idle");
    if doc["bad_releases"] != serde_json::json!(["v2.0.0"]) {
        running.fail(&format!("v2 was not gated again: {doc}"));
    }
}

/// Single-command mode: the command of a release that fails its first gate
/// by exiting does not end moltd; the next release runs.
#[test]
fn first_boot_in_single_command_mode_survives_a_command_that_exits() {
    let dir = TestDir::new("firstboot_single");
    let port = crate::apply::free_port();
    dir.write("port", &port.to_string());
    let feed = Feed::start(vec![
        release("2.0.0", App::Exits),
        release("1.0.0", App::Good),
    ]);
    let mut running = single(&dir, &feed).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let doc = wait_for_state(&mut running, &dir, "idle");
    if doc["bad_releases"] != serde_json::json!(["v2.0.0"]) {
        running.fail(&format!("v2 not marked bad: {doc}"));
    }
    // The command is let go after the gate: its exit ends moltd again.
    running.signal(nix::libc::SIGTERM);
    running.wait().expect_code(143);
}

/// A first boot whose first list request is rate limited by `limited`
/// (made when it is asked) waits as the server said: `at_least` between
/// the two requests.
fn rate_limited_first_boot(name: &str, limited: fn() -> Response, at_least: Duration, says: &str) {
    let (dir, port) = setup(name);
    let asked = Arc::new(AtomicUsize::new(0));
    let asked_in = asked.clone();
    let feed = Feed::with_hook(
        vec![release("1.0.0", App::Good)],
        Box::new(move |request, _| {
            let listing = request.path.starts_with("/repos/acme/app/releases");
            (listing && asked_in.fetch_add(1, Ordering::SeqCst) == 0).then(limited)
        }),
    );
    // Without the server's word, the backoff would be 1 s.
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_INTERVAL", "1s")
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let lists = feed.server.requests_to("/repos/acme/app/releases");
    let gap = lists[1].at.duration_since(lists[0].at);
    if gap < at_least {
        running.fail(&format!("asked again after {gap:?}, not {at_least:?}"));
    }
    let log = dir.read("moltd.stderr");
    let Some(line) = log.lines().find(|l| l.contains("no release installed yet")) else {
        running.fail("no line says that nothing is installed yet");
    };
    if !line.contains(says) || line.matches("retrying in").count() != 1 {
        running.fail(&format!("the line does not say so once: {line}"));
    }
}

#[test]
fn first_boot_honours_a_429_retry_after() {
    rate_limited_first_boot(
        "firstboot_429",
        || Response::new(429, "slow down").header("Retry-After", "3"),
        Duration::from_millis(2900),
        "(http 429); the server asks to wait 3s; retrying in 3s",
    );
}

#[test]
fn first_boot_honours_a_403_with_no_requests_left() {
    // The reset is in whole seconds: more than 3 s after the answer.
    let limited = || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Response::new(403, r#"{"message":"API rate limit exceeded"}"#)
            .header("X-RateLimit-Remaining", "0")
            .header("X-RateLimit-Reset", (now.as_secs() + 4).to_string())
    };
    rate_limited_first_boot(
        "firstboot_403",
        limited,
        Duration::from_millis(2900),
        "(http 403); the server asks to wait ",
    );
}

/// Unmounts a read-only bind mount when dropped.
pub(crate) struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    pub(crate) fn mount(path: &std::path::Path) -> ReadOnly {
        let path_arg = path.as_os_str();
        for args in [
            vec!["--bind".as_ref(), path_arg, path_arg],
            vec!["-o".as_ref(), "remount,bind,ro".as_ref(), path_arg],
        ] {
            let done = Command::new("mount").args(args).status().unwrap();
            assert!(done.success(), "cannot mount {} read-only", path.display());
        }
        ReadOnly(path.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_app_dir_runs_the_shipped_release_with_updates_off() {
    let (dir, port) = setup("firstboot_read_only");
    ship(&dir, "1.0.0");
    std::os::unix::fs::symlink("releases/v1.0.0", dir.join("app/current")).unwrap();
    let _read_only = ReadOnly::mount(&dir.join("app"));
    let feed = Feed::start(vec![
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let off = format!(
        "updates are off: cannot create {}",
        dir.join("app/.moltd").display()
    );
    running.wait_for("the status to say updates are off", || {
        status(&dir)["suspended"]
            .as_str()
            .is_some_and(|s| s.contains(&off))
    });
    if !dir.read("moltd.stderr").contains(&off) {
        running.fail("the log does not say updates are off");
    }
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(1) || !reply.stderr.contains(&off) {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    let table = dir.moltd_client(&["status"]);
    if !table.stdout.contains("release: v1.0.0") || !table.stdout.contains(&off) {
        running.fail(&format!("moltd status: {table:?}"));
    }
    if running.has_exited() || !feed.server.requests().is_empty() {
        running.fail("moltd exited, or asked the feed");
    }
}

#[test]
fn the_trigger_file_works_for_the_services_user() {
    let (dir, port) = setup("firstboot_trigger_user");
    ship(&dir, "1.0.0");
    let feed = Feed::start(vec![
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ]);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_MODE", "stage")
        .spawn();
    wait_for_state(&mut running, &dir, "staged");
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    let touch = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["touch", "app/.moltd/trigger/update-requested"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    if !touch.status.success() {
        running.fail(&format!("nobody cannot write the trigger: {touch:?}"));
    }
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    running.wait_for("the trigger file to be removed", || {
        !dir.join("app/.moltd/trigger/update-requested").exists()
    });
    // The state stays moltd's own.
    use std::os::unix::fs::PermissionsExt;
    for path in ["app/.moltd", "app/.moltd/state.json"] {
        let mode = std::fs::metadata(dir.join(path))
            .unwrap()
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            running.fail(&format!("{path} is writable by others: {mode:o}"));
        }
    }
}

/// A refusal holds for the settings that made it: fixing `MOLTD_ASSET`
/// gives the release another chance without `moltd unmark`.
#[test]
fn a_refusal_is_forgotten_when_the_settings_that_made_it_change() {
    let dir = TestDir::new("firstboot_settings");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let stage = |asset: Option<&str>| {
        let mut command = crate::util::Moltd::new(&dir, Mode::Child)
            .args(["update", "--stage-only"])
            .env("MOLTD_REPO", "acme/app")
            .env("GITHUB_API_URL", feed.url())
            .env("MOLTD_APP_DIR", dir.join("app"));
        if let Some(glob) = asset {
            command = command.env("MOLTD_ASSET", glob);
        }
        command.run()
    };
    stage(Some("*-typo.tar.gz"))
        .expect_code(1)
        .expect_stderr_contains("release v1.0.0: no asset matches");
    stage(Some("*-typo.tar.gz"))
        .expect_code(0)
        .expect_stdout_contains("no newer release");
    stage(None)
        .expect_code(0)
        .expect_stdout_contains(&dir.join("app/releases/v1.0.0").display().to_string());
}

/// Before: between first-boot rounds `moltd update` was refused ("retrying
/// on the schedule"), so an operator who fixed the feed waited out the
/// backoff. Now it starts the next round at once and answers its outcome.
#[test]
fn an_update_request_at_first_boot_starts_the_next_round_at_once() {
    let (dir, port) = setup("firstboot_request");
    let feed = Feed::start(vec![with_wrong_digest("1.0.0")]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("the first round to fail", || {
        status(&dir)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no release installed yet: "))
    });
    feed.republish(release("1.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || !reply.stdout.contains("installed v1.0.0") {
        let (out, err) = (&reply.stdout, &reply.stderr);
        running.fail(&format!("moltd update at first boot: {out} {err}"));
    }
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
}
