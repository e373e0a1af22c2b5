//! What operators of many pods run into: a release marked bad from the
//! configuration (`MOLTD_SKIP`), which a pod with no volume for `/app` needs
//! because it starts with no state, and a second moltd on an app dir another
//! one holds (a Kubernetes Deployment rolling over a shared volume), which
//! must say what to change in the manifest.

use crate::apply::{App, current, moltd, release, served, setup, status, wait_for_state};
use crate::feed::Feed;
use crate::firstboot::downloads;
use crate::util::{Mode, TestDir};

#[test]
fn skip_from_configuration_keeps_a_release_out_at_first_boot_and_after() {
    let (dir, port) = setup("skip_configured");
    let feed = Feed::start(vec![
        release("1.6.0", App::Exits),
        release("1.5.0", App::Good),
    ]);
    // A fresh pod: no state, only the configuration knows v1.6.0 is bad.
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_SKIP", "v1.6.0, v9.9.9")
        .spawn();
    running.wait_for("v1.5.0 to serve", || {
        served(port).as_deref() == Some("1.5.0")
    });
    let doc = wait_for_state(&mut running, &dir, "idle");
    if current(&dir) != "v1.5.0" || downloads(&feed, "v1.6.0") != 0 {
        running.fail("v1.6.0 was downloaded or installed despite MOLTD_SKIP");
    }
    let skipped = serde_json::json!(["v1.6.0", "v9.9.9"]);
    if doc["bad_releases"] != skipped || doc["skipped_releases"] != skipped {
        running.fail(&format!("MOLTD_SKIP is not in the status: {doc}"));
    }
    let shown = dir.moltd_client(&["status"]);
    if !shown
        .stdout
        .contains("bad releases: v1.6.0 (MOLTD_SKIP), v9.9.9 (MOLTD_SKIP)")
    {
        running.fail(&format!("moltd status does not show MOLTD_SKIP: {shown:?}"));
    }
    // A check finds nothing to take; unmark cannot override configuration.
    let reply = dir.moltd_client(&["update"]);
    if !reply.stdout.contains("no newer release") || downloads(&feed, "v1.6.0") != 0 {
        running.fail(&format!("a check took the skipped v1.6.0: {reply:?}"));
    }
    let reply = dir.moltd_client(&["unmark", "v1.6.0"]);
    if reply.code != Some(1) || !reply.stderr.contains("remove it from MOLTD_SKIP") {
        running.fail(&format!("unmark of a MOLTD_SKIP tag: {reply:?}"));
    }
    // Only that tag: the next release is taken as usual.
    feed.publish(release("1.7.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || served(port).as_deref() != Some("1.7.0") {
        running.fail(&format!("v1.7.0 was not installed: {reply:?}"));
    }
    // The mark is configuration, not state: nothing of it is saved.
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap();
    if state["bad"] != serde_json::json!([]) {
        running.fail(&format!("MOLTD_SKIP went into the state file: {state}"));
    }
}

#[test]
fn second_supervisor_on_a_held_app_dir_says_to_use_a_statefulset_or_recreate() {
    let (dir, port) = setup("second_supervisor");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut first = moltd(&dir, &feed, Mode::Pid1).spawn();
    first.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut first, &dir, "idle");
    // The new pod of a rolling update: same volume, its own /run.
    let other = TestDir::new("second_supervisor_pod");
    std::fs::create_dir_all(other.join("services")).unwrap();
    let second = crate::apply::updating(&other, &feed, Mode::Pid1)
        .env("MOLTD_APP_DIR", dir.join("app"))
        .args(["--services", "services"])
        .run();
    second
        .expect_stderr_contains("another moltd manages")
        .expect_stderr_contains("use a StatefulSet, or `strategy: type: Recreate`");
    if second.code == Some(0) {
        first.fail("the second supervisor did not fail");
    }
    if status(&dir)["current"] != "v1.0.0" || served(port).as_deref() != Some("1.0.0") {
        first.fail("the first supervisor was disturbed");
    }
}
