//! `MOLTD_PREFLIGHT`: a command run in the staged release's folder before
//! anything stops; failing it marks the release bad and the running one is
//! never stopped.

use crate::apply::{App, current, moltd, release, served, setup, ship, wait_for_state};
use crate::feed::Feed;
use crate::util::Mode;

/// Records where it ran and its arguments, then passes only for a release
/// whose `www/version` (a path relative to the release) is not 3.0.0.
fn preflight(dir: &crate::util::TestDir) -> String {
    let d = dir.path().display();
    format!(
        "pwd -P > {d}/preflight.cwd; echo \"$1 -> $2\" >> {d}/preflight.args; \
         echo checking >&2; test \"$(cat www/version)\" != 3.0.0"
    )
}

#[test]
fn a_release_failing_preflight_is_marked_bad_and_the_old_one_never_stops() {
    let (dir, port) = setup("preflight_fails");
    let feed = Feed::start(vec![
        release("3.0.0", App::Good),
        release("2.0.0", App::Good),
    ]);
    ship(&dir, "2.0.0");
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_PREFLIGHT", preflight(&dir))
        .spawn();
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let doc = wait_for_state(&mut running, &dir, "failed");
    let error = doc["last_error"].as_str().unwrap_or("");
    if !error.contains("release v3.0.0 failed MOLTD_PREFLIGHT (exit code 1); nothing was stopped")
        || !doc["bad_releases"]
            .as_array()
            .is_some_and(|bad| bad.iter().any(|t| t == "v3.0.0"))
    {
        running.fail(&format!("bad status: {doc}"));
    }
    let staged = std::fs::canonicalize(dir.join("app/releases/v3.0.0")).unwrap();
    assert_eq!(dir.read("preflight.cwd").trim(), staged.to_str().unwrap());
    assert_eq!(dir.read("preflight.args"), "v2.0.0 -> v3.0.0\n");
    if current(&dir) != "v2.0.0" || served(port).as_deref() != Some("2.0.0") {
        running.fail("v2 was touched");
    }
    // One start only: the same pid served throughout.
    if dir.read("started").lines().count() != 1 {
        running.fail("web was restarted");
    }
    // A check later does not try it again.
    let again = dir.moltd_client(&["update"]);
    if !again.stdout.contains("no newer release") {
        running.fail(&format!("v3 was tried again: {again:?}"));
    }
}

#[test]
fn a_release_passing_preflight_is_installed() {
    let (dir, port) = setup("preflight_passes");
    let feed = Feed::start(vec![
        release("2.0.0", App::Good),
        release("1.0.0", App::Good),
    ]);
    ship(&dir, "1.0.0");
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_PREFLIGHT", preflight(&dir))
        .spawn();
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let staged = std::fs::canonicalize(dir.join("app/releases/v2.0.0")).unwrap();
    assert_eq!(dir.read("preflight.cwd").trim(), staged.to_str().unwrap());
    assert_eq!(dir.read("preflight.args"), "v1.0.0 -> v2.0.0\n");
}
