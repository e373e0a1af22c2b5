//! `MOLTD_SELF_REPO` without a release source for the app: an image whose
//! services never change still keeps moltd itself up to date. The agent
//! starts and checks moltd's own releases on the schedule; nothing about
//! the app runs (no first boot, no `current`), the services start at once,
//! and `moltd update` says the app's updates are off.

use crate::apply::{free_port, status};
use crate::feed::*;
use crate::observe::http;
use crate::selfrepo::{
    a_newer_moltd_replaces_pid1, feed_with_moltd, own_asset, own_checks, pid1_exe, service_pid,
    sign,
};
use crate::util::{Mode, Moltd, TestDir, moltd_bin};
use std::fs;

/// moltd as PID 1 with an idle service and `MOLTD_SELF_REPO` as its only
/// release source, checking every second.
fn only_itself<'a>(dir: &'a TestDir, feed: &Feed, key: &minisign::KeyPair) -> Moltd<'a> {
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("MOLTD_LOG", "info")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_INTERVAL", "1s")
        .env("MOLTD_JITTER", "0s")
        .env("MOLTD_SELF_REPO", "acme/moltd")
        .env("MOLTD_SELF_MINISIGN_KEY", key.pk.to_base64())
}

/// Only an older moltd in the feed: the service runs at once, moltd's
/// releases are checked again and again, the app's never, nothing of the
/// app is made; `moltd update` says the app's updates are off (with what
/// is known of moltd's own), `POST /self-update` checks moltd's releases.
#[test]
fn moltd_self_repo_alone_checks_moltd_and_starts_the_services_at_once() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let dir = TestDir::new("selfonly_older");
    let binary = b"\x7fELF an old moltd".to_vec();
    let name = own_asset("0.0.1", "");
    let assets = vec![
        FakeAsset::new(&name, binary.clone()),
        FakeAsset::new(&format!("{name}.minisig"), sign(&keys, &binary)),
    ];
    let (feed, _) = feed_with_moltd(vec![FakeRelease::new("v0.0.1", assets)]);
    let listen = free_port();
    let mut running = only_itself(&dir, &feed, &keys)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_API_TOKEN", "secret")
        .spawn();
    service_pid(&mut running, "idle");
    running.wait_for("two checks of moltd's releases", || own_checks(&feed) >= 2);
    running.wait_for("the status to say nothing newer", || {
        status(&dir)["moltd"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no newer moltd"))
    });
    let app_requests = feed.server.requests_to("/repos/acme/app").len();
    if app_requests != 0 || dir.join("app/current").exists() || dir.join("app/releases").exists() {
        running.fail(&format!(
            "the app was updated: {app_requests} requests for its releases, or current/releases made"
        ));
    }
    let check = dir.moltd_client(&["update", "--check"]);
    let said = &check.stderr;
    if check.code != Some(1)
        || !said.contains("updates of the app are off")
        || !said.contains("moltd: ")
        || !said.contains("updates itself from acme/moltd")
    {
        running.fail(&format!("moltd update --check: {check:?}"));
    }
    let shown = dir.moltd_client(&["status"]).stdout;
    if !shown.contains("updates of the app are off") || shown.contains("first boot") {
        running.fail(&format!("moltd status says {shown}"));
    }
    let update = dir.moltd_client(&["update"]);
    if update.code != Some(1) || !update.stderr.contains("updates of the app are off") {
        running.fail(&format!("moltd update: {update:?}"));
    }
    // The agent may be checking at this moment: asked until it is free.
    let mut answer = None;
    running.wait_for("POST /self-update to check moltd's releases", || {
        answer = http(listen, "POST", "/self-update", Some("secret"));
        answer.as_ref().is_some_and(|(code, _)| *code != 409)
    });
    match &answer {
        Some((200, body)) if body.contains("no newer moltd") => {}
        other => running.fail(&format!("POST /self-update: {other:?}")),
    }
    let stderr = dir.read("moltd.stderr");
    if stderr.contains("does nothing without a release source") {
        running.fail("the start warned that MOLTD_SELF_REPO needs a source for the app");
    }
    if pid1_exe(&mut running) != moltd_bin() {
        running.fail("PID 1 changed");
    }
}

/// A newer moltd (this build, said to be 9.0.0 by its `.version` file) in
/// the feed with no source for the app: found, verified and offered to
/// PID 1, which execs it with the service on the same pid; the new agent
/// finds nothing newer. Nothing of the app was asked for or made.
#[test]
fn moltd_self_repo_alone_replaces_pid1_and_keeps_the_services() {
    let dir = TestDir::new("selfonly_replaces");
    let feed = a_newer_moltd_replaces_pid1(&dir, only_itself);
    if dir.join("app/current").exists() || !feed.server.requests_to("/repos/acme/app").is_empty() {
        panic!("the app was updated");
    }
}

/// An app dir moltd cannot write (a read-only mount): nothing of moltd's
/// own can be staged, so its updates are off with the reason, and the
/// service runs all the same; the agent does not fail again and again.
#[test]
fn moltd_self_repo_alone_with_a_read_only_app_dir_says_updates_are_off() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let dir = TestDir::new("selfonly_read_only");
    fs::create_dir_all(dir.join("app")).unwrap();
    let _read_only = crate::firstboot::ReadOnly::mount(&dir.join("app"));
    let (feed, _) = feed_with_moltd(Vec::new());
    let mut running = only_itself(&dir, &feed, &keys).spawn();
    service_pid(&mut running, "idle");
    let off = format!(
        "updates are off: cannot create {}",
        dir.join("app/.moltd").display()
    );
    running.wait_for("the status to say updates are off", || {
        status(&dir)["suspended"]
            .as_str()
            .is_some_and(|s| s.contains(&off))
    });
    let update = dir.moltd_client(&["update"]);
    if update.code != Some(1) || !update.stderr.contains(&off) {
        running.fail(&format!("moltd update: {update:?}"));
    }
    if dir
        .read("moltd.stderr")
        .contains("the update agent stopped")
    {
        running.fail("the update agent failed");
    }
}
