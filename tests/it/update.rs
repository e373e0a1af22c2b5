//! `moltd update` against a real HTTP server on loopback: selection, ETags,
//! rate limits, backoff, redirects and tokens, Gitea, manifests, resuming,
//! signatures, and every kind of bad input, each of which must end in a
//! clear error with nothing staged.

use crate::feed::*;
use crate::util::{Finished, Mode, Moltd, TestDir};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `moltd update ARGS` pointed at `feed`, with its app dir and status file
/// inside the test dir.
pub(crate) fn update<'a>(dir: &'a TestDir, feed: &str, args: &[&str]) -> Moltd<'a> {
    Moltd::new(dir, Mode::Child)
        .args(["update"])
        .args(args)
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed)
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_STATUS_FILE", dir.join("status.json"))
        .env("MOLTD_STALL_TIMEOUT", "2s")
}

/// Everything in app/releases, dot-entries included.
pub(crate) fn releases(dir: &TestDir) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("app/releases"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn expect_nothing_staged(dir: &TestDir, run: &Finished) {
    if !releases(dir).is_empty() {
        run.fail(&format!("something was staged: {:?}", releases(dir)));
    }
}

fn status(dir: &TestDir) -> serde_json::Value {
    serde_json::from_str(&dir.read("status.json")).unwrap_or_default()
}

#[test]
fn stages_the_newest_release_once() {
    let dir = TestDir::new("stage_newest");
    let mut pre = app_release("2.0.0-rc.1");
    pre.prerelease = true;
    let feed = Feed::start(vec![pre, app_release("1.1.0"), app_release("1.0.0")]);
    let run = update(&dir, feed.url(), &["--stage-only"]).run();
    run.expect_code(0);
    let staged = dir.join("app/releases/v1.1.0");
    run.expect_stdout_contains(&staged.display().to_string());
    if releases(&dir) != ["v1.1.0"] {
        run.fail("expected exactly v1.1.0 in releases");
    }
    // The single top folder is stripped; modes survive.
    let bin = staged.join("bin/app");
    let mode = fs::metadata(&bin)
        .ok()
        .map(|m| m.permissions().mode() & 0o777);
    if mode != Some(0o755) || dir.read("app/releases/v1.1.0/VERSION") != "1.1.0" {
        run.fail(&format!("bad release contents (bin/app mode {mode:?})"));
    }
    let status = status(&dir);
    if status["state"] != "staged"
        || status["bytes_done"] != status["bytes_total"]
        || status["progress"] != 100
    {
        run.fail(&format!("bad status {status}"));
    }
    // A second run finds it staged and downloads nothing.
    let downloads = feed.server.requests_to("/dl/").len();
    update(&dir, feed.url(), &["--stage-only"])
        .run()
        .expect_code(0)
        .expect_stderr_contains("already staged");
    assert_eq!(feed.server.requests_to("/dl/").len(), downloads);
}

#[test]
fn version_policy_picks_the_release() {
    let dir = TestDir::new("policy");
    let mut releases = vec![
        app_release("2.1.0-beta.1"),
        app_release("2.0.0"),
        app_release("1.5.0"),
        app_release("1.4.2"),
        app_release("1.0.0"),
        FakeRelease::new("backend-v0.8.7", vec![]),
        FakeRelease::new("frontend-v0.9.1", vec![]),
    ];
    releases[0].prerelease = true;
    let mut draft = app_release("9.0.0");
    draft.draft = true;
    releases.push(draft);
    let feed = Feed::start(releases);
    fs::create_dir_all(dir.join("app")).unwrap();
    std::os::unix::fs::symlink("releases/v1.4.2", dir.join("app/current")).unwrap();
    let table: [(&[(&str, &str)], &str); 7] = [
        (&[], "newer release v2.0.0 available (current: v1.4.2)"),
        (
            &[("MOLTD_PRERELEASE", "true")],
            "newer release v2.1.0-beta.1",
        ),
        (&[("MOLTD_VERSION", "^1.4")], "newer release v1.5.0"),
        (
            &[("MOLTD_VERSION", "~1.4")],
            "no newer release (current: v1.4.2)",
        ),
        (&[("MOLTD_VERSION", "=1.0.0")], "newer release v1.0.0"),
        (
            &[("MOLTD_TAG_PREFIX", "backend-")],
            "newer release backend-v0.8.7",
        ),
        (
            &[("MOLTD_TAG_PREFIX", "frontend-")],
            "newer release frontend-v0.9.1",
        ),
    ];
    for (env, expected) in table {
        let mut moltd = update(&dir, feed.url(), &["--check"]);
        for (k, v) in env {
            moltd = moltd.env(k, v);
        }
        moltd.run().expect_code(0).expect_stdout_contains(expected);
    }
    assert!(releases_empty(&dir));
}

fn releases_empty(dir: &TestDir) -> bool {
    releases(dir).is_empty()
}

#[test]
fn etag_makes_the_second_check_a_304() {
    let dir = TestDir::new("etag");
    let feed = Feed::start(vec![app_release("1.0.0")]);
    for _ in 0..2 {
        update(&dir, feed.url(), &["--check"])
            .run()
            .expect_code(0)
            .expect_stdout_contains("newer release v1.0.0");
    }
    let lists = feed.server.requests_to("/repos/");
    assert_eq!(lists.len(), 2);
    assert!(lists[0].header("if-none-match").is_none());
    assert!(
        lists[1].header("if-none-match").is_some(),
        "no If-None-Match on the second check"
    );
    assert_eq!(lists[1].header("authorization"), None);
    assert!(
        lists[1]
            .header("user-agent")
            .is_some_and(|a| a.starts_with("moltd/"))
    );
}

/// Runs `moltd update --watch` until `count` list requests arrived (or the
/// release is staged), then returns their times.
fn watch_until(dir: &TestDir, feed: &Feed, env: &[(&str, &str)], count: usize) -> Vec<Instant> {
    let mut moltd = update(dir, feed.url(), &["--stage-only", "--watch"]).env("MOLTD_JITTER", "0");
    for (k, v) in env {
        moltd = moltd.env(k, v);
    }
    let mut running = moltd.spawn();
    let server = &feed.server;
    running.wait_for("the release to be staged", || {
        server.requests_to("/repos/").len() >= count && dir.join("app/releases/v1.0.0").is_dir()
    });
    server.requests_to("/repos/").iter().map(|r| r.at).collect()
}

/// How a rate-limited answer says when to come back.
#[derive(Clone, Copy, Debug)]
enum RetryAt {
    Seconds,
    HttpDate,
    ResetHeader,
}

#[test]
fn rate_limits_are_honoured() {
    let table = [
        (429, RetryAt::Seconds),
        (429, RetryAt::HttpDate),
        (403, RetryAt::ResetHeader),
    ];
    for (status, retry_at) in table {
        let dir = TestDir::new("rate_limit");
        let calls = AtomicUsize::new(0);
        let hook: Hook = Box::new(move |request, _| {
            let first =
                request.path.starts_with("/repos/") && calls.fetch_add(1, Ordering::SeqCst) == 0;
            first.then(|| {
                let in_3s = std::time::SystemTime::now() + Duration::from_secs(3);
                let response = Response::new(status, r#"{"message":"API rate limit exceeded"}"#)
                    .header("X-RateLimit-Remaining", "0");
                match retry_at {
                    RetryAt::Seconds => response.header("Retry-After", "3"),
                    RetryAt::HttpDate => {
                        response.header("Retry-After", httpdate::fmt_http_date(in_3s))
                    }
                    RetryAt::ResetHeader => {
                        let reset = in_3s.duration_since(std::time::UNIX_EPOCH).unwrap();
                        response.header("X-RateLimit-Reset", reset.as_secs().to_string())
                    }
                }
            })
        });
        let feed = Feed::with_hook(vec![app_release("1.0.0")], hook);
        // SLEEP=1: backoff alone would wait 1 s; the server's word says
        // 2-3 s (a date or a reset time counts whole seconds: at least 2 s
        // are left).
        let times = watch_until(&dir, &feed, &[("SLEEP", "1")], 2);
        let gap = times[1] - times[0];
        assert!(
            gap >= Duration::from_millis(1900) && gap < Duration::from_secs(20),
            "{status} {retry_at:?}: gap {gap:?}"
        );
    }
}

#[test]
fn server_errors_back_off_exponentially() {
    let dir = TestDir::new("backoff");
    let calls = AtomicUsize::new(0);
    let hook: Hook = Box::new(move |request, _| {
        let failing =
            request.path.starts_with("/repos/") && calls.fetch_add(1, Ordering::SeqCst) < 2;
        failing.then(|| Response::new(500, "oops"))
    });
    let feed = Feed::with_hook(vec![app_release("1.0.0")], hook);
    let times = watch_until(&dir, &feed, &[("MOLTD_INTERVAL", "1s")], 3);
    let (first, second) = (times[1] - times[0], times[2] - times[1]);
    assert!(first >= Duration::from_millis(900), "{first:?}");
    assert!(second >= Duration::from_millis(1900), "{second:?}");
    assert!(dir.read("moltd.stderr").contains("answered http 500"));
}

#[test]
fn stalled_feed_times_out() {
    let dir = TestDir::new("stall");
    let hook: Hook = Box::new(|request, _| {
        request.path.starts_with("/repos/").then(|| Response {
            stall: Some(Duration::from_secs(8)),
            ..Response::new(200, "[]")
        })
    });
    let feed = Feed::with_hook(vec![], hook);
    let started = Instant::now();
    let run = update(&dir, feed.url(), &["--check"])
        .env("MOLTD_STALL_TIMEOUT", "1s")
        .run();
    run.expect_code(1);
    if started.elapsed() > Duration::from_secs(6) {
        run.fail("the stall was not cut short");
    }
}

/// HTTPS signed by the test's own CA is refused until `SSL_CERT_FILE` or a
/// folder of `SSL_CERT_DIR` (a `:` list, the way OpenSSL reads it) holds it.
#[test]
fn private_ca_from_ssl_cert_file_or_dir() {
    let ca = std::sync::Arc::new(TestCa::new("127.0.0.1"));
    let endpoint = Endpoint {
        host: None,
        tls: Some(ca.clone()),
    };
    let feed = Feed::at(&endpoint, vec![app_release("1.0.0")], Box::new(|_, _| None));
    let certs = TestDir::new("tls_certs");
    let bundle = certs.write("bundle.pem", &ca.pem);
    let empty = certs.write("empty/README", "no certificates here");
    let hashed = certs.write("hashed/0a1b2c3d.0", &ca.pem);
    let dirs = std::env::join_paths([empty.parent().unwrap(), hashed.parent().unwrap()]).unwrap();
    let table: [(Option<(&str, &std::ffi::OsStr)>, bool); 3] = [
        (None, false),
        (Some(("SSL_CERT_FILE", bundle.as_os_str())), true),
        (Some(("SSL_CERT_DIR", dirs.as_os_str())), true),
    ];
    for (env, trusted) in table {
        let dir = TestDir::new("tls");
        let mut moltd = update(&dir, feed.url(), &["--stage-only"]);
        if let Some((key, value)) = env {
            moltd = moltd.env(key, value);
        }
        let run = moltd.run();
        if trusted {
            run.expect_code(0);
            assert_eq!(releases(&dir), ["v1.0.0"]);
        } else {
            run.expect_code(1).expect_stderr_contains("certificate");
            expect_nothing_staged(&dir, &run);
        }
    }
}

#[test]
fn private_repository_token_stays_on_the_api_host() {
    let dir = TestDir::new("private");
    let archive = app_archive("1.0.0");
    let name = asset_name("1.0.0");
    let storage = {
        let archive = archive.clone();
        Server::start(move |request| serve_file(request, &archive, true))
    };
    let storage_url = storage.url.clone();
    let hook: Hook = Box::new(move |request, _| {
        if request.header("authorization") != Some("Bearer s3cret") {
            return Some(Response::new(404, r#"{"message":"Not Found"}"#));
        }
        if request.path.starts_with("/assets/") {
            assert_eq!(request.header("accept"), Some("application/octet-stream"));
            return Some(
                Response::new(302, "").header("Location", format!("{storage_url}/blob?sig=1")),
            );
        }
        None
    });
    let feed = Feed::with_hook(
        vec![FakeRelease::new(
            "v1.0.0",
            vec![FakeAsset::new(&name, archive)],
        )],
        hook,
    );
    // Without the token: a clear hint.
    update(&dir, feed.url(), &["--check"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("private repository needs GITHUB_TOKEN");
    update(&dir, feed.url(), &["--stage-only"])
        .env("GITHUB_TOKEN", "s3cret")
        .run()
        .expect_code(0);
    assert_eq!(releases(&dir), ["v1.0.0"]);
    let blobs = storage.requests();
    assert!(!blobs.is_empty(), "the storage host was not asked");
    assert!(
        blobs.iter().all(|r| r.header("authorization").is_none()),
        "token leaked to another host"
    );
}

#[test]
fn gitea_shape_with_sha256sums() {
    let dir = TestDir::new("gitea");
    let name = asset_name("1.2.0");
    let archive = app_archive("1.2.0");
    let sums = format!("{}  {name}\n", sha256_hex(&archive));
    let release = FakeRelease::new(
        "v1.2.0",
        vec![
            FakeAsset::new(&name, archive).without_digest(),
            FakeAsset::new("SHA256SUMS", sums.into_bytes()).without_digest(),
        ],
    );
    let json = releases_json("", std::slice::from_ref(&release));
    let hook: Hook = Box::new(move |request, base| {
        if request.path.starts_with("/api/v1/repos/acme/app/releases") {
            assert_eq!(request.header("authorization"), Some("token t0k"));
            return Some(Response::new(
                200,
                json.replace("\"/dl/", &format!("\"{base}/dl/")),
            ));
        }
        None
    });
    let feed = Feed::with_hook(vec![release], hook);
    update(&dir, feed.url(), &["--stage-only"])
        .env("MOLTD_SOURCE", "gitea")
        .env("MOLTD_API_URL", format!("{}/api/v1", feed.url()))
        .env("MOLTD_TOKEN", "t0k")
        .run()
        .expect_code(0)
        .expect_stderr_contains("sha256 matches SHA256SUMS");
    assert_eq!(releases(&dir), ["v1.2.0"]);
}

#[test]
fn manifest_source() {
    let dir = TestDir::new("manifest");
    let archive = app_archive("3.0.0");
    let manifest = format!(
        r#"{{"releases":[{{"version":"3.0.0","url":"files/app.tar.gz","sha256":"{}"}},{{"version":"2.0.0","url":"files/old.tar.gz"}}]}}"#,
        sha256_hex(&archive)
    );
    let server = Server::start(move |request| match request.path.as_str() {
        "/m/manifest.json" => Response::new(200, manifest.clone()),
        "/m/files/app.tar.gz" => serve_file(request, &archive, false),
        _ => Response::new(404, ""),
    });
    update(&dir, "unused", &["--stage-only"])
        .env("MOLTD_SOURCE", "url")
        .env("MOLTD_URL", format!("{}/m/manifest.json", server.url))
        .run()
        .expect_code(0);
    assert_eq!(releases(&dir), ["3.0.0"]);
}

#[test]
fn dropped_download_resumes_with_range() {
    let dir = TestDir::new("resume");
    let calls = AtomicUsize::new(0);
    let hook: Hook = Box::new(move |request, _| {
        let first = request.path.starts_with("/dl/") && calls.fetch_add(1, Ordering::SeqCst) == 0;
        first.then(|| {
            let data = app_archive("1.0.0");
            let half = data.len() / 2;
            Response {
                cut_after: Some(half),
                ..serve_file(request, &data, true)
            }
        })
    });
    let feed = Feed::with_hook(vec![app_release("1.0.0")], hook);
    update(&dir, feed.url(), &["--stage-only"])
        .run()
        .expect_code(0)
        .expect_stderr_contains("resuming");
    let downloads = feed.server.requests_to("/dl/");
    assert_eq!(downloads.len(), 2);
    assert!(
        downloads[1]
            .header("range")
            .is_some_and(|r| r.starts_with("bytes="))
    );
    assert_eq!(releases(&dir), ["v1.0.0"]);
}

#[test]
fn minisign_signatures() {
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let name = asset_name("1.0.0");
    let archive = app_archive("1.0.0");
    let sign = |pair: &minisign::KeyPair| {
        minisign::sign(
            Some(&pair.pk),
            &pair.sk,
            std::io::Cursor::new(&archive),
            None,
            None,
        )
        .unwrap()
        .into_string()
    };
    let table = [
        (Some(sign(&keys)), 0, "minisign signature verifies"),
        (
            Some(sign(&other)),
            1,
            "does not verify against MOLTD_MINISIGN_KEY",
        ),
        (None, 1, ".minisig, and MOLTD_MINISIGN_KEY requires one"),
    ];
    for (signature, code, expected) in table {
        let dir = TestDir::new("minisign");
        let mut assets = vec![FakeAsset::new(&name, archive.clone())];
        if let Some(sig) = signature {
            assets.push(FakeAsset::new(&format!("{name}.minisig"), sig.into_bytes()));
        }
        let feed = Feed::start(vec![FakeRelease::new("v1.0.0", assets)]);
        let run = update(&dir, feed.url(), &["--stage-only"])
            .env("MOLTD_MINISIGN_KEY", keys.pk.to_base64())
            .run();
        run.expect_code(code).expect_stderr_contains(expected);
        if code != 0 {
            expect_nothing_staged(&dir, &run);
        }
    }
}

/// A bad-input case: the feed's one release, extra settings, a hook, and
/// the words the error must contain.
struct Bad {
    name: &'static str,
    assets: Vec<FakeAsset>,
    env: Vec<(&'static str, String)>,
    hook: Option<Hook>,
    expect: &'static str,
}

fn bad(name: &'static str, archive: Vec<u8>, expect: &'static str) -> Bad {
    Bad {
        name,
        assets: vec![FakeAsset::new(&asset_name("1.0.0"), archive)],
        env: Vec::new(),
        hook: None,
        expect,
    }
}

#[test]
fn bad_input_ends_in_a_clear_error_and_nothing_staged() {
    let good = app_archive("1.0.0");
    let name = asset_name("1.0.0");
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let bomb = targz(&[Entry::File("big", &zeros, 0o644)]);
    let mut cases = vec![
        bad(
            "path traversal",
            targz(&[Entry::File("../evil", b"x", 0o644)]),
            "path contains ..",
        ),
        bad(
            "absolute path",
            targz(&[Entry::File("/tmp/evil", b"x", 0o644)]),
            "absolute path",
        ),
        bad(
            "link escape",
            targz(&[Entry::Dir("a"), Entry::Symlink("a/up", "../../..")]),
            "link points outside the release",
        ),
        bad(
            "absolute link",
            targz(&[Entry::Symlink("etc", "/etc")]),
            "link target is absolute",
        ),
        bad(
            "write through a link",
            targz(&[Entry::Symlink("d", "."), Entry::File("d/x", b"x", 0o644)]),
            "duplicate entry",
        ),
        bad(
            "hard link outside",
            targz(&[Entry::HardLink("h", "/etc/passwd")]),
            "absolute path",
        ),
        bad(
            "device",
            targz(&[Entry::CharDevice("null")]),
            "device entries are not allowed",
        ),
        bad(
            "fifo",
            targz(&[Entry::Fifo("pipe")]),
            "fifo entries are not allowed",
        ),
        bad(
            "invalid gzip",
            b"this is not gzip at all".repeat(100),
            "is not a valid tar.gz",
        ),
        bad(
            "gzip of garbage",
            gzip(&[7u8; 5000]),
            "is not a valid tar.gz",
        ),
        Bad {
            env: vec![("MOLTD_MAX_UNPACKED", "1M".into())],
            ..bad(
                "bomb",
                bomb.clone(),
                "unpacks to more than MOLTD_MAX_UNPACKED=1048576 bytes",
            )
        },
        Bad {
            env: vec![("MOLTD_MAX_ENTRIES", "2".into())],
            ..bad(
                "entry count",
                good.clone(),
                "has more than MOLTD_MAX_ENTRIES=2 entries",
            )
        },
        Bad {
            env: vec![("MOLTD_MAX_DOWNLOAD", "100".into())],
            ..bad(
                "download size",
                good.clone(),
                "is larger than MOLTD_MAX_DOWNLOAD=100 bytes",
            )
        },
        Bad {
            assets: vec![FakeAsset {
                digest: Some(format!("sha256:{}", sha256_hex(b"other"))),
                ..FakeAsset::new(&name, good.clone())
            }],
            ..bad("wrong digest", vec![], "expected")
        },
        Bad {
            assets: vec![FakeAsset::new(&name, good.clone()).without_digest()],
            ..bad("missing checksum", vec![], "has no checksum")
        },
        Bad {
            assets: vec![
                FakeAsset::new(&name, good.clone()).without_digest(),
                FakeAsset::new(
                    "checksums.txt",
                    format!("{}  other.tar.gz\n", sha256_hex(&good)).into_bytes(),
                ),
            ],
            ..bad(
                "checksum not listed",
                vec![],
                "checksums.txt lists no sha256",
            )
        },
        Bad {
            assets: vec![
                FakeAsset::new(&name, good.clone()),
                FakeAsset::new(&name.replace(".tar.gz", "-musl.tar.gz"), good.clone()),
            ],
            ..bad("ambiguous asset", vec![], "2 assets match")
        },
        Bad {
            hook: Some(Box::new(|r, _| {
                r.path
                    .starts_with("/repos/")
                    .then(|| Response::new(200, r#"[{"tag_name": 5}]"#))
            })),
            ..bad("malformed json", vec![], "cannot parse the release list")
        },
        Bad {
            hook: Some(Box::new(|r, _| {
                r.path
                    .starts_with("/repos/")
                    .then(|| Response::new(200, vec![b' '; 9 * 1024 * 1024]))
            })),
            ..bad(
                "huge json",
                vec![],
                "larger than the limit of 8388608 bytes",
            )
        },
        Bad {
            hook: Some(Box::new(|r, _| {
                r.path.starts_with("/dl/").then(|| {
                    let data = app_archive("1.0.0");
                    Response {
                        cut_after: Some(data.len() / 2),
                        ..serve_file(r, &data, false)
                    }
                })
            })),
            ..bad("truncated download", good.clone(), "failed after")
        },
        Bad {
            hook: Some(Box::new(|r, _| {
                r.path.starts_with("/dl/").then(|| {
                    let data = app_archive("1.0.0");
                    Response {
                        content_length: Some(data.len() as u64 + 10),
                        ..serve_file(r, &data, false)
                    }
                })
            })),
            ..bad("wrong content-length", good.clone(), "were announced")
        },
        Bad {
            hook: Some(Box::new(|r, _| {
                r.path.starts_with("/dl/").then(|| Response {
                    stall: Some(Duration::from_secs(8)),
                    ..serve_file(r, &app_archive("1.0.0"), false)
                })
            })),
            ..bad("stalled download", good.clone(), "failed after 0 of")
        },
    ];
    for case in cases.drain(..) {
        let dir = TestDir::new("bad_input");
        let release = FakeRelease::new("v1.0.0", case.assets);
        let feed = match case.hook {
            Some(hook) => Feed::with_hook(vec![release], hook),
            None => Feed::start(vec![release]),
        };
        let mut moltd =
            update(&dir, feed.url(), &["--stage-only"]).env("MOLTD_STALL_TIMEOUT", "1s");
        for (k, v) in &case.env {
            moltd = moltd.env(k, v);
        }
        let run = moltd.run();
        if run.code != Some(1) || !run.stderr.contains(case.expect) {
            run.fail(&format!(
                "case {:?}: expected exit 1 and {:?}",
                case.name, case.expect
            ));
        }
        expect_nothing_staged(&dir, &run);
        let status = status(&dir);
        if status["state"] != "failed"
            || !status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(case.expect))
        {
            run.fail(&format!("case {:?}: bad status {status}", case.name));
        }
    }
}

/// Mounts a tmpfs with `options` (`size=1m,nr_inodes=100`) on `path`;
/// `None` (with a message) where mounting is impossible.
pub(crate) fn small_tmpfs(path: &std::path::Path, options: &str) -> Option<TmpfsGuard> {
    fs::create_dir_all(path).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping a disk-full test: cannot mount a tmpfs (not root?)");
        return None;
    }
    Some(TmpfsGuard(path.to_path_buf()))
}

pub(crate) struct TmpfsGuard(std::path::PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_on_a_small_tmpfs() {
    // Incompressible bytes: the archive itself is bigger than the disk.
    let noise = noise(2 * 1024 * 1024);
    let zeros = vec![0u8; 3 * 1024 * 1024];
    let table = [
        (
            targz(&[Entry::File("noise", &noise, 0o644)]),
            "5%",
            "no space left on the device for staging",
        ),
        (
            targz(&[Entry::File("zeros", &zeros, 0o644)]),
            "5%",
            "no space left on the device for staging",
        ),
        // Without a reserve, blocks are still counted: moltd stops before
        // the disk is full.
        (
            targz(&[Entry::File("zeros", &zeros, 0o644)]),
            "0%",
            "(MOLTD_MIN_FREE keeps 0)",
        ),
    ];
    for (archive, min_free, expected) in table {
        let dir = TestDir::new("disk_full");
        let Some(_mount) = small_tmpfs(&dir.join("app"), "size=1m") else {
            return;
        };
        let feed = Feed::start(vec![FakeRelease::new(
            "v1.0.0",
            vec![FakeAsset::new(&asset_name("1.0.0"), archive)],
        )]);
        let run = update(&dir, feed.url(), &["--stage-only"])
            .env("MOLTD_MIN_FREE", min_free)
            .run();
        run.expect_code(1).expect_stderr_contains(expected);
        expect_nothing_staged(&dir, &run);
    }
}

#[test]
fn update_is_only_a_subcommand_as_the_first_argument() {
    let dir = TestDir::new("update_operand");
    dir.script("update", "#!/bin/sh\necho program-ran\n");
    Moltd::new(&dir, Mode::Child)
        .args(["--", "./update"])
        .run()
        .expect_code(0)
        .expect_stdout_contains("program-ran");
    Moltd::new(&dir, Mode::Child)
        .args(["update", "--bogus"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("moltd update --help");
    Moltd::new(&dir, Mode::Child)
        .args(["update", "--check"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("no release source");
}

/// `moltd update --check` with `env`; returns the list requests it made and
/// the run.
fn check_pages(
    dir: &TestDir,
    feed: &Feed,
    env: &[(&str, &str)],
    expect: &str,
) -> (Vec<Request>, Finished) {
    let before = feed.server.requests_to("/repos/").len();
    let mut moltd = update(dir, feed.url(), &["--check"]);
    for (k, v) in env {
        moltd = moltd.env(k, v);
    }
    let run = moltd.run();
    run.expect_code(0).expect_stdout_contains(expect);
    (feed.server.requests_to("/repos/")[before..].to_vec(), run)
}

fn tagged(tags: &[&str]) -> Vec<FakeRelease> {
    tags.iter().map(|t| FakeRelease::new(t, vec![])).collect()
}

#[test]
fn later_pages_are_read_only_until_an_eligible_release() {
    let feed = Feed::start(tagged(&[
        "web-v3.0.0",
        "web-v2.0.0",
        "web-v1.1.0",
        "web-v1.0.0",
        "api-v1.0.0",
        "web-v0.9.0",
    ]));
    feed.max_per_page(2);
    let api = [("MOLTD_TAG_PREFIX", "api-")];
    type Env<'a> = &'a [(&'a str, &'a str)];
    let table: [(Env, &str, usize); 3] = [
        (&[("MOLTD_TAG_PREFIX", "web-")], "web-v3.0.0", 1),
        (
            &[("MOLTD_TAG_PREFIX", "web-"), ("MOLTD_VERSION", "=1.0.0")],
            "web-v1.0.0",
            2,
        ),
        (&api, "api-v1.0.0", 3),
    ];
    for (env, tag, pages) in table {
        let dir = TestDir::new("pages");
        let (requests, _) = check_pages(&dir, &feed, env, &format!("newer release {tag}"));
        let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths.len(), pages, "{env:?}: {paths:?}");
        assert!(paths[0].ends_with("?per_page=100"), "{paths:?}");
        for (n, path) in paths.iter().enumerate().skip(1) {
            assert!(path.ends_with(&format!("page={}", n + 1)), "{paths:?}");
        }
    }
    // The policy changes while page 1 stays the same: the state kept only
    // what the old policy could choose, so the list is read anew, and after
    // that a 304 is one request again.
    let dir = TestDir::new("pages_304");
    check_pages(&dir, &feed, &[("MOLTD_TAG_PREFIX", "web-")], "web-v3.0.0");
    let (requests, run) = check_pages(&dir, &feed, &api, "newer release api-v1.0.0");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[0].header("if-none-match").is_none());
    if run.stderr.contains("not modified") {
        run.fail("a list kept for another policy was trusted");
    }
    let (requests, run) = check_pages(&dir, &feed, &api, "newer release api-v1.0.0");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].header("if-none-match").is_some());
    run.expect_stderr_contains("release list not modified since the last check");
}

#[test]
fn a_next_page_on_another_host_is_not_followed() {
    let dir = TestDir::new("pages_foreign");
    let other = Server::start(|request| {
        let releases = tagged(&["api-v1.0.0"]);
        releases_page(request, "", &releases, 100)
    });
    let next = format!(
        "<{}/repos/acme/app/releases?page=2>; rel=\"next\"",
        other.url
    );
    let hook: Hook = Box::new(move |request, base| {
        request.path.starts_with("/repos/").then(|| {
            Response::new(200, releases_json(base, &tagged(&["web-v1.0.0"])))
                .header("Link", next.clone())
        })
    });
    let feed = Feed::with_hook(vec![], hook);
    let run = update(&dir, feed.url(), &["--check"])
        .env("MOLTD_TAG_PREFIX", "api-")
        .run();
    run.expect_code(0)
        .expect_stdout_contains("no newer release")
        .expect_stderr_contains("not following the release list's next page to another origin");
    assert!(other.requests().is_empty(), "the other host was asked");
}

/// A prefix that matches nothing (a typo) on a long list: the first check
/// reads at most 10 pages and says so once; after that, as long as the first
/// page stays the same, a check is one request (the 304) and stores nothing
/// more.
#[test]
fn page_limit_is_for_the_list_not_for_each_check() {
    let dir = TestDir::new("pages_limit");
    let tags: Vec<String> = (0..30).map(|n| format!("web-v1.0.{n}")).collect();
    let feed = Feed::start(tagged(&tags.iter().map(String::as_str).collect::<Vec<_>>()));
    feed.max_per_page(1);
    let typo = [("MOLTD_TAG_PREFIX", "wbe-")];
    let (requests, run) = check_pages(&dir, &feed, &typo, "no newer release");
    assert_eq!(requests.len(), 10, "{requests:?}");
    run.expect_stderr_contains("no eligible release in the newest 10 releases")
        .expect_stderr_contains("check MOLTD_TAG_PREFIX");
    let stored = || -> serde_json::Value {
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap()
    };
    assert_eq!(stored()["listing_read"], 10);
    for _ in 0..2 {
        let (requests, run) = check_pages(&dir, &feed, &typo, "no newer release");
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].header("if-none-match").is_some());
        run.expect_stderr_contains("release list not modified since the last check");
        if run.stderr.contains("no eligible release in the newest") {
            run.fail("the page limit was reported again");
        }
    }
    assert_eq!(stored()["listing_read"], 10);
    // A new release changes the first page: the search starts over.
    feed.publish(FakeRelease::new("web-v2.0.0", vec![]));
    let (requests, _) = check_pages(&dir, &feed, &typo, "no newer release");
    assert_eq!(requests.len(), 10, "{requests:?}");
}

/// GitHub's list carries download counts, so its ETag changes while the
/// releases stay the same, here at every request (and a server may send no
/// ETag at all): the cap holds for the same first-page tags, so a prefix that
/// matches nothing costs the 10 pages once and then one request (a 200) a
/// check; only a new release starts the search over.
#[test]
fn a_new_etag_for_the_same_releases_keeps_the_page_limit() {
    let dir = TestDir::new("pages_etag");
    let asset = || vec![FakeAsset::new("app.tar.gz", b"app".to_vec())];
    let feed = Feed::start(
        (0..30)
            .map(|n| FakeRelease::new(&format!("web-v1.0.{n}"), asset()))
            .collect(),
    );
    feed.max_per_page(1);
    feed.downloading();
    let typo = [("MOLTD_TAG_PREFIX", "wbe-")];
    let (requests, _) = check_pages(&dir, &feed, &typo, "no newer release");
    assert_eq!(requests.len(), 10, "{requests:?}");
    let stored = || -> serde_json::Value {
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap()
    };
    for _ in 0..3 {
        let etag = stored()["etag"].clone();
        let (requests, run) = check_pages(&dir, &feed, &typo, "no newer release");
        assert_eq!(requests.len(), 1, "{requests:?}");
        if run.stderr.contains("no eligible release in the newest") {
            run.fail("the page limit was reported again");
        }
        assert_ne!(stored()["etag"], etag, "the feed's ETag did not change");
        assert_eq!(stored()["listing_read"], 10);
        assert_eq!(stored()["listing_pages"], 10);
    }
    feed.publish(FakeRelease::new("web-v2.0.0", asset()));
    let (requests, _) = check_pages(&dir, &feed, &typo, "no newer release");
    assert_eq!(requests.len(), 10, "{requests:?}");
}

/// A rate limit on a later page keeps the pages read before it (and the
/// first page's ETag): the next check is a 304 that goes on from there.
#[test]
fn a_failed_later_page_keeps_the_pages_before_it() {
    let dir = TestDir::new("pages_partial");
    let limited = AtomicUsize::new(0);
    let hook: Hook = Box::new(move |request, _| {
        let third = query_param(&request.path, "page") == Some("3");
        (third && limited.fetch_add(1, Ordering::SeqCst) == 0).then(|| {
            Response::new(429, r#"{"message":"API rate limit exceeded"}"#)
                .header("Retry-After", "1")
        })
    });
    let feed = Feed::with_hook(
        tagged(&["web-v3.0.0", "web-v2.0.0", "web-v1.0.0", "api-v1.0.0"]),
        hook,
    );
    feed.max_per_page(1);
    let before = feed.server.requests_to("/repos/").len();
    update(&dir, feed.url(), &["--check"])
        .env("MOLTD_TAG_PREFIX", "api-")
        .run()
        .expect_code(1)
        .expect_stderr_contains("rate limited");
    assert_eq!(feed.server.requests_to("/repos/").len() - before, 3);
    let (requests, _) = check_pages(
        &dir,
        &feed,
        &[("MOLTD_TAG_PREFIX", "api-")],
        "newer release api-v1.0.0",
    );
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(requests[0].header("if-none-match").is_some(), "{paths:?}");
    assert!(
        paths[1].ends_with("page=3") && paths[2].ends_with("page=4"),
        "{paths:?}"
    );
}

/// Without a supervisor, `moltd unmark` edits the state file, and the next
/// check offers the release again.
#[test]
fn unmark_without_a_supervisor_edits_the_state_file() {
    let dir = TestDir::new("unmark_file");
    let feed = Feed::start(vec![app_release("2.0.0"), app_release("1.0.0")]);
    fs::create_dir_all(dir.join("app/.moltd")).unwrap();
    std::os::unix::fs::symlink("releases/v1.0.0", dir.join("app/current")).unwrap();
    dir.write(
        "app/.moltd/state.json",
        r#"{"current": "v1.0.0", "bad": ["v2.0.0"]}"#,
    );
    update(&dir, feed.url(), &["--check"])
        .run()
        .expect_code(0)
        .expect_stdout_contains("no newer release (current: v1.0.0)");
    let unmark = |tag: &str| {
        Moltd::new(&dir, Mode::Child)
            .args(["unmark", tag])
            .env("MOLTD_APP_DIR", dir.join("app"))
            .run()
    };
    unmark("v2.0.1")
        .expect_code(1)
        .expect_stderr_contains("v2.0.1 not marked bad (bad releases: v2.0.0)");
    // A socket that cannot be reached for another reason than "nobody is
    // there" may hide a supervisor: no edit behind its back.
    dir.write("not-a-dir", "");
    Moltd::new(&dir, Mode::Child)
        .args(["unmark", "v2.0.0"])
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_CONTROL", dir.join("not-a-dir/control.sock"))
        .run()
        .expect_code(1)
        .expect_stderr_contains("Not a directory")
        .expect_stderr_contains("not editing the state file");
    // A local update holding the supervisor lock: no edit it could
    // overwrite, and a second local update does not start either.
    let lock = fs::File::create(dir.join("app/.moltd/supervisor.lock")).unwrap();
    lock.try_lock().unwrap();
    unmark("v2.0.0")
        .expect_code(1)
        .expect_stderr_contains("another moltd manages");
    update(&dir, feed.url(), &["--stage-only"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("supervisor.lock");
    drop(lock);
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap();
    assert_eq!(state["bad"], serde_json::json!(["v2.0.0"]));
    unmark("v2.0.0")
        .expect_code(0)
        .expect_stdout_contains("v2.0.0 no longer marked bad");
    let state: serde_json::Value =
        serde_json::from_str(&dir.read("app/.moltd/state.json")).unwrap();
    assert_eq!(state["bad"], serde_json::json!([]));
    assert_eq!(state["current"], "v1.0.0");
    update(&dir, feed.url(), &["--check"])
        .run()
        .expect_code(0)
        .expect_stdout_contains("newer release v2.0.0 available");
    Moltd::new(&dir, Mode::Child)
        .args(["unmark"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("unmark needs the TAG");
}
