//! Releases as people publish them: goreleaser's default archives are flat
//! (the program under the project's name beside README.md and LICENSE, no
//! `bin/`), with a checksums file and, from the example under
//! `examples/release/`, a minisign signature per archive. With
//! `MOLTD_ENTRY=bin/app` (the image's setting) such a release installs and
//! updates with no other setting; one moltd cannot tell how to run is
//! refused before anything is stopped, naming the variable that fixes it.

use crate::apply::{current, status, wait_for_state};
use crate::feed::*;
use crate::util::{Mode, Moltd, TestDir};
use serde_json::Value;

/// A YAML file of `examples/release/`, as JSON values.
fn example(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/release")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// goreleaser's architecture name for this machine.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no goreleaser name for {other}"),
    }
}

/// What `examples/release/.goreleaser.yaml` publishes for one version, as
/// goreleaser names and shapes it.
struct Published {
    project: String,
    /// `{{ .ProjectName }}_{{ .Version }}_{{ .Os }}_{{ .Arch }}.tar.gz`.
    archive: String,
    /// `{{ .ProjectName }}_{{ .Version }}_checksums.txt`.
    checksums: String,
}

/// Reads the example configuration and checks that it asks for what the
/// tests below build: goreleaser's default archive (flat, default name,
/// tar.gz), its default checksums file, and one minisign signature per
/// archive named `<archive>.minisig`.
fn published(version: &str) -> Published {
    let config = example(".goreleaser.yaml");
    let project = config["project_name"].as_str().unwrap().to_owned();
    let archive = &config["archives"][0];
    assert_eq!(archive["formats"], serde_json::json!(["tar.gz"]));
    for default in [
        "name_template",
        "wrap_in_directory",
        "files",
        "strip_binary_directory",
    ] {
        assert!(
            archive[default].is_null(),
            "the example sets archives.{default}"
        );
    }
    assert_eq!(
        config["builds"][0]["binary"].as_str(),
        Some(project.as_str())
    );
    let checksum = &config["checksum"];
    assert!(checksum["name_template"].is_null() && checksum["algorithm"] == "sha256");
    let sign = &config["signs"][0];
    assert_eq!(sign["cmd"], "minisign");
    assert_eq!(sign["artifacts"], "archive");
    assert_eq!(sign["signature"], "${artifact}.minisig");
    let args: Vec<&str> = sign["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.starts_with(&["-S"]) && !args.contains(&"-l"),
        "{args:?}"
    );
    Published {
        archive: format!("{project}_{version}_linux_{}.tar.gz", goarch()),
        checksums: format!("{project}_{version}_checksums.txt"),
        project,
    }
}

/// The workflow runs goreleaser on version tags, with minisign and the key
/// the configuration signs with.
#[test]
fn the_release_workflow_runs_goreleaser_with_minisign() {
    let workflow = example("release.yml");
    assert_eq!(workflow["on"]["push"]["tags"], serde_json::json!(["v*"]));
    assert_eq!(workflow["permissions"]["contents"], "write");
    let steps = workflow["jobs"]["release"]["steps"].as_array().unwrap();
    let uses = |prefix: &str| {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(prefix)))
    };
    let goreleaser = uses("goreleaser/goreleaser-action@").expect("a goreleaser step");
    assert_eq!(goreleaser["with"]["args"], "release --clean");
    assert!(goreleaser["env"]["MINISIGN_KEY_FILE"].is_string());
    assert!(goreleaser["env"]["GITHUB_TOKEN"].is_string());
    assert!(uses("actions/checkout@").is_some() && uses("actions/setup-go@").is_some());
    let runs: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(runs.contains("install -y minisign"), "{runs}");
    let config = example(".goreleaser.yaml");
    assert!(
        config["signs"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from("{{ .Env.MINISIGN_KEY_FILE }}"))
    );
}

/// A flat archive as goreleaser writes it: `project` (the program, 0755),
/// README.md and LICENSE (0644), no folder entries. The program records its
/// version in `DIR/running` and its pid in `DIR/started`, and stays up.
fn flat_archive(project: &str, version: &str) -> Vec<u8> {
    let program = format!(
        "#!/bin/sh\necho {version} > \"$1/running\"\necho $$ >> \"$1/started\"\nexec sleep 3600\n"
    );
    targz(&[
        Entry::File(project, program.as_bytes(), 0o755),
        Entry::File("README.md", b"# app\n", 0o644),
        Entry::File("LICENSE", b"MIT\n", 0o644),
    ])
}

/// goreleaser's checksums file: `<sha256>  <name>` lines, sorted by name.
fn checksums(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut lines: Vec<String> = files
        .iter()
        .map(|(name, data)| format!("{}  {name}\n", sha256_hex(data)))
        .collect();
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    lines.concat().into_bytes()
}

/// A minisign signature of `data`, prehashed like minisign's own default.
fn signature(keys: &minisign::KeyPair, data: &[u8]) -> Vec<u8> {
    let cursor = std::io::Cursor::new(data);
    let signature = minisign::sign(Some(&keys.pk), &keys.sk, cursor, None, None).unwrap();
    signature.into_string().into_bytes()
}

/// Release `v<version>` as the example publishes it: the archive for this
/// machine and one for another architecture, each signed, and the checksums
/// file; no digest fields, so the checksums file is what moltd checks.
fn goreleaser_release(keys: &minisign::KeyPair, version: &str, archive: Vec<u8>) -> FakeRelease {
    let names = published(version);
    let other_arch = names.archive.replace(goarch(), "riscv64");
    let other = flat_archive(&names.project, version);
    let sign = |data: &[u8]| signature(keys, data);
    let sums = checksums(&[(&names.archive, &archive), (&other_arch, &other)]);
    let assets = vec![
        FakeAsset::new(&names.archive, archive.clone()).without_digest(),
        FakeAsset::new(&format!("{}.minisig", names.archive), sign(&archive)).without_digest(),
        FakeAsset::new(&other_arch, other.clone()).without_digest(),
        FakeAsset::new(&format!("{other_arch}.minisig"), sign(&other)).without_digest(),
        FakeAsset::new(&names.checksums, sums).without_digest(),
    ];
    FakeRelease::new(&format!("v{version}"), assets)
}

/// A test dir with a `web` service running `current/bin/app DIR` (as the
/// image's app service does), the example's signing key, the program's
/// name, and a feed publishing v1.0.0 as the example does.
fn with_flat_v1(name: &str) -> (TestDir, minisign::KeyPair, String, Feed) {
    let (dir, _) = crate::apply::setup(name);
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let project = published("1.0.0").project;
    let archive = flat_archive(&project, "1.0.0");
    let feed = Feed::start(vec![goreleaser_release(&keys, "1.0.0", archive)]);
    (dir, keys, project, feed)
}

/// moltd supervising the `web` service, updating it from `feed` with the
/// image's `MOLTD_ENTRY` and the example's signing key.
fn supervising<'a>(dir: &'a TestDir, feed: &Feed, keys: &minisign::KeyPair) -> Moltd<'a> {
    crate::apply::moltd(dir, feed, Mode::Pid1)
        .env("MOLTD_ENTRY", "bin/app")
        .env("MOLTD_MINISIGN_KEY", keys.pk.to_base64())
}

/// The shape that failed in the shipped image (`/app/current/bin/app: not
/// found`, rolled back, marked bad): installed at first boot, then updated.
#[test]
fn goreleaser_default_flat_archive_installs_and_updates() {
    let (dir, keys, project, feed) = with_flat_v1("layout_goreleaser");
    let mut running = supervising(&dir, &feed, &keys).spawn();
    running.wait_for_file("running", "1.0.0");
    wait_for_state(&mut running, &dir, "idle");
    let link = std::fs::read_link(dir.join("app/releases/v1.0.0/bin/app"));
    if current(&dir) != "v1.0.0" || link.ok() != Some(format!("../{project}").into()) {
        running.fail("v1.0.0 is not current, or bin/app does not point to the program");
    }
    feed.publish(goreleaser_release(
        &keys,
        "2.0.0",
        flat_archive(&project, "2.0.0"),
    ));
    let reply = dir.moltd_client(&["update"]);
    if reply.code != Some(0) || !reply.stdout.contains("updated to v2.0.0") {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    running.wait_for_file("running", "2.0.0");
    let doc = status(&dir);
    if doc["current"] != "v2.0.0" || doc["bad_releases"] != serde_json::json!([]) {
        running.fail(&format!("bad status {doc}"));
    }
    // The checksums file and the signature were what was checked.
    if !feed
        .server
        .requests_to("/dl/v2.0.0/")
        .iter()
        .any(|r| r.path.ends_with("_checksums.txt"))
        || !feed
            .server
            .requests_to("/dl/v2.0.0/")
            .iter()
            .any(|r| r.path.ends_with(".minisig"))
    {
        running.fail("the checksums file or the signature was not read");
    }
}

/// `goreleaser init`'s template: `app_Linux_x86_64.tar.gz` and a plain
/// `checksums.txt`, flat too.
#[test]
fn goreleaser_init_names_install_too() {
    let (dir, _) = crate::apply::setup("layout_goreleaser_init");
    let keys = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let arch = std::env::consts::ARCH;
    let name = format!("tool_Linux_{arch}.tar.gz");
    let archive = flat_archive("tool", "1.0.0");
    let feed = Feed::start(vec![FakeRelease::new(
        "v1.0.0",
        vec![
            FakeAsset::new(&name, archive.clone()).without_digest(),
            FakeAsset::new(&format!("{name}.minisig"), signature(&keys, &archive)).without_digest(),
            FakeAsset::new("checksums.txt", checksums(&[(&name, &archive)])).without_digest(),
        ],
    )]);
    let mut running = supervising(&dir, &feed, &keys).spawn();
    running.wait_for_file("running", "1.0.0");
    if current(&dir) != "v1.0.0" {
        running.fail("v1.0.0 is not current");
    }
}

/// A flat archive with two programs: moltd cannot tell which one the
/// services run. Refused while staging (the running release is never
/// stopped), with the variable that fixes it, and not downloaded again.
#[test]
fn a_release_without_the_entry_is_refused_before_anything_stops() {
    let (dir, keys, project, feed) = with_flat_v1("layout_refused");
    let mut running = supervising(&dir, &feed, &keys).spawn();
    running.wait_for_file("running", "1.0.0");
    wait_for_state(&mut running, &dir, "idle");
    let program = b"#!/bin/sh\nexit 0\n";
    let two = targz(&[
        Entry::File(&project, program, 0o755),
        Entry::File("helper", program, 0o755),
        Entry::File("README.md", b"# app\n", 0o644),
    ]);
    feed.publish(goreleaser_release(&keys, "2.0.0", two));
    let reply = dir.moltd_client(&["update"]);
    let why = "cannot run: it has no bin/app (MOLTD_ENTRY), and 2 programs that could be it: app, helper; set MOLTD_ENTRY";
    if reply.code == Some(0) || !reply.stderr.contains(why) {
        running.fail(&format!("moltd update: {reply:?}"));
    }
    let doc = status(&dir);
    // Started once, never stopped: the same process still runs.
    let started = dir.read("started");
    if doc["current"] != "v1.0.0" || current(&dir) != "v1.0.0" || started.lines().count() != 1 {
        running.fail(&format!(
            "v1 did not keep running: {doc}, started: {started}"
        ));
    }
    if dir.join("app/releases/v2.0.0").exists() {
        running.fail("the refused release was installed");
    }
    let downloads = feed.server.requests_to("/dl/").len();
    let again = dir.moltd_client(&["update"]);
    if again.code != Some(0) || feed.server.requests_to("/dl/").len() != downloads {
        running.fail(&format!("the refused release was tried again: {again:?}"));
    }
}

/// `moltd -- /app/current/bin/app`: the command says what each release
/// must hold, so a flat archive works with no MOLTD_ENTRY at all.
#[test]
fn single_command_mode_takes_the_entry_from_its_command() {
    let (dir, _, _, feed) = with_flat_v1("layout_single");
    let mut running = crate::apply::single(&dir, &feed).spawn();
    running.wait_for_file("running", "1.0.0");
    if current(&dir) != "v1.0.0" {
        running.fail("v1.0.0 is not current");
    }
}
