//! PID 1 replaces itself (`moltd self-update`): services keep their pids and
//! sockets, refusals change nothing, a crash at any step leaves a moltd
//! supervising everything, and the boot record survives a container
//! restart. "Newer" and "older" binaries are copies of the test binary with
//! a `<copy>.version` file (read by test builds only, see `src/version.rs`).

use crate::held_sockets::{Got, app_service, free_port, get, pid_of};
use crate::util::{Client, Mode, Moltd, Running, TestDir, process_state};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A copy of the test binary that says it is `version`.
fn moltd_copy(dir: &TestDir, name: &str, version: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(crate::util::moltd_bin(), &path).unwrap();
    fs::write(dir.join(&format!("{name}.version")), version).unwrap();
    path
}

/// A service that says a numbered line every 50 ms, through a `log/`.
fn ticker(dir: &TestDir) {
    dir.script(
        "svc/ticker/run",
        "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done\n",
    );
    dir.script(
        "svc/ticker/log/run",
        "#!/bin/sh\nwhile read -r line; do echo \"logged $line\"; done\n",
    );
}

fn plain(dir: &TestDir, name: &str) {
    dir.script(&format!("svc/{name}/run"), "#!/bin/sh\nexec sleep 1000\n");
}

fn start(dir: &TestDir) -> Running<'_> {
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_LOG", "info")
        .spawn()
}

/// `moltd status`: each service's state and pid, once every one listed
/// runs and is ready.
fn statuses(moltd: &mut Running, dir: &TestDir, count: usize) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    moltd.wait_for(&format!("{count} services to run and be ready"), || {
        let out = dir.moltd_client(&["status"]).stdout;
        rows = rows_of(&out);
        rows.len() == count
            && out
                .lines()
                .skip(1)
                .all(|l| l.split_whitespace().nth(2) == Some("yes"))
    });
    rows
}

/// The pid, as the test sees it, of moltd's child whose pid in the
/// namespace is `inner` (what `moltd status` shows).
fn host_pid(moltd: &mut Running, inner: &str) -> i32 {
    let moltd = moltd.moltd_pid();
    let children = fs::read_to_string(format!("/proc/{moltd}/task/{moltd}/children")).unwrap();
    children
        .split_whitespace()
        .find(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                == Some(inner)
        })
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no child of moltd is {inner} in its namespace"))
}

fn exe(moltd: &mut Running) -> PathBuf {
    let pid = moltd.moltd_pid();
    fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn self_update(dir: &TestDir, args: &[&str]) -> Client {
    let mut all = vec!["self-update"];
    all.extend(args);
    dir.moltd_client(&all)
}

fn socket_fds(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

/// Requests one after another until `stop`; returns (answered, failures).
fn load(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut answered, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match get(port, "/") {
                Got::Answer(_) => answered += 1,
                Got::Refused => failed.push("refused".to_owned()),
                Got::Failed(err) => failed.push(err.to_string()),
            }
        }
        (answered, failed)
    })
}

#[test]
fn self_update_keeps_every_pid_socket_and_pipe_and_moltd_answers_after() {
    let dir = TestDir::new("reexec-keeps");
    let port = free_port();
    app_service(&dir, "web", "inherit");
    dir.write("svc/web/listen", &format!("tcp://127.0.0.1:{port}\n"));
    ticker(&dir);
    plain(&dir, "idle");
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let mut moltd = start(&dir);
    let before = statuses(&mut moltd, &dir, 4);
    let web_pid = before.iter().find(|r| r.0 == "web").unwrap().2.clone();
    let held = socket_fds(host_pid(&mut moltd, &web_pid));
    moltd.wait_for("the app to answer", || {
        matches!(get(port, "/"), Got::Answer(_))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let requests = load(port, stop.clone());

    let reply = self_update(&dir, &[newer.to_str().unwrap()]);
    assert_eq!(reply.code, Some(0), "{reply:?}");
    assert!(
        reply.stdout.contains("moltd 9.0.0 replaced moltd 0.1.0"),
        "{reply:?}"
    );

    // The same programs, all running and ready, answering sv and status.
    assert_eq!(statuses(&mut moltd, &dir, 4), before);
    assert!(dir.sv(&["status", "web"]).stdout.starts_with("run:"));
    assert!(exe(&mut moltd).ends_with("app/.moltd/bin/moltd-9.0.0"));
    // PID 1 still holds the app's listening socket, the same inode.
    let moltd_pid = moltd.moltd_pid();
    assert!(
        held.iter().any(|s| socket_fds(moltd_pid).contains(s)),
        "{held:?}"
    );
    // The log pipes still carry output: new lines after the resume.
    let seen = dir.read("moltd.stdout").matches("logged tick").count();
    moltd.wait_for("new log lines", || {
        dir.read("moltd.stdout").matches("logged tick").count() > seen + 3
    });
    // And back to the older build, forced.
    let older = moltd_copy(&dir, "moltd-old", "0.0.9");
    let reply = self_update(&dir, &["--force", older.to_str().unwrap()]);
    assert_eq!(reply.code, Some(0), "{reply:?}");
    assert!(exe(&mut moltd).ends_with("app/.moltd/bin/moltd-0.0.9"));
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = requests.join().unwrap();
    assert!(answered > 0);
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}",
        failed.len()
    );
    // A restart of the app (not under load: python drops what it accepted
    // when killed) gets the held socket from the new PID 1.
    let answered_by = || match get(port, "/") {
        Got::Answer(body) => pid_of(&body).to_owned(),
        _ => String::new(),
    };
    assert!(dir.sv(&["restart", "web"]).code == Some(0));
    moltd.wait_for("the restarted app to answer", || {
        let pid = answered_by();
        !pid.is_empty() && pid != web_pid
    });
}

#[test]
fn the_agent_is_started_again_on_the_new_binary() {
    let dir = TestDir::new("reexec-agent");
    plain(&dir, "idle");
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let port = free_port();
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_LISTEN", format!("127.0.0.1:{port}"))
        .spawn();
    let before = statuses(&mut moltd, &dir, 1);
    let agent = moltd.agent_pid(None);
    let reply = self_update(&dir, &[newer.to_str().unwrap()]);
    assert_eq!(reply.code, Some(0), "{reply:?}");
    let new_agent = moltd.agent_pid(Some(agent));
    let agent_exe = fs::read_link(format!("/proc/{new_agent}/exe")).unwrap();
    assert!(
        agent_exe.ends_with("app/.moltd/bin/moltd-9.0.0"),
        "{agent_exe:?}"
    );
    moltd.wait_for("the old agent to be gone", || {
        process_state(agent).is_none()
    });
    assert_eq!(statuses(&mut moltd, &dir, 1), before);
}

/// Waits in the gap (`resume:hold`) until the test says go.
fn held_in_the_gap(dir: &TestDir) -> Running<'_> {
    Moltd::new(dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_TEST_CRASH_AT", "resume:hold")
        .spawn()
}

#[test]
fn a_child_that_dies_during_the_exec_is_reaped_and_restarted() {
    let dir = TestDir::new("reexec-zombie");
    plain(&dir, "idle");
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let mut moltd = held_in_the_gap(&dir);
    let before = statuses(&mut moltd, &dir, 1);
    let inner = before[0].2.clone();
    let pid = host_pid(&mut moltd, &inner);
    let mut client = dir.moltd_client_background(&["self-update", newer.to_str().unwrap()]);
    let pid1 = moltd.moltd_pid();
    moltd.wait_for("the new moltd to be in the gap", || {
        fs::read_link(format!("/proc/{pid1}/exe")).is_ok_and(|e| e.ends_with("moltd-9.0.0"))
    });
    // Dies while nobody reaps: a zombie until the new moltd runs.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    moltd.wait_for("the service to be a zombie", || {
        process_state(pid) == Some('Z')
    });
    fs::write(dir.join("app/resume.go"), "").unwrap();
    crate::util::wait_child(&mut client, "the self-update client");
    moltd.wait_for("the zombie to be reaped", || process_state(pid).is_none());
    moltd.wait_for("the service to run again", || {
        let rows = statuses_now(&dir);
        rows.len() == 1 && rows[0].1 == "run" && rows[0].2 != inner
    });
}

fn statuses_now(dir: &TestDir) -> Vec<(String, String, String)> {
    rows_of(&dir.moltd_client(&["status"]).stdout)
}

/// Name, state and pid of each row of `moltd status`.
fn rows_of(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn a_sigterm_sent_during_the_exec_is_not_lost() {
    let dir = TestDir::new("reexec-sigterm");
    plain(&dir, "idle");
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let mut moltd = held_in_the_gap(&dir);
    statuses(&mut moltd, &dir, 1);
    let mut client = dir.moltd_client_background(&["self-update", newer.to_str().unwrap()]);
    let pid1 = moltd.moltd_pid();
    moltd.wait_for("the new moltd to be in the gap", || {
        fs::read_link(format!("/proc/{pid1}/exe")).is_ok_and(|e| e.ends_with("moltd-9.0.0"))
    });
    moltd.signal(nix::libc::SIGTERM);
    fs::write(dir.join("app/resume.go"), "").unwrap();
    crate::util::wait_child(&mut client, "the self-update client");
    let finished = moltd.wait();
    finished.expect_code(0);
}

/// Nothing changed: the same binary, the same pids, no boot record.
fn unchanged(moltd: &mut Running, dir: &TestDir, before: &[(String, String, String)]) {
    assert_eq!(&statuses(moltd, dir, before.len()), before);
    assert_eq!(exe(moltd), crate::util::moltd_bin());
    assert!(!dir.join("app/.moltd/bin/current").exists());
}

#[test]
fn bad_binaries_are_refused_with_the_reason_and_nothing_changes() {
    let dir = TestDir::new("reexec-refusals");
    plain(&dir, "idle");
    let mut moltd = start(&dir);
    let before = statuses(&mut moltd, &dir, 1);
    let refused = |file: &Path, force: bool, why: &str| {
        let mut args = vec![];
        if force {
            args.push("--force");
        }
        args.push(file.to_str().unwrap());
        let reply = self_update(&dir, &args);
        assert_eq!(reply.code, Some(1), "{file:?}: {reply:?}");
        assert!(
            reply.stderr.contains(why),
            "{file:?}: expected {why:?} in {reply:?}"
        );
    };
    let not_executable = moltd_copy(&dir, "not-executable", "9.0.0");
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    refused(&not_executable, true, "is not executable");
    let script = dir.script("script", "#!/bin/sh\necho moltd-self-test\n");
    refused(&script, true, "is not an ELF executable");
    let other_machine = moltd_copy(&dir, "other-machine", "9.0.0");
    let mut bytes = fs::read(&other_machine).unwrap();
    bytes[18] ^= 0x7f;
    fs::write(&other_machine, bytes).unwrap();
    refused(&other_machine, true, "is for another machine");
    let fails = dir.join("fails");
    fs::copy("/bin/false", &fails).unwrap();
    refused(&fails, true, "its self-test failed (exit code 1)");
    let older = moltd_copy(&dir, "older", "0.0.1");
    refused(
        &older,
        false,
        "moltd 0.0.1 is not newer than the running 0.1.0",
    );
    let same = dir.join("same");
    fs::copy(crate::util::moltd_bin(), &same).unwrap();
    refused(&same, false, "is not newer than the running 0.1.0");
    refused(&dir.join("missing"), true, "cannot read");
    unchanged(&mut moltd, &dir, &before);
}

#[test]
fn a_self_test_that_hangs_is_killed_and_refused() {
    let dir = TestDir::new("reexec-hangs");
    plain(&dir, "idle");
    let mut moltd = start(&dir);
    let before = statuses(&mut moltd, &dir, 1);
    // `yes self-test 0.1.0` writes until its pipe is full, then blocks.
    let hangs = dir.join("hangs");
    fs::copy("/usr/bin/yes", &hangs).unwrap();
    let reply = self_update(&dir, &["--force", hangs.to_str().unwrap()]);
    assert_eq!(reply.code, Some(1), "{reply:?}");
    assert!(
        reply
            .stderr
            .contains("did not finish within 10s and was killed"),
        "{reply:?}"
    );
    unchanged(&mut moltd, &dir, &before);
    assert!(statuses_now(&dir).iter().all(|r| r.1 == "run"));
}

/// A self-update with `MOLTD_TEST_CRASH_AT=step` fails, saying `why`, and
/// leaves the same moltd supervising the same processes: a restart works
/// and the logger still logs.
fn crash_at(step: &str, why: &str) {
    let dir = TestDir::new("reexec-crash");
    plain(&dir, "idle");
    ticker(&dir);
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .env("MOLTD_APP_DIR", dir.join("app"))
        .env("MOLTD_TEST_CRASH_AT", step)
        .spawn();
    let before = statuses(&mut moltd, &dir, 3);
    let reply = self_update(&dir, &[newer.to_str().unwrap()]);
    assert_eq!(reply.code, Some(1), "{step}: {reply:?}");
    assert!(
        reply.stderr.contains(why) && reply.stderr.contains(step),
        "{step}: {reply:?}"
    );
    unchanged(&mut moltd, &dir, &before);
    assert_eq!(dir.sv(&["restart", "idle"]).code, Some(0));
    let seen = dir.read("moltd.stdout").matches("logged tick").count();
    moltd.wait_for("new log lines", || {
        dir.read("moltd.stdout").matches("logged tick").count() > seen + 3
    });
}

#[test]
fn a_crash_before_the_exec_leaves_the_old_moltd() {
    for step in ["self-update:freeze", "self-update:keep", "self-update:exec"] {
        crash_at(step, "MOLTD_TEST_CRASH_AT=");
    }
}

#[test]
fn a_new_moltd_that_crashes_while_resuming_falls_back_to_the_previous_one() {
    for step in ["resume:read", "resume:adopt", "resume:agent", "resume:loop"] {
        crash_at(step, "the new moltd panicked");
    }
}

#[test]
fn a_container_restart_runs_the_recorded_newer_moltd() {
    let dir = TestDir::new("reexec-boot");
    plain(&dir, "idle");
    let newer = moltd_copy(&dir, "moltd-new", "9.0.0");
    let mut moltd = start(&dir);
    statuses(&mut moltd, &dir, 1);
    assert_eq!(self_update(&dir, &[newer.to_str().unwrap()]).code, Some(0));
    moltd.signal(nix::libc::SIGTERM);
    moltd.wait().expect_code(0);
    let mut moltd = start(&dir);
    statuses(&mut moltd, &dir, 1);
    assert!(exe(&mut moltd).ends_with("app/.moltd/bin/moltd-9.0.0"));
    assert_eq!(dir.read("app/.moltd/bin/tries").trim(), "0");
}

#[test]
fn a_recorded_moltd_that_never_comes_up_twice_gives_way_to_the_image_s() {
    let dir = TestDir::new("reexec-boot-fails");
    plain(&dir, "idle");
    let bin = dir.join("app/.moltd/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/false", bin.join("moltd-9.9.9")).unwrap();
    std::os::unix::fs::symlink("moltd-9.9.9", bin.join("current")).unwrap();
    for tries in 1..=2 {
        start(&dir).wait().expect_code(1);
        assert_eq!(dir.read("app/.moltd/bin/tries").trim(), tries.to_string());
    }
    let mut moltd = start(&dir);
    statuses(&mut moltd, &dir, 1);
    assert_eq!(exe(&mut moltd), crate::util::moltd_bin());
    moltd.wait_for_file("moltd.stderr", "the recorded moltd 9.9.9 (");
    assert!(
        dir.read("moltd.stderr")
            .contains("did not come up in 2 starts")
    );
}
