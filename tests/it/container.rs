//! The image from `docker/Dockerfile`, built and run for real with podman:
//! moltd is PID 1 of a container, supervises the example services from
//! `services/`, serves the example app on the socket it holds (a `kill -9` of
//! the app refuses no connection), updates itself from a loopback feed
//! (`--network host`), rolls a broken release back, and `podman stop` ends
//! it gracefully within SVWAIT.
//! A second run is the pod of `docker/k8s.yaml`: a read-only root, its
//! non-root user, and only its volumes writable (`/run` in memory, `/app`
//! and `/tmp` as empty folders owned by that user, as `fsGroup` makes them),
//! probed the way the kubelet probes it.
//!
//! Needs the static binary (`MOLTD_STATIC_BIN`, set by `.ci/run`, which also
//! installs podman, runc and busybox-static) and the static example app the
//! same build makes beside it; without them the test prints why and passes. Each run builds its own image tag and container name and
//! removes both.
//!
//! Steps are separate functions over one [`Container`].

use crate::feed::{Entry, FakeAsset, FakeRelease, Feed, asset_name, targz};
use crate::manifests::{k8s_mounts, k8s_probes, k8s_user};
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

/// The static example app (`moltd-example-app`), built beside the static
/// moltd `bin` by the same `cargo build`: the image's `bin/app`.
fn example_app(bin: &Path) -> PathBuf {
    let app = bin.with_file_name("moltd-example-app");
    assert!(
        app.is_file(),
        "{} is missing: the static build of moltd makes it too",
        app.display()
    );
    app
}

/// A release of the example app at `version`: the payload the image runs,
/// as a release pipeline would archive it.
fn example_app_release(bin: &Path, version: &str) -> FakeRelease {
    app_release_with(version, &std::fs::read(example_app(bin)).unwrap())
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
/// `.dockerignore` lets through), with the static binaries in their place
/// and the app's held socket on `app_port` instead of 8080 (the container
/// shares the host's network).
fn build_context(dir: &TestDir, bin: &Path, app_port: u16) -> PathBuf {
    let context = dir.join("context");
    let target = context.join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(bin, target.join("moltd")).unwrap();
    std::fs::copy(example_app(bin), target.join("moltd-example-app")).unwrap();
    std::fs::create_dir_all(context.join("docker")).unwrap();
    for path in [
        "docker/Dockerfile",
        "docker/app",
        "docker/rootfs",
        "docker/tmp.tar.gz",
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
    let listen = context.join("services/app/listen");
    let shipped = std::fs::read_to_string(&listen).unwrap();
    let line = "\ntcp://0.0.0.0:8080\n";
    assert!(shipped.contains(line), "services/app/listen lacks {line:?}");
    let ours = shipped.replace(line, &format!("\ntcp://0.0.0.0:{app_port}\n"));
    std::fs::write(listen, ours).unwrap();
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
    /// Builds the image with the documented command (docs/container.md;
    /// under a tag of its own) and starts it detached, with the example
    /// services on free ports, `env` (`KEY=VALUE`) added and `options` given
    /// to `podman run`. Named after the test's directory, so the tests of
    /// this file can run at once.
    fn start(dir: &TestDir, bin: &Path, env: &[String], options: &[String]) -> Container {
        let unique = dir.path().file_name().unwrap().to_string_lossy();
        let id = format!("moltd-it-{unique}");
        let container = Container {
            image: format!("localhost/{id}:test"),
            name: id,
            app_port: free_port(),
            status_port: free_port(),
        };
        let context = build_context(dir, bin, container.app_port);
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
        run.extend(options.iter().map(String::as_str));
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

/// `GET path` on a port of the container from outside it, as the kubelet
/// probes a pod: the status code and the body, if it answers.
fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    ask(
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?,
        path,
    )
}

/// `GET path` on a connected `stream`: the status code and the body.
fn ask(mut stream: std::net::TcpStream, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Both example services run (`sv`, through the control socket in `/run`),
/// and the probes of `docker/k8s.yaml` pass: readiness asks the app for its
/// version (`version`), liveness asks moltd's listener on `listen_port`.
fn services_run(container: &Container, version: &str, listen_port: u16) {
    container.wait_for(
        "sv status to show both services running",
        &["sv", "status", "app", "status"],
        |out| out.lines().filter(|l| l.starts_with("run: ")).count() == 2,
    );
    let [(live, _), (ready, _)] = k8s_probes();
    let answer = probe(container.app_port, &ready);
    if answer.as_ref().map(|(code, body)| (*code, body.trim())) != Some((200, version)) {
        container.fail(&format!("readiness probe {ready}: {answer:?}"));
    }
    let answer = probe(listen_port, &live);
    if answer.as_ref().map(|(code, body)| (*code, body.trim())) != Some((200, "ok")) {
        container.fail(&format!("liveness probe {live}: {answer:?}"));
    }
}

/// The app's pid in the container, from `sv status app` (`run: app: (pid N)`).
fn app_pid(container: &Container) -> String {
    let line = container.wait_for("the app to run", &["sv", "status", "app"], |out| {
        out.starts_with("run: app: (pid ")
    });
    line.trim_start_matches("run: app: (pid ")
        .split(')')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `kill -9` of the app while requests come one after another from outside
/// the container: the kernel queues them on the socket moltd holds until
/// the restarted app takes them, so none is refused (an app binding its
/// own port refuses them until it is back). The crash comes after the
/// app has served a while, as crashes do, so moltd restarts it at once.
fn kill_9_of_the_app_refuses_nothing(container: &Container, version: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let before = app_pid(container);
    let done = AtomicBool::new(false);
    let (answered, refused) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let (mut answered, mut refused) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                match std::net::TcpStream::connect(("127.0.0.1", container.app_port)) {
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                    Err(_) => {}
                    Ok(stream) => match ask(stream, "/VERSION") {
                        Some((200, body)) if body.trim() == version => answered += 1,
                        _ => {}
                    },
                }
            }
            (answered, refused)
        });
        container.expect(&container.exec(&["kill", "-9", &before]), "kill -9");
        container.wait_for("a new app to run", &["sv", "status", "app"], |out| {
            out.starts_with("run: app: (pid ") && !out.contains(&format!("(pid {before})"))
        });
        serves(container, version);
        done.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!("kill -9 of the app: {answered} answered, {refused} refused");
    if refused != 0 || answered == 0 {
        container.fail(&format!(
            "kill -9 of the app: {answered} answered, {refused} refused"
        ));
    }
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
fn updates_itself(container: &Container, feed: &Feed, bin: &Path) {
    feed.publish(example_app_release(bin, "1.1.0"));
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

/// The env of a container that follows `feed`, checking every second,
/// with moltd's listener on `listen_port`.
fn following(feed: &Feed, listen_port: u16) -> Vec<String> {
    vec![
        "MOLTD_REPO=acme/app".to_string(),
        format!("GITHUB_API_URL={}", feed.url()),
        "MOLTD_INTERVAL=1s".to_string(),
        "MOLTD_JITTER=0s".to_string(),
        "MOLTD_HEALTH_GRACE=2s".to_string(),
        format!("MOLTD_LISTEN=0.0.0.0:{listen_port}"),
    ]
}

/// The image's `/tmp` (1777, for programs that need one) and its OCI
/// labels: where it comes from, and the moltd version it holds.
fn has_tmp_and_labels(container: &Container) {
    let tmp = container.exec(&["ls", "-ld", "/tmp"]);
    if !text(&tmp.stdout).starts_with("drwxrwxrwt") {
        container.fail(&format!("/tmp is not 1777: {tmp:?}"));
    }
    let label = |name: &str| {
        let format = format!("{{{{index .Labels \"{name}\"}}}}");
        let output = podman(&["image", "inspect", "--format", &format, &container.image]);
        text(&output.stdout).trim().to_string()
    };
    let version = label("org.opencontainers.image.version");
    let source = label("org.opencontainers.image.source");
    if version != env!("CARGO_PKG_VERSION") || !source.starts_with("https://") {
        container.fail(&format!("labels: version {version:?}, source {source:?}"));
    }
}

#[test]
fn image_updates_itself_rolls_back_and_stops_gracefully() {
    let Some(bin) = static_bin("image_updates_itself_rolls_back_and_stops_gracefully") else {
        return;
    };
    let feed = Feed::start(Vec::new());
    let dir = TestDir::new("container");
    let listen_port = free_port();
    let container = Container::start(&dir, &bin, &following(&feed, listen_port), &[]);
    services_run(&container, "0.0.0", listen_port);
    has_tmp_and_labels(&container);
    kill_9_of_the_app_refuses_nothing(&container, "0.0.0");
    updates_itself(&container, &feed, &bin);
    rolls_back_a_broken_release(&container, &feed);
    stops_gracefully(&container);
}

/// What moltd says when it cannot write where it needs to.
const CANNOT_WRITE: [&str; 3] = ["will not work", "cannot create", "Read-only file system"];

#[test]
fn image_runs_as_the_k8s_pod_read_only_non_root_with_its_volumes() {
    let test = "image_runs_as_the_k8s_pod_read_only_non_root_with_its_volumes";
    let Some(bin) = static_bin(test) else {
        return;
    };
    let feed = Feed::start(vec![example_app_release(&bin, "1.0.0")]);
    let dir = TestDir::new("container_k8s");
    let user = k8s_user();
    // Only the pod's volumes are writable: podman adds none of its own.
    let mut options: Vec<String> = ["--read-only", "--read-only-tmpfs=false", "--user", &user]
        .map(String::from)
        .to_vec();
    for (path, memory) in k8s_mounts() {
        if memory {
            options.extend(["--tmpfs".to_string(), format!("{path}:rw,mode=1777")]);
        } else {
            // An emptyDir: empty, and writable by the pod's group.
            let host = dir.join(&format!("volume{}", path.replace('/', "-")));
            std::fs::create_dir(&host).unwrap();
            let status = Command::new("chown")
                .arg(&user)
                .arg(&host)
                .status()
                .unwrap();
            assert!(status.success(), "cannot chown {}", host.display());
            options.extend(["--volume".to_string(), format!("{}:{path}", host.display())]);
        }
    }
    let listen_port = free_port();
    let container = Container::start(&dir, &bin, &following(&feed, listen_port), &options);
    // The empty /app hides the image's v0.0.0: first boot installs v1.0.0.
    wait_for_status(&container, "the first boot to install v1.0.0", |status| {
        status["current"] == "v1.0.0" && status["state"] == "idle"
    });
    services_run(&container, "1.0.0", listen_port);
    let shown = container.exec(&["moltd", "status"]);
    if !text(&shown.stdout).contains("release: v1.0.0 (previous: none)") {
        container.fail(&format!("moltd status as the pod's user: {shown:?}"));
    }
    feed.publish(example_app_release(&bin, "1.1.0"));
    wait_for_status(&container, "the update to v1.1.0", |status| {
        status["current"] == "v1.1.0" && status["previous"] == "v1.0.0"
    });
    serves(&container, "1.1.0");
    let write = container.exec(&["sh", "-c", "echo ok > /tmp/probe && cat /tmp/probe"]);
    if text(&write.stdout).trim() != "ok" {
        container.fail(&format!("/tmp is not writable: {write:?}"));
    }
    let logs = podman(&["logs", &container.name]);
    let log = text(&logs.stdout) + &text(&logs.stderr);
    if let Some(problem) = CANNOT_WRITE.iter().find(|p| log.contains(*p)) {
        container.fail(&format!("moltd could not write somewhere ({problem:?})"));
    }
    stops_gracefully(&container);
}
