//! The fully static build (`+crt-static`) in an empty root file system: no
//! libc, no NSS modules, no CA store. Only moltd, `/etc/hosts` and the test's
//! own files are there.
//!
//! The binary is not built here: `.ci/run` builds it and passes its path in
//! `MOLTD_STATIC_BIN`. Without that variable these tests print why and pass.

use crate::feed::{Endpoint, Feed, TestCa, app_release};
use crate::util::{Mode, Moltd, TestDir};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

/// The variable `.ci/run` sets to the static binary's path.
pub const STATIC_BIN: &str = "MOLTD_STATIC_BIN";

/// The static binary, or `None` after printing that `test` is skipped.
pub fn static_bin(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os(STATIC_BIN).map(PathBuf::from);
    if path.is_none() {
        skipped(
            test,
            &format!("{STATIC_BIN} is not set (.ci/run sets it to the +crt-static build)"),
        );
    }
    path
}

/// Says that `test` did not run and why, past the test harness's output
/// capture, so a skip is never silent.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}

/// A root file system holding only the static moltd (as `/moltd`) and an
/// `/etc/hosts` with `hosts`.
fn empty_root(dir: &TestDir, bin: &PathBuf, hosts: &str) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(bin, root.join("moltd")).unwrap();
    fs::write(root.join("etc/hosts"), hosts).unwrap();
    root
}

#[test]
fn runs_as_pid1_in_an_empty_root() {
    let Some(bin) = static_bin("runs_as_pid1_in_an_empty_root") else {
        return;
    };
    let dir = TestDir::new("static_pid1");
    let root = empty_root(&dir, &bin, "");
    Moltd::new(&dir, Mode::Pid1)
        .chroot(&root, "/moltd")
        .args(["--", "/moltd", "--version"])
        .run()
        .expect_code(0)
        .expect_stdout_contains(concat!("moltd ", env!("CARGO_PKG_VERSION")));
}

/// `moltd update --stage-only` reaches the feed by a name only `/etc/hosts`
/// knows, over HTTPS trusted through `SSL_CERT_DIR`.
#[test]
fn stages_a_release_by_host_name_in_an_empty_root() {
    let Some(bin) = static_bin("stages_a_release_by_host_name_in_an_empty_root") else {
        return;
    };
    let host = "releases.moltd.test";
    let ca = Arc::new(TestCa::new(host));
    let endpoint = Endpoint {
        host: Some(host.into()),
        tls: Some(ca.clone()),
    };
    let feed = Feed::at(&endpoint, vec![app_release("1.0.0")], Box::new(|_, _| None));
    let dir = TestDir::new("static_update");
    let root = empty_root(&dir, &bin, &format!("127.0.0.1 {host}\n"));
    fs::create_dir_all(root.join("certs")).unwrap();
    fs::write(root.join("certs/ca.pem"), &ca.pem).unwrap();
    let run = Moltd::new(&dir, Mode::Child)
        .chroot(&root, "/moltd")
        .args(["update", "--stage-only"])
        .env("MOLTD_REPO", "acme/app")
        .env("GITHUB_API_URL", feed.url())
        .env("MOLTD_APP_DIR", "/app")
        .env("MOLTD_STATUS_FILE", "/status.json")
        .env("SSL_CERT_DIR", "/certs")
        .run();
    run.expect_code(0)
        .expect_stdout_contains("/app/releases/v1.0.0");
    if fs::read_to_string(root.join("app/releases/v1.0.0/VERSION")).ok() != Some("1.0.0".into()) {
        run.fail("v1.0.0 was not staged in the chroot");
    }
}

/// `MOLTD_TEST_CRASH_AT` is a test hook: the binary the tests run has it
/// (the `test-hooks` feature, so this check can fail), the static one,
/// built as users build moltd, has no trace of it.
#[test]
fn test_hooks_are_only_in_the_test_build() {
    let hook = |bin: &std::path::Path| {
        let grep = std::process::Command::new("grep")
            .args(["-q", "-a", "-e", "MOLTD_TEST"])
            .arg(bin)
            .status()
            .unwrap();
        grep.success()
    };
    assert!(
        hook(&crate::util::moltd_bin()),
        "the test build lacks its hooks"
    );
    let Some(bin) = static_bin("test_hooks_are_only_in_the_test_build") else {
        return;
    };
    assert!(!hook(&bin), "{} has test hooks", bin.display());
}
