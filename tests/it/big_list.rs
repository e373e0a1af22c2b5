//! A huge release list costs PID 1 little: 10 pages of 10,000 releases on
//! the loopback feed are read in bounded time and memory, the state file
//! keeps only what the policy can choose, a page past the byte limit is a
//! clear error that changes nothing, and state files from before all this
//! still load.

use crate::feed::*;
use crate::util::{Mode, Moltd, TestDir};
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const PAGES: usize = 10;
const PER_PAGE: usize = 10_000;

/// The tag of the `i`th release of the list, newest first.
fn tag(i: usize) -> String {
    format!("v1.{}.0", PAGES * PER_PAGE - i)
}

/// Page `page` (from 1) of the big list, in GitHub's shape, with `notes`
/// as every release's body; written directly, as serde_json's `Value`s
/// would take seconds for a hundred thousand releases in a debug build.
fn big_page(base: &str, page: usize, notes: &str) -> String {
    let mut body = String::with_capacity(PER_PAGE * (400 + notes.len()));
    body.push('[');
    for i in (page - 1) * PER_PAGE..page * PER_PAGE {
        let (tag, comma) = (tag(i), if body.len() > 1 { "," } else { "" });
        let name = format!("app-{tag}-linux-amd64.tar.gz");
        body += &format!(
            r#"{comma}{{"tag_name":"{tag}","draft":false,"prerelease":false,"body":"{notes}","html_url":"{base}/releases/{tag}","assets":[{{"name":"{name}","size":1000,"browser_download_url":"{base}/dl/{tag}/{name}","url":"{base}/assets/{tag}/{name}","digest":"sha256:{i:064x}","download_count":0}}]}}"#
        );
    }
    body.push(']');
    body
}

/// A feed whose release list is [`PAGES`] pages of [`PER_PAGE`] releases,
/// whatever page size is asked for, with `notes` in every release, while
/// `big` says so; else it lists `releases`.
fn big_feed(notes: String, big: Arc<AtomicBool>, releases: Vec<FakeRelease>) -> Feed {
    let hook: Hook = Box::new(move |request, base| {
        let list = request.path.starts_with("/repos/acme/app/releases");
        if !list || !big.load(Ordering::SeqCst) {
            return None;
        }
        let page: usize = query_param(&request.path, "page").map_or(1, |p| p.parse().unwrap());
        let response = Response::new(200, big_page(base, page, &notes))
            .header("ETag", format!("\"page-{page}\""));
        Some(if page < PAGES {
            let next = format!(
                "{base}/repos/acme/app/releases?per_page=100&page={}",
                page + 1
            );
            response.header("Link", format!("<{next}>; rel=\"next\""))
        } else {
            response
        })
    });
    Feed::with_hook(releases, hook)
}

/// `tag` installed as the current release, as an image ships it.
fn install(dir: &TestDir, tag: &str) {
    fs::create_dir_all(dir.join(&format!("app/releases/{tag}"))).unwrap();
    std::os::unix::fs::symlink(format!("releases/{tag}"), dir.join("app/current")).unwrap();
}

/// `moltd --services` as PID 1 with one service, checking `feed`.
fn supervisor<'a>(dir: &'a TestDir, feed: &Feed) -> Moltd<'a> {
    dir.script("sv/app/run", "#!/bin/sh\nexec sleep 1000\n");
    Moltd::new(dir, Mode::Pid1)
        .args(["--services"])
        .args([dir.join("sv")])
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_CONTROL", dir.join("control.sock"))
        .env("MOLTD_MODE", "check")
        .env("MOLTD_INTERVAL", "1h")
}

fn json(dir: &TestDir, name: &str) -> serde_json::Value {
    serde_json::from_str(&dir.read(name)).unwrap_or_default()
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
    let kib = line.trim_start_matches(':').trim().trim_end_matches("kB");
    kib.trim().parse().unwrap()
}

/// The whole list once held 46 s of PID 1's CPU, 217 MB of its memory and
/// a 74 MB state file. Now at most 1,000 releases are read: the first page
/// answers, in bounded time, and the state file holds only what the policy
/// can choose.
#[test]
fn a_list_of_ten_pages_of_ten_thousand_releases_costs_little() {
    let feed = big_feed("notes".into(), Arc::new(AtomicBool::new(true)), vec![]);
    // A prefix that matches nothing (a typo): the list is searched as far
    // as moltd reads it. Every release eligible, the newest installed: the
    // first page answers, and nothing in it is newer.
    for (name, prefix) in [("big_list_typo", "wbe-"), ("big_list_newest", "")] {
        let dir = TestDir::new(name);
        install(&dir, &tag(0));
        let before = feed.server.requests_to("/repos/").len();
        let mut moltd = supervisor(&dir, &feed)
            .env("MOLTD_TAG_PREFIX", prefix)
            .spawn();
        moltd.wait_for("the first check to finish", || {
            let status = json(&dir, "status.json");
            status["counters"]["last_successful_check"].is_u64() && status["state"] == "idle"
        });
        let pid = moltd.moltd_pid();
        let state = fs::read(dir.join("app/.moltd/state.json")).unwrap();
        if state.len() >= 1 << 20 {
            moltd.fail(&format!("state.json holds {} bytes", state.len()));
        }
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        assert_eq!(state["listing_read"], 1000, "{name}");
        assert_eq!(state["listing_pages"], 1, "{name}");
        let kept = state["listing"].as_array().map(Vec::len);
        // The newest release is installed: it alone is kept, so that the
        // next check knows an eligible release is listed.
        assert_eq!(kept, Some(usize::from(prefix.is_empty())), "{name}");
        let status = json(&dir, "status.json");
        assert_eq!(status["available"], serde_json::Value::Null, "{name}");
        assert_eq!(status["last_error"], serde_json::Value::Null, "{name}");
        assert_eq!(
            feed.server.requests_to("/repos/").len() - before,
            1,
            "{name}"
        );
        // Before, PID 1 kept every release it had read (145 MB).
        let peak = status_kib(pid, "VmHWM");
        if peak > 64 * 1024 {
            moltd.fail(&format!("PID 1 peaked at {peak} KiB"));
        }
        moltd.signal(nix::libc::SIGTERM);
        let run = moltd.wait();
        run.expect_stderr_contains("read 1000 of the 10000 releases of");
        if prefix == "wbe-" {
            run.expect_stderr_contains("no eligible release in the newest 1000 releases");
        }
    }
}

/// A release list page past the 8 MiB limit (10,000 releases with 1 KB of
/// notes each) is an error naming the limit, read no further than it; the
/// state file keeps the list of the last good check.
#[test]
fn a_page_past_the_byte_limit_is_a_clear_error_and_keeps_the_state() {
    let dir = TestDir::new("big_page");
    let big = Arc::new(AtomicBool::new(false));
    let releases = vec![FakeRelease::new("v1.0.0", vec![])];
    let feed = big_feed("x".repeat(1000), big.clone(), releases);
    let check = || {
        Moltd::new(&dir, Mode::Pid1)
            .args(["update", "--check"])
            .env("MOLTD_REPO", "acme/app")
            .env("GITHUB_API_URL", feed.url())
            .env("MOLTD_APP_DIR", dir.join("app"))
            .env("MOLTD_STATUS_FILE", dir.join("status.json"))
            .run()
    };
    check()
        .expect_code(0)
        .expect_stdout_contains("newer release v1.0.0");
    let stored = dir.read("app/.moltd/state.json");
    // A new first page of about 14 MB.
    big.store(true, Ordering::SeqCst);
    let run = check();
    run.expect_code(1).expect_stderr_contains(&format!(
        "release list from {}/repos/acme/app/releases?per_page=100 is larger than the limit of 8388608 bytes",
        feed.url()
    ));
    if dir.read("app/.moltd/state.json") != stored {
        run.fail("the state file changed");
    }
    assert_eq!(json(&dir, "status.json")["state"], "failed");
}

/// A state file written before the listing was kept per policy (every
/// release of every page, no policy, no count): it loads with everything
/// else in it, and the list is read anew rather than trusted on a 304.
#[test]
fn an_older_state_file_still_loads() {
    let dir = TestDir::new("old_state");
    let feed = Feed::start(vec![
        FakeRelease::new("v2.0.0", vec![]),
        FakeRelease::new("v1.1.0", vec![]),
        FakeRelease::new("v1.0.0", vec![]),
    ]);
    let url = format!("{}/repos/acme/app/releases?per_page=100", feed.url());
    let release = |tag: &str| {
        serde_json::json!({"tag": tag, "draft": false, "prerelease": false, "notes": "n",
            "url": null, "assets": []})
    };
    let old = serde_json::json!({
        "current": "v1.0.0", "previous": null, "bad": ["v2.0.0"], "applying": null,
        "last_check": 1_700_000_000, "etag": "\"old\"", "listing_url": url,
        "listing": [release("v1.1.0"), release("v1.0.0")],
        "listing_next": null, "listing_pages": 1,
    });
    dir.write("app/.moltd/state.json", &old.to_string());
    let run = Moltd::new(&dir, Mode::Pid1)
        .args(["update", "--check"])
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .run();
    // v2.0.0 is still marked bad: v1.1.0 is the newer release.
    run.expect_code(0)
        .expect_stdout_contains("newer release v1.1.0");
    let requests = feed.server.requests_to("/repos/");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].header("if-none-match"), None);
    let state = json(&dir, "app/.moltd/state.json");
    assert_eq!(state["current"], "v1.0.0");
    assert_eq!(state["bad"], serde_json::json!(["v2.0.0"]));
    assert!(state["listing_policy"].is_string(), "{state}");
}

/// A manifest is one document in an order of its own (here oldest first):
/// it is read whole, within the byte limit, so a release past the first
/// 1,000 entries is found; the state keeps only what can be chosen.
#[test]
fn a_manifest_past_the_release_cap_is_read_whole() {
    let dir = TestDir::new("big_manifest");
    let entries: Vec<String> = (0..1500)
        .map(|n| format!(r#"{{"version":"1.{n}.0","url":"files/app-1.{n}.0.tar.gz"}}"#))
        .collect();
    let manifest = format!(r#"{{"releases":[{}]}}"#, entries.join(","));
    let server = Server::start(move |request| match request.path.as_str() {
        "/m/manifest.json" => Response::new(200, manifest.clone()),
        _ => Response::new(404, ""),
    });
    install(&dir, "1.1498.0");
    let run = Moltd::new(&dir, Mode::Pid1)
        .args(["update", "--check"])
        .env("MOLTD_SOURCE", "url")
        .env("MOLTD_URL", format!("{}/m/manifest.json", server.url))
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .run();
    run.expect_code(0)
        .expect_stdout_contains("newer release 1.1499.0");
    let state = json(&dir, "app/.moltd/state.json");
    let kept: Vec<&str> = state["listing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["1.1498.0", "1.1499.0"], "{state}");
}
