//! moltd finding, verifying and offering new versions of itself
//! (`MOLTD_SELF_REPO`): a real feed on loopback lists moltd's own releases
//! beside the app's (`/repos/acme/moltd/releases`), with real signed
//! assets; moltd runs as PID 1 of a fresh namespace with one service. A
//! release that fails its checks, or that PID 1 refuses, is refused with
//! the reason in the status, nothing changes, and it is not downloaded
//! again at the next checks; `POST /self-update` answers bad input with a
//! 4xx.

pub(crate) use crate::agent::service_pid;
use crate::apply::{App, release, status};
use crate::feed::*;
use crate::observe::http;
use crate::util::{Mode, Moltd, Running, TestDir, moltd_bin};
use std::fs;
use std::sync::{Arc, Mutex};

/// moltd's own releases, served by the hook of an app feed.
type Own = Arc<Mutex<Vec<FakeRelease>>>;

/// A feed of the app's v1.0.0 that also lists `own` as moltd's releases
/// (`acme/moltd`) and serves their assets.
pub(crate) fn feed_with_moltd(own: Vec<FakeRelease>) -> (Feed, Own) {
    let own = Arc::new(Mutex::new(own));
    let listed = own.clone();
    let hook: Hook = Box::new(move |request, base| {
        let own = listed.lock().unwrap();
        if request.path.starts_with("/repos/acme/moltd/releases") {
            return Some(releases_page(request, base, &own, 100));
        }
        let asset = own.iter().find_map(|r| {
            (r.assets.iter()).find(|a| request.path == format!("/dl/{}/{}", r.tag, a.name))
        })?;
        Some(serve_file(request, &asset.data, true))
    });
    (
        Feed::with_hook(vec![release("1.0.0", App::Good)], hook),
        own,
    )
}

/// The asset name the default `MOLTD_SELF_ASSET` takes on this machine.
pub(crate) fn own_asset(version: &str, suffix: &str) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("moltd-{version}-linux-{arch}{suffix}")
}

/// A minisign signature of `data` by `keys`.
pub(crate) fn sign(keys: &minisign::KeyPair, data: &[u8]) -> Vec<u8> {
    minisign::sign(
        Some(&keys.pk),
        &keys.sk,
        std::io::Cursor::new(data),
        None,
        None,
    )
    .unwrap()
    .into_string()
    .into_bytes()
}

/// moltd as PID 1 with an idle service, updating the app from `feed` and
/// itself from `acme/moltd`, checking every second.
fn self_updating<'a>(dir: &'a TestDir, feed: &Feed, key: &minisign::KeyPair) -> Moltd<'a> {
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("MOLTD_LOG", "info")
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_INTERVAL", "1s")
        .env("MOLTD_JITTER", "0s")
        .env("MOLTD_HEALTH_GRACE", "0s")
        .env("MOLTD_SELF_REPO", "acme/moltd")
        .env("MOLTD_SELF_MINISIGN_KEY", key.pk.to_base64())
}

/// Requests for moltd's own release list so far.
pub(crate) fn own_checks(feed: &Feed) -> usize {
    feed.server.requests_to("/repos/acme/moltd/releases").len()
}

/// Waits for two more checks of moltd's own releases than have been.
fn two_more_checks(running: &mut Running, feed: &Feed) {
    let seen = own_checks(feed);
    running.wait_for("two more checks of moltd's releases", || {
        own_checks(feed) >= seen + 2
    });
}

/// PID 1's binary, as the test sees it.
pub(crate) fn pid1_exe(running: &mut Running) -> std::path::PathBuf {
    let pid = running.moltd_pid();
    fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// Each way a release of moltd can fail its checks before PID 1 hears of
/// it: refused with the reason in the status, never offered to PID 1,
/// downloaded once and not again at the next checks.
#[test]
fn a_moltd_release_that_fails_its_checks_is_refused_once_and_pid1_stays() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let binary = b"\x7fELF not really a moltd".to_vec();
    let name = own_asset("9.0.0", "");
    let good = FakeAsset::new(&name, binary.clone());
    let signature = |keys| FakeAsset::new(&format!("{name}.minisig"), sign(keys, &binary));
    let mut wrong_digest = good.clone();
    wrong_digest.digest = Some(format!("sha256:{}", sha256_hex(b"something else")));
    let table: [(&str, Vec<FakeAsset>, &str); 5] = [
        (
            "bad digest",
            vec![wrong_digest, signature(&keys)],
            "sha256 of moltd-9.0.0-linux-",
        ),
        (
            "no digest",
            vec![good.clone().without_digest(), signature(&keys)],
            "never runs a binary of itself unchecked",
        ),
        (
            "another key's signature",
            vec![good.clone(), signature(&other)],
            "does not verify against moltd_self_minisign_key",
        ),
        (
            "no signature",
            vec![good.clone()],
            ".minisig, and moltd_self_minisign_key requires one",
        ),
        (
            "no asset for this machine",
            vec![FakeAsset::new("moltd-9.0.0-darwin-arm64", binary.clone())],
            "no asset matches",
        ),
    ];
    for (case, assets, reason) in table {
        let dir = TestDir::new("selfrepo_checks");
        let (feed, _) = feed_with_moltd(vec![FakeRelease::new("v9.0.0", assets)]);
        let mut running = self_updating(&dir, &feed, &keys).spawn();
        let exe = moltd_bin();
        running.wait_for(&format!("{case}: v9.0.0 refused"), || {
            status(&dir)["moltd"]["refused"]["v9.0.0"].is_string()
        });
        let why = status(&dir)["moltd"]["refused"]["v9.0.0"].to_string();
        if !why.to_lowercase().contains(reason) {
            running.fail(&format!("{case}: refused for {why}, expected {reason:?}"));
        }
        let downloads = feed.server.requests_to("/dl/v9.0.0/").len();
        two_more_checks(&mut running, &feed);
        let again = feed.server.requests_to("/dl/v9.0.0/").len();
        if again != downloads {
            running.fail(&format!(
                "{case}: downloaded again ({downloads} then {again})"
            ));
        }
        let now = pid1_exe(&mut running);
        if now != exe || dir.join("app/.moltd/bin").exists() {
            running.fail(&format!("{case}: PID 1 changed from {exe:?} to {now:?}"));
        }
        let staged: Vec<_> = fs::read_dir(dir.join("app/.moltd/self"))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !staged.is_empty() {
            running.fail(&format!("{case}: left behind {staged:?}"));
        }
        let shown = dir.moltd_client(&["status"]);
        if !shown.stdout.contains("moltd v9.0.0 refused") {
            running.fail(&format!("{case}: moltd status says {}", shown.stdout));
        }
    }
}

/// Only older versions than the one running: nothing is downloaded, and
/// the status says so.
#[test]
fn an_older_moltd_release_is_not_taken() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let dir = TestDir::new("selfrepo_older");
    let binary = fs::read(moltd_bin()).unwrap();
    let name = own_asset("0.0.1", "");
    let assets = vec![
        FakeAsset::new(&name, binary.clone()),
        FakeAsset::new(&format!("{name}.minisig"), sign(&keys, &binary)),
    ];
    let (feed, _) = feed_with_moltd(vec![FakeRelease::new("v0.0.1", assets)]);
    let mut running = self_updating(&dir, &feed, &keys).spawn();
    running.wait_for("the check of moltd's releases", || {
        status(&dir)["moltd"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no newer moltd"))
    });
    two_more_checks(&mut running, &feed);
    if !feed.server.requests_to("/dl/v0.0.1/").is_empty() || dir.join("app/.moltd/self").exists() {
        running.fail("an older moltd was downloaded");
    }
    let check = dir.moltd_client(&["update", "--check"]);
    if !check.stdout.contains("no newer moltd") || !check.stdout.contains("acme/moltd") {
        running.fail(&format!("moltd update --check says {}", check.stdout));
    }
}

/// A release that passes its checks but that PID 1 refuses (here a shell
/// script in a .tar.gz, which is no ELF executable): the refusal is kept
/// with PID 1's reason, the staged file removed, and it is not downloaded
/// or offered again; `moltd unmark` lets the next check try it again.
#[test]
fn a_moltd_release_pid1_refuses_is_not_offered_again_until_unmarked() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let dir = TestDir::new("selfrepo_pid1_refuses");
    let archive = targz(&[
        Entry::Dir("moltd-9.0.0"),
        Entry::File("moltd-9.0.0/moltd", b"#!/bin/sh\nexit 0\n", 0o755),
    ]);
    let name = own_asset("9.0.0", ".tar.gz");
    let assets = vec![
        FakeAsset::new(&name, archive.clone()),
        FakeAsset::new(&format!("{name}.minisig"), sign(&keys, &archive)),
    ];
    let (feed, _) = feed_with_moltd(vec![FakeRelease::new("v9.0.0", assets)]);
    let mut running = self_updating(&dir, &feed, &keys).spawn();
    let exe = moltd_bin();
    running.wait_for("PID 1 to refuse v9.0.0", || {
        status(&dir)["moltd"]["refused"]["v9.0.0"].is_string()
    });
    let why = status(&dir)["moltd"]["refused"]["v9.0.0"].to_string();
    if !why.contains("self-update refused: ") || !why.contains("not an ELF") {
        running.fail(&format!("refused for {why}"));
    }
    let downloads = feed.server.requests_to("/dl/v9.0.0/").len();
    two_more_checks(&mut running, &feed);
    if feed.server.requests_to("/dl/v9.0.0/").len() != downloads || downloads != 2 {
        running.fail(&format!("downloaded {downloads} times then again"));
    }
    if pid1_exe(&mut running) != exe || dir.join("app/.moltd/self/moltd-v9.0.0").exists() {
        running.fail("PID 1 changed or the refused binary stayed");
    }
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap_or_default();
    if !state["moltd"]["refused"]["v9.0.0"]["reason"].is_string() {
        running.fail(&format!("the refusal is not in state.json: {state}"));
    }
    // Checks every second keep the agent busy now and then: asked again
    // until it takes it.
    running.wait_for("moltd unmark v9.0.0 to be taken", || {
        dir.moltd_client(&["unmark", "v9.0.0"]).code == Some(0)
    });
    running.wait_for("v9.0.0 downloaded again after unmark", || {
        feed.server.requests_to("/dl/v9.0.0/").len() > downloads
    });
}

/// `POST /self-update`: no token, bad paths and parameters get a 4xx that
/// says why; a file PID 1 refuses is refused with its reason; without
/// `MOLTD_SELF_REPO` a check says it is not set. PID 1 stays.
#[test]
fn post_self_update_answers_bad_input_with_a_4xx() {
    let dir = TestDir::new("selfrepo_http");
    let listen = crate::apply::free_port();
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    dir.write("not-moltd", "just text\n");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = with_http(&dir, &feed, listen);
    let exe = moltd_bin();
    // The first boot and the check after it are over: the agent is free.
    running.wait_for("the agent to be idle", || {
        status(&dir)["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no newer release"))
    });
    let not_moltd = dir.join("not-moltd").display().to_string();
    let table = [
        ("/self-update", None, 401, "unauthorized"),
        ("/self-update?file=moltd", Some("secret"), 400, "absolute"),
        (
            "/self-update?force",
            Some("secret"),
            400,
            "force goes with file",
        ),
        ("/self-update?file=/a&file=/b", Some("secret"), 400, "twice"),
        (
            "/self-update?version=2",
            Some("secret"),
            400,
            "unknown parameter",
        ),
        (
            "/self-update",
            Some("secret"),
            409,
            "MOLTD_SELF_REPO is not set",
        ),
        (
            &format!("/self-update?file={not_moltd}"),
            Some("secret"),
            409,
            "refused",
        ),
    ];
    for (path, token, code, text) in table {
        let got = http(listen, "POST", path, token);
        match &got {
            Some((got_code, body)) if *got_code == code && body.contains(text) => {}
            _ => running.fail(&format!(
                "POST {path}: got {got:?}, expected {code} {text:?}"
            )),
        }
    }
    let got = http(listen, "GET", "/self-update", Some("secret"));
    if got.as_ref().map(|g| g.0) != Some(405) {
        running.fail(&format!("GET /self-update: got {got:?}"));
    }
    if pid1_exe(&mut running) != exe {
        running.fail("PID 1 changed");
    }
}

/// This build of moltd without its debugging sections (a sixth of the
/// size, the same program), for a download that takes seconds, not tens.
fn stripped(dir: &TestDir) -> Vec<u8> {
    let out = dir.join("moltd-stripped");
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(moltd_bin())
        .status();
    match status {
        Ok(status) if status.success() => fs::read(&out).unwrap(),
        _ => fs::read(moltd_bin()).unwrap(),
    }
}

/// The whole path: a newer moltd (a copy of this build said to be 9.0.0
/// by its `.version` file, where the agent stages it) is found in the
/// feed, downloaded, verified by digest and signature, offered to PID 1,
/// which self-tests, keeps and execs it: PID 1 then runs the kept binary,
/// the service runs on the same pid, the agent runs the new version and
/// finds nothing newer.
#[test]
fn a_newer_moltd_from_the_self_repo_replaces_pid1_and_keeps_the_services() {
    let dir = TestDir::new("selfrepo_replaces");
    a_newer_moltd_replaces_pid1(&dir, self_updating);
}

/// The whole path above for moltd as `moltd` configures it (with an idle
/// service) in `dir`; returns the feed, to see what was asked of it.
pub(crate) fn a_newer_moltd_replaces_pid1<'a>(
    dir: &'a TestDir,
    moltd: fn(&'a TestDir, &Feed, &minisign::KeyPair) -> Moltd<'a>,
) -> Feed {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let binary = stripped(dir);
    let name = own_asset("9.0.0", "");
    let assets = vec![
        FakeAsset::new(&name, binary.clone()),
        FakeAsset::new(&format!("{name}.minisig"), sign(&keys, &binary)),
    ];
    let (feed, _) = feed_with_moltd(vec![FakeRelease::new("v9.0.0", assets)]);
    // Where the agent stages v9.0.0; PID 1 keeps the file beside its copy.
    dir.write("app/.moltd/self/moltd-v9.0.0.version", "9.0.0\n");
    let mut running = moltd(dir, &feed, &keys).spawn();
    let before = service_pid(&mut running, "idle");
    let kept = dir.join("app/.moltd/bin/moltd-9.0.0");
    let pid = running.moltd_pid();
    running.wait_for("PID 1 to run the kept moltd 9.0.0", || {
        fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(kept.clone())
    });
    if service_pid(&mut running, "idle") != before {
        running.fail("the service was restarted");
    }
    running.wait_for("the new agent to say 9.0.0 and find nothing newer", || {
        let shown = dir.moltd_client(&["status"]).stdout;
        shown.contains("moltd: 9.0.0") && shown.contains("no newer moltd (running v9.0.0)")
    });
    // PID 1 runs its own copy; the one staged is not kept twice.
    if dir.join("app/.moltd/self/moltd-v9.0.0").exists() {
        running.fail("the staged binary stayed beside the kept one");
    }
    feed
}

/// `POST /self-update?file=PATH` with a newer binary: PID 1 self-tests,
/// keeps and execs it, the service stays on its pid. The agent that
/// answers is replaced at once, so the answer may not arrive; when it
/// does, it says so.
#[test]
fn post_self_update_with_a_newer_file_replaces_pid1() {
    let dir = TestDir::new("selfrepo_http_file");
    let listen = crate::apply::free_port();
    dir.script("services/idle/run", "#!/bin/sh\nexec sleep 1000\n");
    let file = dir.join("moltd new");
    fs::write(&file, stripped(&dir)).unwrap();
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir.write("moltd new.version", "9.1.0\n");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = with_http(&dir, &feed, listen);
    let before = service_pid(&mut running, "idle");
    running.wait_for("the agent to be idle", || {
        status(&dir)["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no newer release"))
    });
    let path = format!("/self-update?file={}", file.display()).replace(' ', "%20");
    match http(listen, "POST", &path, Some("secret")) {
        None => {}
        Some((200, body)) if body.contains("replacing itself with moltd 9.1.0") => {}
        other => running.fail(&format!("POST {path}: {other:?}")),
    }
    let kept = dir.join("app/.moltd/bin/moltd-9.1.0");
    let pid = running.moltd_pid();
    running.wait_for("PID 1 to run the kept moltd 9.1.0", || {
        fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(kept.clone())
    });
    if service_pid(&mut running, "idle") != before {
        running.fail("the service was restarted");
    }
}

/// moltd as PID 1 with an app source on `feed` and its HTTP listener on
/// `listen`, token `secret`, for the `POST /self-update` tests.
fn with_http<'a>(dir: &'a TestDir, feed: &Feed, listen: u16) -> Running<'a> {
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "services"])
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_INTERVAL", "1h")
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_API_TOKEN", "secret")
        .spawn()
}
