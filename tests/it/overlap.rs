//! `MOLTD_STRATEGY=overlap`: the new release's services start beside the
//! old ones, and the old ones stop only once the new ones are ready and
//! healthy; a new release that fails is stopped, the old one never was.
//! Real processes as PID 1, the loopback feed, real tar.gz releases.

use crate::apply::{moltd, setup, wait_for_state};
use crate::feed::{Entry, FakeAsset, FakeRelease, Feed, asset_name, targz};
use crate::sv::expect;
use crate::util::{Mode, TestDir};
use nix::libc::SIGTERM;

/// When the test release v3.0.0 says it is ready.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notifies {
    /// Once the file `go` appears in the test dir.
    OnGo,
    Never,
}

/// `bin/app DIR` of a release: appends `PID VERSION` to `DIR/started`, says
/// it is ready on descriptor 5 (the service's `notification-fd`) as `when`
/// says (`None`: never), and sleeps.
fn app(version: &str, when: Option<&str>) -> String {
    let notify = match when {
        Some(before) => format!("{before}echo >&5\n"),
        None => String::new(),
    };
    format!("#!/bin/sh\necho \"$$ {version}\" >> \"$1/started\"\n{notify}exec sleep 1000\n")
}

/// A test dir whose `web` service (with `notification-fd` 5) runs the
/// current release, v2.0.0 shipped in `app/releases` (ready at once), and
/// a feed offering v3.0.0, ready as `v3` says.
pub(crate) fn notifying_setup(name: &str, v3: Notifies) -> (TestDir, Feed) {
    let (dir, _) = setup(name);
    dir.write("services/web/notification-fd", "5\n");
    dir.script("app/releases/v2.0.0/bin/app", &app("2.0.0", Some("")));
    let when = match v3 {
        Notifies::OnGo => Some("while [ ! -e \"$1/go\" ]; do sleep 0.02; done\n"),
        Notifies::Never => None,
    };
    let top = "app-3.0.0";
    let path = format!("{top}/bin/app");
    let script = app("3.0.0", when);
    let archive = targz(&[
        Entry::Dir(top),
        Entry::File(&path, script.as_bytes(), 0o755),
    ]);
    let feed = Feed::start(vec![FakeRelease::new(
        "v3.0.0",
        vec![FakeAsset::new(&asset_name("3.0.0"), archive)],
    )]);
    (dir, feed)
}

/// The versions started, in order.
pub(crate) fn versions(dir: &TestDir) -> Vec<String> {
    (dir.read("started").lines())
        .filter_map(|line| line.split(' ').nth(1).map(str::to_owned))
        .collect()
}

/// The pid `sv status NAME` shows, if it runs.
fn pid(dir: &TestDir, name: &str) -> Option<String> {
    let line = dir.sv(&["status", name]).stdout;
    let rest = line.strip_prefix(&format!("run: {name}: (pid "))?;
    Some(rest.split(')').next()?.to_owned())
}

/// The pid the release `version` recorded when it started (the last one).
fn started(dir: &TestDir, version: &str) -> Option<String> {
    dir.read("started")
        .lines()
        .rfind(|line| line.ends_with(&format!(" {version}")))
        .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
}

/// The old release's `run` keeps serving while the new one starts, and is
/// stopped only once the new one is ready and healthy; the new one is then
/// the service. `moltd status` lists the second generation below its
/// service meanwhile (it once listed services only).
#[test]
fn overlap_update_keeps_the_old_pid_until_the_new_one_is_ready() {
    let (dir, feed) = notifying_setup("overlap_update", Notifies::OnGo);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_STRATEGY", "overlap")
        .spawn();
    running.wait_for("v3 to start beside v2", || started(&dir, "3.0.0").is_some());
    let old = started(&dir, "2.0.0").unwrap();
    let new = started(&dir, "3.0.0").unwrap();
    assert_ne!(old, new);
    // Not ready yet: both run, the old one is still the service.
    assert_eq!(pid(&dir, "web").as_deref(), Some(old.as_str()));
    assert_eq!(pid(&dir, "web/next").as_deref(), Some(new.as_str()));
    let table = dir.moltd_client(&["status"]).stdout;
    let rows: Vec<Vec<&str>> = (table.lines().skip(1))
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .take_while(|words| !words.is_empty())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[0][..4], ["web", "run", "yes", old.as_str()], "{table}");
    assert_eq!(
        rows[1][..4],
        ["web/next", "run", "no", new.as_str()],
        "{table}"
    );
    assert_eq!(crate::apply::status(&dir)["state"], "starting");
    dir.write("go", "");
    let doc = wait_for_state(&mut running, &dir, "completed");
    if doc["current"] != "v3.0.0" {
        running.fail(&format!("bad status: {doc}"));
    }
    running.wait_for("the new one to be the service", || {
        pid(&dir, "web").as_deref() == Some(new.as_str())
    });
    assert_eq!(pid(&dir, "web/next"), None);
    let table = dir.moltd_client(&["status"]).stdout;
    assert!(!table.contains("web/next"), "{table}");
    // v2 started once, v3 once: nothing was restarted.
    assert_eq!(
        dir.read("started").lines().count(),
        2,
        "{}",
        dir.read("started")
    );
    expect(&dir.sv(&["-w", "5", "up", "web"]), 0, "ok: run: web: ");
    running.signal(SIGTERM);
    running
        .wait()
        .expect_code(0)
        .expect_stderr_contains("web: its second generation is now the service");
}

/// A new release that never becomes ready is stopped again, and the old
/// one, never stopped, keeps its pid throughout; the new one is marked bad.
#[test]
fn overlap_failing_release_leaves_the_old_pid_alone() {
    let (dir, feed) = notifying_setup("overlap_failing", Notifies::Never);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_STRATEGY", "overlap")
        .spawn();
    running.wait_for("v3 to start beside v2", || started(&dir, "3.0.0").is_some());
    let old = started(&dir, "2.0.0").unwrap();
    let mut seen = Vec::new();
    let doc = {
        running.wait_for("status state rolled_back", || {
            seen.push(pid(&dir, "web"));
            crate::apply::status(&dir)["state"] == "rolled_back"
        });
        crate::apply::status(&dir)
    };
    assert!(
        seen.iter().all(|p| p.as_deref() == Some(old.as_str())),
        "the old pid {old} changed: {seen:?}"
    );
    let reason = doc["last_error"].as_str().unwrap_or("");
    if !reason.contains("web/next did not become ready in time")
        || !reason.contains("rolled back to v2.0.0, which never stopped")
    {
        running.fail(&format!("bad reason: {doc}"));
    }
    if doc["bad_releases"] != serde_json::json!(["v3.0.0"]) || doc["current"] != "v2.0.0" {
        running.fail(&format!("bad status: {doc}"));
    }
    running.wait_for("v3 to be stopped", || {
        dir.sv(&["status", "web/next"])
            .stdout
            .starts_with("down: web/next:")
    });
    assert_eq!(pid(&dir, "web").as_deref(), Some(old.as_str()));
    assert_eq!(versions(&dir), ["2.0.0", "3.0.0"]);
    running.signal(SIGTERM);
    running.wait().expect_code(0);
}

/// The agent dies while the new release's services run beside the old
/// ones: PID 1 stops the second generation it started, and the old one,
/// never stopped, keeps its pid.
#[test]
fn overlap_cut_short_by_the_agents_death_stops_the_second_generation() {
    let (dir, feed) = notifying_setup("overlap_agent_killed", Notifies::OnGo);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_STRATEGY", "overlap")
        .spawn();
    running.wait_for("v3 to start beside v2", || started(&dir, "3.0.0").is_some());
    let old = started(&dir, "2.0.0").unwrap();
    let agent = running.agent_pid(None);
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { nix::libc::kill(agent, nix::libc::SIGKILL) }, 0);
    running.wait_for_file(
        "moltd.stderr",
        "stopping web/next: the update agent that started it died",
    );
    running.wait_for("web/next to stop", || {
        crate::util::process_state(agent).is_none()
            && dir.read("moltd.stderr").contains("web/next: stopped")
    });
    assert_eq!(pid(&dir, "web").as_deref(), Some(old.as_str()));
    assert_eq!(versions(&dir)[..2], ["2.0.0", "3.0.0"]);
    assert!(versions(&dir).iter().filter(|v| *v == "2.0.0").count() == 1);
    running.signal(SIGTERM);
    running.wait().expect_code(0);
}

/// Regression: the health command (or URL) ran while both generations
/// served on the same held sockets, so the old one could answer for the
/// new one and a broken release passed. The probe now runs only once the
/// old generation is gone; while both run, the new one is judged by its
/// own readiness and staying up.
#[test]
fn overlap_health_probe_runs_only_with_the_new_generation_alone() {
    let (dir, feed) = notifying_setup("overlap_probe_alone", Notifies::OnGo);
    dir.write("go", "");
    let probe = format!(
        "old=$(sed -n 1p {dir}/started | cut -d' ' -f1); \
         if kill -0 \"$old\" 2>/dev/null; then echo both; else echo alone; fi >> {dir}/probes",
        dir = dir.path().display()
    );
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_STRATEGY", "overlap")
        .env("MOLTD_HEALTH_CMD", &probe)
        .spawn();
    let doc = wait_for_state(&mut running, &dir, "completed");
    if doc["current"] != "v3.0.0" {
        running.fail(&format!("bad status: {doc}"));
    }
    let probes = dir.read("probes");
    assert!(
        !probes.is_empty() && probes.lines().all(|line| line == "alone"),
        "probes: {probes:?}"
    );
    running.signal(SIGTERM);
    running.wait().expect_code(0);
}
