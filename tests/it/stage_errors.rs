//! Staging failures say what stopped them, once: caps found late in a large
//! archive, refused entries, the space and inode reserve on a small tmpfs,
//! folders implied by deep paths; and the smaller points of archives and
//! feeds (sticky folders, bytes after the gzip data, digests of another
//! algorithm, redirects to `file:`, names with control characters).

use crate::apply::{App, current, moltd, release, served, setup, wait_for_state};
use crate::feed::*;
use crate::update::{releases, small_tmpfs, update};
use crate::util::{Mode, TestDir};
use std::fs;
use std::os::unix::fs::PermissionsExt;

const MIB: usize = 1024 * 1024;

/// `app-2.0.0/<name>` for each entry of a bad v2.
fn v2(name: &str) -> String {
    format!("app-2.0.0/{name}")
}

/// The bad release v2.0.0 with `archive` as its asset.
fn bad_v2(archive: Vec<u8>) -> FakeRelease {
    FakeRelease::new(
        "v2.0.0",
        vec![FakeAsset::new(&asset_name("2.0.0"), archive)],
    )
}

/// A supervisor runs v1 (its app dir on a tmpfs with `tmpfs` options, if
/// any) with `env`; v2 is published, `moltd update` asked for it. The
/// reply and the log name `expected`, the log says it once and never
/// speaks of a sha256, nothing of v2 is left, and v1 still serves.
fn fails_late(name: &str, tmpfs: Option<&str>, env: &[(&str, &str)], v2: Vec<u8>, expected: &str) {
    let (dir, port) = setup(name);
    let _mount = match tmpfs {
        Some(options) => match small_tmpfs(&dir.join("app"), options) {
            Some(mount) => Some(mount),
            None => return,
        },
        None => None,
    };
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut moltd = moltd(&dir, &feed, Mode::Pid1);
    for (key, value) in env {
        moltd = moltd.env(key, value);
    }
    let mut running = moltd.spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(bad_v2(v2));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(1) || !reply.stderr.contains(expected) {
        running.fail(&format!("moltd update: {reply:?}, expected {expected:?}"));
    }
    let log = dir.read("moltd.stderr");
    let said = log.lines().filter(|l| l.contains(expected)).count();
    if said != 1 {
        running.fail(&format!("the log says {expected:?} {said} times, not once"));
    }
    if log.contains("sha256 of") {
        running.fail("a digest mismatch was reported");
    }
    let left = releases(&dir);
    if left != ["v1.0.0"] {
        running.fail(&format!("releases/ holds {left:?}, not v1.0.0 alone"));
    }
    if served(port).as_deref() != Some("1.0.0") || current(&dir) != "v1.0.0" {
        running.fail("v1 no longer serves");
    }
    let status = crate::apply::status(&dir);
    if status["state"] != "failed" || !status["last_error"].to_string().contains(expected) {
        running.fail(&format!("bad status {status}"));
    }
}

#[test]
fn unpacked_cap_found_late_is_named_once_not_a_digest_mismatch() {
    let (zeros, rest) = (vec![0; 5 * MIB], noise(2 * MIB));
    let archive = targz(&[
        Entry::File(&v2("zeros"), &zeros, 0o644),
        Entry::File(&v2("rest"), &rest, 0o644),
    ]);
    fails_late(
        "unpacked_cap_late",
        None,
        &[("MOLTD_MAX_UNPACKED", "4M")],
        archive,
        &format!(
            "{} unpacks to more than MOLTD_MAX_UNPACKED=4194304 bytes",
            asset_name("2.0.0")
        ),
    );
}

#[test]
fn entry_cap_found_late_is_named_once_not_a_digest_mismatch() {
    let (first, last) = (noise(2 * MIB), noise(2 * MIB));
    let names: Vec<String> = (0..1200).map(|i| v2(&format!("f{i}"))).collect();
    let mut entries = vec![Entry::File("app-2.0.0/first", &first, 0o644)];
    entries.extend(names.iter().map(|n| Entry::File(n, b"x", 0o644)));
    entries.push(Entry::File("app-2.0.0/last", &last, 0o644));
    fails_late(
        "entry_cap_late",
        None,
        &[("MOLTD_MAX_ENTRIES", "1000")],
        targz(&entries),
        "has more than MOLTD_MAX_ENTRIES=1000 entries",
    );
}

#[test]
fn refused_entry_found_late_is_named_once_not_a_digest_mismatch() {
    let (first, last) = (noise(3 * MIB), noise(2 * MIB));
    let archive = targz(&[
        Entry::File("app-2.0.0/first", &first, 0o644),
        Entry::File("app-2.0.0/../../evil", b"x", 0o644),
        Entry::File("app-2.0.0/last", &last, 0o644),
    ]);
    fails_late(
        "refused_entry_late",
        None,
        &[],
        archive,
        "entry app-2.0.0/../../evil refused: path contains ..",
    );
}

#[test]
fn space_reserve_reached_late_is_named_once_not_a_digest_mismatch() {
    // 6 MB on the wire, 10 MB unpacked, on an 8 MB disk.
    let (first, zeros, last) = (noise(2 * MIB), vec![0; 8 * MIB], noise(4 * MIB));
    let archive = targz(&[
        Entry::File("app-2.0.0/first", &first, 0o644),
        Entry::File("app-2.0.0/zeros", &zeros, 0o644),
        Entry::File("app-2.0.0/last", &last, 0o644),
    ]);
    fails_late(
        "space_reserve_late",
        Some("size=8m"),
        &[],
        archive,
        "no space left on the device for staging",
    );
}

/// `moltd update --stage-only` from `feed`, with `env`.
fn stage(dir: &TestDir, feed: &Feed, env: &[(&str, &str)]) -> crate::util::Finished {
    let mut moltd = update(dir, feed.url(), &["--stage-only"]);
    for (key, value) in env {
        moltd = moltd.env(key, value);
    }
    moltd.run()
}

/// Deep paths: each entry implies 20 folders the archive does not list.
fn deep_paths(count: usize) -> Vec<u8> {
    let names: Vec<String> = (0..count)
        .map(|i| {
            // Below a folder of its own, 19 one-letter folders.
            v2(&format!("{i}/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/f"))
        })
        .collect();
    let entries: Vec<Entry> = names.iter().map(|n| Entry::File(n, b"x", 0o644)).collect();
    targz(&entries)
}

#[test]
fn implied_folders_count_against_max_entries() {
    // 10 entries, 211 inodes (the top folder, 200 implied, 10 files).
    let dir = TestDir::new("implied_folders");
    let feed = Feed::start(vec![bad_v2(deep_paths(10))]);
    let run = stage(&dir, &feed, &[("MOLTD_MAX_ENTRIES", "100")]);
    run.expect_code(1)
        .expect_stderr_contains("has more than MOLTD_MAX_ENTRIES=100 entries");
    if releases(&dir)
        .iter()
        .any(|r| r.starts_with('.') || r == "v2.0.0")
    {
        run.fail("something was left in releases/");
    }
    // The same archive within the cap stages.
    let dir = TestDir::new("implied_folders_ok");
    let run = stage(&dir, &feed, &[("MOLTD_MAX_ENTRIES", "211")]);
    run.expect_code(0);
}

#[test]
fn inode_reserve_on_a_small_tmpfs() {
    // 50 deep entries want about 1050 inodes of 400.
    let dir = TestDir::new("inode_reserve");
    let Some(_mount) = small_tmpfs(&dir.join("app"), "size=16m,nr_inodes=400") else {
        return;
    };
    let feed = Feed::start(vec![bad_v2(deep_paths(50))]);
    let run = stage(&dir, &feed, &[]);
    run.expect_code(1)
        .expect_stderr_contains("no space left on the device for staging")
        .expect_stderr_contains("inodes needed");
    if !releases(&dir).is_empty() {
        run.fail("something was left in releases/");
    }
    // The reserve (5% of 400) is still free, and so is all the rest.
    let stat = nix::sys::statvfs::statvfs(&dir.join("app")).unwrap();
    if stat.files_available() < 380 {
        run.fail(&format!("{} inodes left", stat.files_available()));
    }
}

#[test]
fn sticky_folder_keeps_its_sticky_bit() {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, mode) in [
        ("app/tmp", tar::EntryType::Directory, 0o1777),
        ("app/shared", tar::EntryType::Directory, 0o777),
        // A file after its folder leaves the folder's mode alone.
        ("app/tmp/x", tar::EntryType::Regular, 0o644),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, &[][..]).unwrap();
    }
    let archive = gzip(&builder.into_inner().unwrap());
    let dir = TestDir::new("sticky");
    let feed = Feed::start(vec![bad_v2(archive)]);
    let run = stage(&dir, &feed, &[]);
    run.expect_code(0);
    let mode = |name: &str| {
        fs::metadata(dir.join("app/releases/v2.0.0").join(name))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_default()
    };
    if (mode("tmp"), mode("shared")) != (0o1777, 0o777) {
        run.fail(&format!(
            "modes {:o} and {:o}, not 1777 and 777",
            mode("tmp"),
            mode("shared")
        ));
    }
}

#[test]
fn gzip_followed_by_trailing_bytes_is_accepted() {
    let top = app_archive("2.0.0");
    for (what, tail) in [
        ("garbage", b"trailing garbage, not gzip\n".to_vec()),
        ("zeros", vec![0; 10 * 1024]),
    ] {
        let mut archive = top.clone();
        archive.extend_from_slice(&tail);
        let dir = TestDir::new("trailing");
        let feed = Feed::start(vec![bad_v2(archive)]);
        let run = stage(&dir, &feed, &[]);
        if run.code != Some(0) || dir.read("app/releases/v2.0.0/VERSION").trim() != "2.0.0" {
            run.fail(&format!("a gzip followed by {what} was not staged"));
        }
    }
    // Trailing bytes are still part of the digest.
    let mut archive = top.clone();
    archive.extend_from_slice(b"tail");
    let dir = TestDir::new("trailing_digest");
    let feed = Feed::start(vec![FakeRelease::new(
        "v2.0.0",
        vec![FakeAsset {
            digest: Some(format!("sha256:{}", sha256_hex(&top))),
            ..FakeAsset::new(&asset_name("2.0.0"), archive)
        }],
    )]);
    stage(&dir, &feed, &[])
        .expect_code(1)
        .expect_stderr_contains("expected");
}

#[test]
fn md5_digest_is_an_unsupported_algorithm() {
    let dir = TestDir::new("md5_digest");
    let feed = Feed::start(vec![FakeRelease::new(
        "v2.0.0",
        vec![FakeAsset {
            digest: Some("md5:9e107d9d372bb6826bd81d3542a419d6".into()),
            ..FakeAsset::new(&asset_name("2.0.0"), app_archive("2.0.0"))
        }],
    )]);
    let run = stage(&dir, &feed, &[]);
    run.expect_code(1)
        .expect_stderr_contains("unsupported digest algorithm md5");
    if run.stderr.contains("no digest field") {
        run.fail("an md5 digest reported as no digest field");
    }
}

#[test]
fn redirect_to_file_is_refused_by_name() {
    let dir = TestDir::new("redirect_file");
    let hook: Hook = Box::new(|r, _| {
        r.path
            .starts_with("/dl/")
            .then(|| Response::new(302, "").header("Location", "file:///etc/passwd"))
    });
    let feed = Feed::with_hook(vec![release("2.0.0", App::Good)], hook);
    let run = stage(&dir, &feed, &[]);
    run.expect_code(1).expect_stderr_contains(
        "redirected to file:///etc/passwd: refused, only redirects to http and https are followed",
    );
    if run.stderr.contains("answered http 302") {
        run.fail("reported as a bare 302");
    }
}

/// No raw control character in `text`, and `escaped` in it.
fn expect_escaped(run: &crate::util::Finished, text: &str, escaped: &str) {
    if text.contains('\x1b') || text.lines().any(|l| l.starts_with("forged")) {
        run.fail("a control character reached the log raw");
    }
    if !text.contains(escaped) {
        run.fail(&format!("{escaped:?} not found escaped"));
    }
}

#[test]
fn names_from_feeds_and_archives_are_logged_escaped() {
    // An asset name and an entry with ESC and a newline in them; the
    // entry is refused, and both are named in the error.
    let dir = TestDir::new("escaped_names");
    let name = "app-2.0.0\x1b[2J\nforged.tar.gz";
    let archive = targz(&[Entry::File("../\x1b[31m\nforged", b"x", 0o644)]);
    let served = archive.clone();
    let hook: Hook = Box::new(move |r, _| {
        r.path
            .starts_with("/dl/")
            .then(|| serve_file(r, &served, false))
    });
    let feed = Feed::with_hook(
        vec![FakeRelease::new(
            "v2.0.0",
            vec![FakeAsset::new(name, archive)],
        )],
        hook,
    );
    let run = stage(&dir, &feed, &[("MOLTD_ASSET", "app-*")]);
    run.expect_code(1);
    expect_escaped(
        &run,
        &run.stderr,
        "app-2.0.0\\u{1b}[2J\\nforged.tar.gz: entry ../\\u{1b}[31m\\nforged refused: path contains ..",
    );
    expect_escaped(&run, &dir.read("status.json"), "\\\\u{1b}[31m\\\\nforged");
    // A server's error body.
    let dir = TestDir::new("escaped_body");
    let hook: Hook = Box::new(|r, _| {
        r.path
            .starts_with("/repos/")
            .then(|| Response::new(500, "{\"message\":\"down\\u001b[2J\\nforged: all well\"}"))
    });
    let feed = Feed::with_hook(vec![], hook);
    let run = stage(&dir, &feed, &[]);
    run.expect_code(1);
    expect_escaped(&run, &run.stderr, "down\\u{1b}[2J\\nforged: all well");
}

#[test]
fn status_table_shows_feed_names_escaped() {
    let (dir, port) = setup("status_escaped");
    let name = "app-2.0.0\x1b[2J\nforged.tar.gz";
    let archive = targz(&[Entry::File("../\x1b[31m\nforged", b"x", 0o644)]);
    let served_archive = archive.clone();
    let hook: Hook = Box::new(move |r, _| {
        (r.path.starts_with("/dl/") && !r.path.contains("1.0.0"))
            .then(|| serve_file(r, &served_archive, false))
    });
    let feed = Feed::with_hook(vec![release("1.0.0", App::Good)], hook);
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_ASSET", "app-*")
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    feed.publish(FakeRelease::new(
        "v2.0.0",
        vec![FakeAsset::new(name, archive)],
    ));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(1) || reply.stderr.contains('\x1b') {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    let table = dir.moltd_client(&["status"]);
    if table.stdout.contains('\x1b')
        || !table
            .stdout
            .contains("last error: app-2.0.0\\u{1b}[2J\\nforged.tar.gz: entry ../\\u{1b}[31m\\nforged refused")
    {
        running.fail(&format!("moltd status: {table:?}"));
    }
}
