//! The image from `docker/Dockerfile`, built and run for real with podman:
//! moltd is PID 1 of a container, supervises the example services from
//! `services/`, updates itself from a loopback feed (`--network host`), rolls
//! a broken release back, and `podman stop` ends it gracefully within SVWAIT.
//!
//! Needs the static binary (`MOLTD_STATIC_BIN`, set by `.ci/run`, which also
//! installs podman, runc and busybox-static); without it the test prints why
//! and passes. Each run builds its own image tag and container name and
//! removes both.
//!
//! Steps are separate functions over one [`Container`].

use crate::feed::{Entry, FakeAsset, FakeRelease, Feed, asset_name, targz};
use crate::manifests::k8s_container;
use crate::static_build::static_bin;
use crate::util::TestDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// SVWAIT inside the container; `podman stop` must finish well within it.
const SVWAIT: u64 = 7;

/// How long one podman command may take (a build included).
const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);

/// `podman ARGS`, failing the test past [`PODMAN_TIMEOUT`]. `runc` is used
/// explicitly: crun's cgroup handling fails on hosts with hybrid cgroups.
fn podman(args: &[&str]) -> Output {
    podman_in(Path::new("."), args)
}

fn podman_in(cwd: &Path, args: &[&str]) -> Output {
    let child = Command::new("podman")
        .arg("--runtime")
        .arg("runc")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run podman (is it installed?): {e}"));
    let pid = child.id() as i32;
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match wait.recv_timeout(PODMAN_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) };
            panic!("podman {args:?} took longer than {PODMAN_TIMEOUT:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The repository's own files (the Dockerfile, the services, the app).
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A free TCP port on loopback (the container shares the host's network).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A release of the example app (`docker/app`) at `version`: the payload the
/// image runs, as a release pipeline would archive it.
fn example_app_release(version: &str) -> FakeRelease {
    let app = std::fs::read(repo("docker/app/bin/app")).unwrap();
    app_release_with(version, &app)
}

/// A release at `version` whose `bin/app` is `app`.
fn app_release_with(version: &str, app: &[u8]) -> FakeRelease {
    let top = format!("app-{version}");
    let (bin, file) = (format!("{top}/bin/app"), format!("{top}/VERSION"));
    let contents = format!("{version}\n");
    let archive = targz(&[
        Entry::Dir(&top),
        Entry::File(&bin, app, 0o755),
        Entry::File(&file, contents.as_bytes(), 0o644),
    ]);
    FakeRelease::new(
        &format!("v{version}"),
        vec![FakeAsset::new(&asset_name(version), archive)],
    )
}

/// The build context `podman build` sees from the repository's root (what
/// `.dockerignore` lets through), with the static binary in its place.
fn build_context(dir: &TestDir, bin: &Path) -> PathBuf {
    let context = dir.join("context");
    let target = context.join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(bin, target.join("moltd")).unwrap();
    std::fs::create_dir_all(context.join("docker")).unwrap();
    for path in [
        "docker/Dockerfile",
        "docker/app",
        "docker/rootfs",
        "services",
    ] {
        // cp -a keeps the symlinks (sh -> busybox, sv -> moltd, current).
        let status = Command::new("cp")
            .arg("-a")
            .arg(repo(path))
            .arg(context.join(path))
            .status()
            .unwrap();
        assert!(status.success(), "cannot copy {path}");
    }
    context
}

/// A built image and a container started from it; both removed on drop.
struct Container {
    image: String,
    name: String,
    app_port: u16,
    status_port: u16,
}

impl Container {
    /// Builds the image with the README's command (under a tag of its own)
    /// and starts it detached, with the example services on free ports and
    /// `env` (`KEY=VALUE`) added.
    fn start(dir: &TestDir, bin: &Path, env: &[String]) -> Container {
        let id = format!("moltd-it-{}", std::process::id());
        let container = Container {
            image: format!("localhost/{id}:test"),
            name: id,
            app_port: free_port(),
            status_port: free_port(),
        };
        let context = build_context(dir, bin);
        let build = podman_in(
            &context,
            &[
                "build",
                "--build-context",
                "busybox=/usr/bin",
                "-f",
                "docker/Dockerfile",
                "-t",
                &container.image,
                ".",
            ],
        );
        container.expect(&build, "podman build");
        let (app, status, svwait) = (
            format!("PORT={}", container.app_port),
            format!("STATUS_PORT={}", container.status_port),
            format!("SVWAIT={SVWAIT}"),
        );
        let mut run = vec![
            "run",
            "--detach",
            "--name",
            &container.name,
            "--network",
            "host",
            // This host's sandbox may not raise rlimits (no
            // CAP_SYS_RESOURCE); podman's defaults would try.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1000:1000",
            "--env",
            &app,
            "--env",
            &status,
            "--env",
            &svwait,
            "--env",
            "MOLTD_LOG=info",
        ];
        for pair in env {
            run.extend(["--env", pair]);
        }
        run.push(&container.image);
        container.expect(&podman(&run), "podman run");
        container
    }

    /// Fails the test with the command's output and the container's log.
    fn expect(&self, output: &Output, what: &str) {
        if !output.status.success() {
            self.fail(&format!(
                "{what} failed ({}):\n{}{}",
                output.status,
                text(&output.stdout),
                text(&output.stderr)
            ));
        }
    }

    fn fail(&self, why: &str) -> ! {
        let logs = podman(&["logs", &self.name]);
        panic!(
            "{why}\n--- container log ---\n{}{}",
            text(&logs.stdout),
            text(&logs.stderr)
        );
    }

    /// `podman exec`.
    fn exec(&self, command: &[&str]) -> Output {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend(command);
        podman(&args)
    }

    /// Runs `command` in the container until its stdout satisfies `ok`.
    fn wait_for(&self, what: &str, command: &[&str], ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + crate::util::TIMEOUT;
        loop {
            let output = self.exec(command);
            let stdout = text(&output.stdout);
            if output.status.success() && ok(&stdout) {
                return stdout;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}; last: {stdout}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An HTTP GET from inside the container (busybox wget).
    fn get(&self, port: u16, path: &str) -> Output {
        self.exec(&["wget", "-qO-", &format!("http://127.0.0.1:{port}{path}")])
    }

    fn inspect(&self, format: &str) -> String {
        text(&podman(&["inspect", "--format", format, &self.name]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", "--time", "0", &self.name]);
        podman(&["rmi", "--force", &self.image]);
    }
}

/// Both example services run, and the probes of `docker/k8s.yaml` pass:
/// readiness asks the app for its version, liveness runs a command.
fn services_run(container: &Container) {
    container.wait_for(
        "sv status to show both services running",
        &["sv", "status", "app", "status"],
        |out| out.lines().filter(|l| l.starts_with("run: ")).count() == 2,
    );
    let k8s = k8s_container();
    let path = k8s["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    let ready = container.get(container.app_port, path);
    if text(&ready.stdout).trim() != "0.0.0" {
        container.fail(&format!("readiness probe {path}: {ready:?}"));
    }
    let live: Vec<&str> = k8s["livenessProbe"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    container.expect(&container.exec(&live), "the liveness probe");
}

/// The status document, as the status helper serves it.
fn status(container: &Container) -> serde_json::Value {
    let status = container.get(container.status_port, "/status.json");
    serde_json::from_slice(&status.stdout).unwrap_or_default()
}

/// Waits until the example app answers `GET /VERSION` with `version`.
fn serves(container: &Container, version: &str) {
    let url = format!("http://127.0.0.1:{}/VERSION", container.app_port);
    container.wait_for(
        &format!("the app to answer {version}"),
        &["wget", "-qO-", &url],
        |out| out.trim() == version,
    );
}

/// Waits until the status document satisfies `ok`, and returns it.
fn wait_for_status(
    container: &Container,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + crate::util::TIMEOUT;
    loop {
        let status = status(container);
        if ok(&status) {
            return status;
        }
        if Instant::now() > deadline {
            container.fail(&format!("timed out waiting for {what}; status {status}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// v1.1.0 is published: the updater inside the container (the image's
/// health check, `MOLTD_HEALTH_CMD`) switches the app over to it.
fn updates_itself(container: &Container, feed: &Feed) {
    feed.publish(example_app_release("1.1.0"));
    let status = wait_for_status(container, "the update to v1.1.0", |status| {
        status["current"] == "v1.1.0"
    });
    if status["previous"] != "v0.0.0" {
        container.fail(&format!("bad status document after the update {status}"));
    }
    serves(container, "1.1.0");
}

/// v1.2.0 crashes at start: it fails the health gate, v1.1.0 runs again and
/// v1.2.0 is marked bad.
fn rolls_back_a_broken_release(container: &Container, feed: &Feed) {
    feed.publish(app_release_with(
        "1.2.0",
        b"#!/bin/sh\necho 'app 1.2.0: broken' >&2\nexit 1\n",
    ));
    let status = wait_for_status(container, "the rollback of v1.2.0", |status| {
        status["bad_releases"] == serde_json::json!(["v1.2.0"])
    });
    let why = status["last_error"].as_str().unwrap_or_default();
    if status["current"] != "v1.1.0" || !why.contains("rolled back to v1.1.0") {
        container.fail(&format!("bad status document after the rollback {status}"));
    }
    serves(container, "1.1.0");
}

/// `podman stop` sends TERM to moltd (PID 1), which stops every service and
/// exits 0 well before SVWAIT would force anything.
fn stops_gracefully(container: &Container) {
    let started = Instant::now();
    let stop = podman(&["stop", "--time", &SVWAIT.to_string(), &container.name]);
    let took = started.elapsed();
    container.expect(&stop, "podman stop");
    if took >= Duration::from_secs(SVWAIT) {
        container.fail(&format!("podman stop took {took:?}, SVWAIT is {SVWAIT}s"));
    }
    let code = container.inspect("{{.State.ExitCode}}");
    if code != "0" {
        container.fail(&format!("exit code {code}, expected 0"));
    }
    let logs = podman(&["logs", &container.name]);
    if !text(&logs.stderr).contains("received SIGTERM, stopping all services") {
        container.fail("moltd did not log the TERM it got");
    }
}

#[test]
fn image_updates_itself_rolls_back_and_stops_gracefully() {
    let Some(bin) = static_bin("image_updates_itself_rolls_back_and_stops_gracefully") else {
        return;
    };
    let feed = Feed::start(Vec::new());
    let dir = TestDir::new("container");
    let env = [
        "MOLTD_REPO=acme/app".to_string(),
        format!("GITHUB_API_URL={}", feed.url()),
        "MOLTD_INTERVAL=1s".to_string(),
        "MOLTD_JITTER=0s".to_string(),
        "MOLTD_HEALTH_GRACE=2s".to_string(),
    ];
    let container = Container::start(&dir, &bin, &env);
    services_run(&container);
    updates_itself(&container, &feed);
    rolls_back_a_broken_release(&container, &feed);
    stops_gracefully(&container);
}
