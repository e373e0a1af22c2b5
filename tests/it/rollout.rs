//! Fleet rollouts from the feed (issue 18), through moltd as PID 1 and the
//! loopback feed: a withdrawn or deleted release is left through the gated
//! switch, a release younger than `MOLTD_MIN_AGE` or outside `MOLTD_WINDOW`
//! is staged and not applied, an urgent one skips both, and the agent wakes
//! when the throttle reaches it. The fleet of 20 is in `tests/it/fleet.rs`.

use crate::apply::{App, current, moltd, release, served, setup, status};
use crate::feed::*;
use crate::util::{Client, Mode, Running, TestDir};
use std::time::{Duration, SystemTime};

/// An RFC 3339 UTC time `offset` seconds from now.
pub(crate) fn utc(offset: i64) -> String {
    let at = match offset {
        o if o >= 0 => SystemTime::now() + Duration::from_secs(o as u64),
        o => SystemTime::now() - Duration::from_secs(o.unsigned_abs()),
    };
    moltd::update::status::rfc3339(at)
}

/// Waits until the agent's first scheduled check is over, so that a
/// request is not answered "already updating".
pub(crate) fn settled(running: &mut Running) {
    running.wait_for_file("moltd.stderr", "next check in");
}

/// `version` with `line` in its notes.
fn noted(version: &str, line: &str) -> FakeRelease {
    let mut r = release(version, App::Good);
    r.notes = Some(format!("What changed.\n{line}\n"));
    r
}

fn expect_reply(reply: &Client, running: &mut Running, text: &str) {
    if !reply.stdout.contains(text) && !reply.stderr.contains(text) {
        running.fail(&format!(
            "expected {text:?} in the reply: {} {}",
            reply.stdout, reply.stderr
        ));
    }
}

/// moltd with `env`, serving v1.0.0 on `port`, its first check over.
fn on_v1<'a>(dir: &'a TestDir, port: u16, feed: &Feed, env: &[(&str, &str)]) -> Running<'a> {
    let mut moltd = moltd(dir, feed, Mode::Pid1);
    for (key, value) in env {
        moltd = moltd.env(key, value);
    }
    let mut running = moltd.spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    settled(&mut running);
    running
}

/// moltd on v1.0.0, updated to v2.0.0 by hand, serving on `port`.
fn on_v2(dir: &TestDir, port: u16, feed: &Feed, running: &mut Running) {
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    settled(running);
    feed.publish(release("2.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, running, "updated to v2.0.0");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
}

/// `moltd update` leaves v2.0.0 for `why` and v1.0.0 serves again.
fn goes_back_to_v1(dir: &TestDir, port: u16, running: &mut Running, why: &str) {
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, running, &format!("{why}: went back to v1.0.0"));
    running.wait_for("v1 to serve again", || {
        served(port).as_deref() == Some("1.0.0")
    });
}

#[test]
fn a_withdrawn_release_is_left_for_the_previous_one() {
    let (dir, port) = setup("rollout_withdrawn");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    on_v2(&dir, port, &feed, &mut running);
    feed.republish(noted("2.0.0", "moltd-rollout: withdrawn"));
    let reply = dir.moltd_client(&["update", "--check"]);
    expect_reply(&reply, &mut running, "would go back to v1.0.0");
    if current(&dir) != "v2.0.0" {
        running.fail("a check moved the release");
    }
    goes_back_to_v1(
        &dir,
        port,
        &mut running,
        "release v2.0.0 was withdrawn by the publisher",
    );
    if current(&dir) != "v1.0.0" {
        running.fail("current is not v1.0.0");
    }
    // It stays there: v2.0.0 is never taken again while withdrawn.
    let reply = dir.moltd_client(&["update"]);
    expect_reply(
        &reply,
        &mut running,
        "v2.0.0: never taken (withdrawn by the publisher)",
    );
    let doc = status(&dir);
    if doc["rollout"]["releases"][0]["decision"] != "never" {
        running.fail(&format!("status: {doc}"));
    }
}

#[test]
fn a_deleted_release_is_left_only_when_the_list_still_holds_older_ones() {
    let (dir, port) = setup("rollout_deleted");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    on_v2(&dir, port, &feed, &mut running);
    // A feed that lists nothing withdraws nothing: it may be broken.
    feed.remove("v2.0.0");
    feed.remove("v1.0.0");
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, "no newer release");
    if current(&dir) != "v2.0.0" {
        running.fail("an empty list moved the release");
    }
    // Still listing v1.0.0 but no longer v2.0.0: deleted.
    feed.publish(release("1.0.0", App::Good));
    goes_back_to_v1(
        &dir,
        port,
        &mut running,
        "release v2.0.0 is no longer in the release list (deleted, or a draft again)",
    );
}

/// A token sees drafts in the list: the release is there, a draft again.
#[test]
fn a_release_turned_back_into_a_draft_is_left() {
    let (dir, port) = setup("rollout_draft");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    on_v2(&dir, port, &feed, &mut running);
    let mut draft = release("2.0.0", App::Good);
    draft.draft = true;
    feed.republish(draft);
    goes_back_to_v1(
        &dir,
        port,
        &mut running,
        "release v2.0.0 was turned back into a draft",
    );
}

#[test]
fn a_release_younger_than_the_minimum_age_is_staged_not_applied() {
    let (dir, port) = setup("rollout_min_age");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = on_v1(&dir, port, &feed, &[("MOLTD_MIN_AGE", "1h")]);
    let mut young = release("2.0.0", App::Good);
    young.published_at = Some(utc(-60));
    feed.publish(young.clone());
    let reply = dir.moltd_client(&["update"]);
    expect_reply(
        &reply,
        &mut running,
        "release v2.0.0 staged, not applied yet; eligible at ",
    );
    expect_reply(&reply, &mut running, "younger than MOLTD_MIN_AGE");
    if current(&dir) != "v1.0.0" || !dir.join("app/releases/v2.0.0").is_dir() {
        running.fail("v2.0.0 should be staged, v1.0.0 current");
    }
    let doc = status(&dir);
    let judged = &doc["rollout"]["releases"][0];
    if judged["decision"] != "at" || judged["waiting_for"] != "min_age" {
        running.fail(&format!("status: {doc}"));
    }
    // Urgent: no minimum age.
    young.notes = Some("Security fix.\nmoltd-rollout: urgent\n".into());
    feed.republish(young);
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, "updated to v2.0.0");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
}

/// A window that opens in two hours, for 30 minutes, every day.
fn window_later() -> String {
    let time = utc(2 * 3600);
    format!("* {} 30m", &time[11..16])
}

#[test]
fn outside_the_window_a_release_is_staged_and_the_status_says_until_when() {
    let (dir, port) = setup("rollout_window");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let window = window_later();
    let mut running = on_v1(&dir, port, &feed, &[("MOLTD_WINDOW", &window)]);
    feed.publish(release("2.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, &format!("window {window}"));
    let doc = status(&dir);
    let judged = &doc["rollout"]["releases"][0];
    let at = judged["at"].as_str().unwrap_or_default();
    if judged["waiting_for"] != "window" || !at.contains(&window[2..7]) {
        running.fail(&format!("status: {doc}"));
    }
    if current(&dir) != "v1.0.0" || !dir.join("app/releases/v2.0.0").is_dir() {
        running.fail("v2.0.0 should be staged, v1.0.0 current");
    }
    let summary = dir.moltd_client(&["status"]);
    expect_reply(&summary, &mut running, "rollout: wariness ");
    expect_reply(&summary, &mut running, &format!("v2.0.0: eligible at {at}"));
}

#[test]
fn a_bad_window_is_a_clear_error_at_start() {
    let (dir, _port) = setup("rollout_bad_window");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let run = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_WINDOW", "Caturday 22:30 1h")
        .run();
    run.expect_stderr_contains(
        "bad MOLTD_WINDOW \"Caturday 22:30 1h\": \"Caturday\" is not a day such as Mon",
    );
}

#[test]
fn the_agent_wakes_when_the_throttle_reaches_the_node() {
    let (dir, port) = setup("rollout_wake");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    // Interval an hour: only the computed wake-up can apply v2 in time.
    let mut running = on_v1(&dir, port, &feed, &[("MOLTD_ROLLOUT_WARINESS", "0.5")]);
    // From 0% now to 100% in 8 s: this node's turn comes after 4 s.
    feed.publish(noted(
        "2.0.0",
        &format!("moltd-rollout: start={} percent=0 duration=8s", utc(0)),
    ));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(
        &reply,
        &mut running,
        "no newer release this node takes now (current: v1.0.0); v2.0.0: eligible at ",
    );
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    running.wait_for_file("moltd.stderr", "when a release becomes eligible");
}

#[test]
fn a_rollout_json_asset_holds_the_schedule() {
    let (dir, port) = setup("rollout_asset");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = on_v1(&dir, port, &feed, &[("MOLTD_ROLLOUT_WARINESS", "0.5")]);
    // Starts in an hour at 0%: this node waits; then the asset says
    // withdrawn, and the reason changes.
    let phased = |json: String| {
        let mut r = release("2.0.0", App::Good);
        r.assets
            .push(FakeAsset::new("rollout.json", json.into_bytes()));
        r
    };
    let schedule = format!(r#"{{"start":"{}","percent":0,"duration":"1h"}}"#, utc(3600));
    feed.publish(phased(schedule));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, "v2.0.0: eligible at ");
    expect_reply(
        &reply,
        &mut running,
        "throttle 0.0% now, this node's wariness 0.5000",
    );
    feed.republish(phased(r#"{"withdrawn":true}"#.into()));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(
        &reply,
        &mut running,
        "v2.0.0: never taken (withdrawn by the publisher)",
    );
    if current(&dir) != "v1.0.0" || feed.server.requests_to("/dl/v2.0.0/rollout.json").len() != 2 {
        running.fail("v1.0.0 should run, rollout.json read once a check");
    }
}

/// The wake-up time of a check is forgotten when the next check fails:
/// a feed that is down gets the backoff, not a check every second.
#[test]
fn a_feed_down_at_the_wake_up_gets_the_backoff() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (dir, port) = setup("rollout_wake_down");
    let down = Arc::new(AtomicBool::new(false));
    let down_in = down.clone();
    let feed = Feed::with_hook(
        vec![release("1.0.0", App::Good)],
        Box::new(move |request, _| {
            let list = request.path.starts_with("/repos/");
            (list && down_in.load(Ordering::SeqCst)).then(|| Response::new(503, "down"))
        }),
    );
    let mut running = on_v1(&dir, port, &feed, &[("MOLTD_ROLLOUT_WARINESS", "0.5")]);
    feed.publish(noted(
        "2.0.0",
        &format!("moltd-rollout: start={} percent=0 duration=4s", utc(0)),
    ));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, "v2.0.0: eligible at ");
    let before = feed.server.requests_to("/repos/").len();
    down.store(true, Ordering::SeqCst);
    let failed = || feed.server.requests_to("/repos/").len() - before;
    running.wait_for("the check at the wake-up", || failed() >= 1);
    // The backoff's first wait is 30 s: nothing more for a while.
    std::thread::sleep(Duration::from_secs(6));
    if failed() != 1 {
        running.fail(&format!("{} checks of a feed that is down", failed()));
    }
}

#[test]
fn malformed_rollout_metadata_makes_only_that_release_ineligible() {
    let (dir, port) = setup("rollout_malformed");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    settled(&mut running);
    feed.publish(release("2.0.0", App::Good));
    feed.publish(noted("3.0.0", "moltd-rollout: pecent=5"));
    let reply = dir.moltd_client(&["update"]);
    expect_reply(&reply, &mut running, "updated to v2.0.0");
    let doc = status(&dir);
    let why = doc["rollout"]["releases"][0]["why"]
        .as_str()
        .unwrap_or_default();
    if !why.contains("malformed rollout metadata: \"pecent=5\" is not one of") {
        running.fail(&format!("status: {doc}"));
    }
}
