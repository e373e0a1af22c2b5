//! The update agent as a process of its own beside PID 1: killed, stopped,
//! starved of memory or cut short at every update step, it is restarted
//! and reported while PID 1 and the services go on, and `current` stays
//! on one whole release.

use crate::apply::{
    App, current, moltd, release, served, setup, ship, status, v1_and_v2, wait_for_state,
};
use crate::feed::Feed;
use crate::util::{Mode, Moltd, Running, TestDir};
use std::time::{Duration, Instant};

/// v1 installed as an image ships it (`current` included), v2 in the feed.
fn shipped_v1(name: &str) -> (TestDir, u16, Feed) {
    let (dir, port) = setup(name);
    ship(&dir, "1.0.0");
    std::os::unix::fs::symlink("releases/v1.0.0", dir.join("app/current")).unwrap();
    (dir, port, v1_and_v2())
}

/// The pid of service `name`, from `sv status`.
pub(crate) fn service_pid(running: &mut Running, name: &str) -> String {
    let line = running.wait_for_sv(name, "run:");
    line.split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_default()
        .to_owned()
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { nix::libc::kill(pid, signal) };
}

/// v1 installed and serving, the agent idle.
fn serving_v1(name: &str) -> (TestDir, u16, Feed) {
    let (dir, port) = setup(name);
    (dir, port, Feed::start(vec![release("1.0.0", App::Good)]))
}

#[test]
fn a_killed_idle_agent_is_restarted_and_the_services_keep_running() {
    let (dir, port, feed) = serving_v1("agent_killed_idle");
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    let web = service_pid(&mut running, "web");
    let moltd_pid = running.moltd_pid();
    let agent = running.agent_pid(None);
    kill(agent, nix::libc::SIGKILL);
    let again = running.agent_pid(Some(agent));
    running.wait_for("the restart to be logged", || {
        dir.read("moltd.stderr").contains(
            "the update agent stopped: killed by SIGKILL (out of memory?); restarting it in 1s",
        )
    });
    if service_pid(&mut running, "web") != web || running.moltd_pid() != moltd_pid {
        running.fail("a kill of the agent touched PID 1 or the services");
    }
    // The new agent's very first answer knows the installed release (not
    // "first boot" until it has looked again).
    let mut first = String::new();
    running.wait_for("the new agent to answer moltd status", || {
        first = dir.moltd_client(&["status"]).stdout;
        !first.contains("update agent")
    });
    if !first.contains("release: v1.0.0") || first.contains("first boot") {
        running.fail(&format!("the new agent's first status: {first}"));
    }
    if running.agent_pid(None) != again || served(port).as_deref() != Some("1.0.0") {
        running.fail("the restarted agent did not stay, or the app stopped serving");
    }
}

#[test]
fn a_stopped_agent_is_killed_by_the_watchdog_and_the_client_hears_why() {
    let (dir, port, feed) = serving_v1("agent_watchdog");
    let mut running = moltd(&dir, &feed, Mode::Pid1).spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    let web = service_pid(&mut running, "web");
    let agent = running.agent_pid(None);
    kill(agent, nix::libc::SIGSTOP);
    let asked = Instant::now();
    let reply = dir.moltd_client(&["update", "--check"]);
    let took = asked.elapsed();
    // The watchdog's 3 s, and a generous margin for a busy machine.
    if reply.code == Some(0)
        || !reply
            .stderr
            .contains("it did not answer a request within 3s")
        || took > Duration::from_secs(4)
    {
        running.fail(&format!("moltd update --check after {took:?}: {reply:?}"));
    }
    let again = running.agent_pid(Some(agent));
    if service_pid(&mut running, "web") != web {
        running.fail("the watchdog touched the services");
    }
    running.wait_for("the new agent to answer", || {
        dir.moltd_client(&["update", "--check"]).code == Some(0)
    });
    if running.agent_pid(None) != again {
        running.fail("the agent was restarted again");
    }
}

#[test]
fn an_agent_over_its_memory_limit_is_reported_and_the_installed_release_runs() {
    let (dir, port, feed) = shipped_v1("agent_memory");
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_AGENT_MEMORY", "4M")
        .spawn();
    // It never gets to `ready`: after three tries the services start on
    // the installed release anyway.
    running.wait_for("v1 to serve without the agent", || {
        served(port).as_deref() == Some("1.0.0")
    });
    let log = dir.read("moltd.stderr");
    if !log.contains("the update agent failed 3 times before installing a release; starting the services on the installed release v1.0.0") {
        running.fail("the log does not say why the services started");
    }
    // Backoff grows: 1, 2, 4 s. While it waits, every surface says why.
    running.wait_for("a restart 4 s away", || {
        dir.read("moltd.stderr").contains("restarting it in 4s")
    });
    let reply = dir.moltd_client(&["update", "--check"]);
    if reply.code == Some(0) || !reply.stderr.contains("the update agent is not running (") {
        running.fail(&format!("moltd update --check: {reply:?}"));
    }
    let reply = dir.moltd_client(&["status"]);
    if !reply
        .stdout
        .contains("update: the update agent is not running (")
    {
        running.fail(&format!("moltd status: {reply:?}"));
    }
    if current(&dir) != "v1.0.0" || served(port).as_deref() != Some("1.0.0") {
        running.fail("the installed release stopped");
    }
}

/// The agent killed on entering `state` (PID 1 lives on): the next agent
/// puts back what it left, and the update completes.
fn agent_killed_at(state: &str) {
    let (dir, port, feed) = shipped_v1(&format!("agent_kill_{state}"));
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_TEST_CRASH_AT", state)
        .spawn();
    let moltd_pid = running.moltd_pid();
    let first = running.agent_pid(None);
    running.wait_for(&format!("the agent to be killed at {state}"), || {
        dir.read("moltd.stderr")
            .contains(&format!("MOLTD_TEST_CRASH_AT={state}: killing moltd"))
    });
    running.agent_pid(Some(first));
    if let Some(tag) = crate::apply::not_whole(&dir) {
        running.fail(&format!("after a kill at {state}, current is {tag:?}"));
    }
    wait_for_state(&mut running, &dir, "completed");
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    running.wait_for_sv("web", "run:");
    if running.moltd_pid() != moltd_pid || current(&dir) != "v2.0.0" {
        running.fail(&format!("PID 1 did not survive at {state}"));
    }
    if status(&dir)["current"] != "v2.0.0" {
        running.fail("the status does not name v2");
    }
    running.signal(nix::libc::SIGTERM);
    running.wait();
}

#[test]
fn the_agent_killed_at_every_step_leaves_one_whole_release_and_the_services_running() {
    for state in crate::apply::UPDATE_STEPS {
        agent_killed_at(state);
    }
}

#[test]
fn moltd_agent_by_hand_refuses() {
    let out = std::process::Command::new(crate::util::moltd_bin())
        .arg("agent")
        .env_remove("MOLTD_AGENT_FDS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains("not a command to run by hand") {
        panic!("moltd agent by hand: {:?} {stderr}", out.status);
    }
    // Not in the help either.
    let help = std::process::Command::new(crate::util::moltd_bin())
        .arg("--help")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&help.stdout).contains("agent") {
        panic!("moltd --help mentions the agent");
    }
}

#[test]
fn the_hooks_of_a_killed_agent_are_killed_and_its_client_hears_why() {
    let (dir, port, feed) = shipped_v1("agent_hooks");
    let hook = dir.script(
        "pre-update",
        &format!(
            "#!/bin/sh\necho $$ >> {}/hook-pids\nexec sleep 1000\n",
            dir.path().display()
        ),
    );
    // Checks only on its own: the update is the client's.
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_MODE", "check")
        .env("MOLTD_PRE_UPDATE", hook)
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, &dir, "idle");
    let client = dir.moltd_client_background(&["update"]);
    running.wait_for("the pre-update hook to run", || {
        !std::fs::read_to_string(dir.join("hook-pids"))
            .unwrap_or_default()
            .is_empty()
    });
    // The hook's pid is the namespace's: find it from outside, once it
    // has exec'd sleep (it writes its pid just before).
    let inside = dir.read("hook-pids").trim().to_owned();
    let find = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find(|entry| {
                let status =
                    std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                cmdline == b"sleep\x001000\x00"
                    && status
                        .lines()
                        .any(|l| l.starts_with("NSpid:") && l.ends_with(&format!("\t{inside}")))
            })
            .map(|entry| entry.path())
    };
    let mut hook = None;
    running.wait_for("the hook to exec sleep", || {
        hook = find();
        hook.is_some()
    });
    let hook = hook.unwrap();
    let agent = running.agent_pid(None);
    kill(agent, nix::libc::SIGKILL);
    running.wait_for("the hook to be killed and reaped", || !hook.exists());
    let reply = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&reply.stderr);
    if reply.status.success()
        || !stderr.contains("the update agent stopped before answering (killed by SIGKILL")
    {
        running.fail(&format!("moltd update: {:?} {stderr}", reply.status));
    }
    running.agent_pid(Some(agent));
    if served(port).as_deref() != Some("1.0.0") || current(&dir) != "v1.0.0" {
        running.fail("v1 stopped with the agent");
    }
}

#[test]
fn the_agent_runs_confined_as_its_user_and_still_updates() {
    let (dir, port, feed) = shipped_v1("agent_user");
    // A status file where that user may write (the test dir is root's).
    std::fs::create_dir(dir.join("run")).unwrap();
    std::os::unix::fs::chown(dir.join("run"), Some(65534), Some(65534)).unwrap();
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_AGENT_USER", "65534")
        .env("MOLTD_STATUS_FILE", dir.join("run/status.json"))
        .spawn();
    let agent = running.agent_pid(None);
    let field = |name: &str| {
        let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    // It confines itself right after reading its settings.
    running.wait_for("the agent to run as uid 65534", || {
        field("Uid:") == "65534 65534 65534 65534"
    });
    if field("NoNewPrivs:") != "1" || field("Groups:") != "65534" {
        running.fail("the agent kept privileges");
    }
    // It got the app dir first, and updates as that user.
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(dir.join("app/releases/v2.0.0")).unwrap(),
    );
    if owner != 65534 || current(&dir) != "v2.0.0" {
        running.fail(&format!(
            "v2 is owned by {owner}, current is {}",
            current(&dir)
        ));
    }
}

#[test]
fn the_metrics_keep_moltds_uptime_across_an_agent_restart() {
    let dir = TestDir::new("agent_uptime");
    let listen = crate::apply::free_port();
    let mut running = crate::observe::listening(&dir, listen).spawn();
    let metric = |name: &str| {
        let (_, text) = crate::observe::http(listen, "GET", "/metrics", None)?;
        crate::observe::parse_metrics(&text).get(name).copied()
    };
    running.wait_for("an uptime of 2 s", || {
        metric("moltd_uptime_seconds").is_some_and(|s| s >= 2.0)
    });
    let agent = running.agent_pid(None);
    kill(agent, nix::libc::SIGKILL);
    running.agent_pid(Some(agent));
    running.wait_for("the new agent to serve", || {
        metric("moltd_agent_resident_memory_bytes").is_some()
    });
    let uptime = metric("moltd_uptime_seconds").unwrap_or(0.0);
    let pid1 = metric("moltd_resident_memory_bytes").unwrap_or(0.0);
    if uptime < 2.0 || pid1 <= 0.0 {
        running.fail(&format!(
            "after the agent's restart: uptime {uptime}, PID 1's RSS {pid1}"
        ));
    }
}

#[test]
fn an_agent_killed_in_the_first_boots_gate_is_followed_by_one_that_installs() {
    let (dir, port) = setup("agent_first_boot_killed");
    let feed = v1_and_v2();
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_TEST_CRASH_AT", "health_check")
        .spawn();
    let first = running.agent_pid(None);
    running.wait_for("the agent to be killed in the gate", || {
        dir.read("moltd.stderr")
            .contains("MOLTD_TEST_CRASH_AT=health_check: killing moltd")
    });
    running.agent_pid(Some(first));
    // Its web ran from the release the next agent removed: it is stopped,
    // then started on the one installed again.
    running.wait_for("v2 to serve", || served(port).as_deref() == Some("2.0.0"));
    let doc = wait_for_state(&mut running, &dir, "idle");
    if doc["current"] != "v2.0.0" || current(&dir) != "v2.0.0" {
        running.fail(&format!("the first boot did not end on v2: {doc}"));
    }
    running.wait_for_sv("web", "run:");
}

#[test]
fn bad_agent_settings_fail_at_start_and_config_shows_them() {
    let dir = TestDir::new("agent_settings");
    Moltd::new(&dir, Mode::Child)
        .env("MOLTD_AGENT_MEMORY", "lots")
        .args(["--services", "services"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("bad MOLTD_AGENT_MEMORY \"lots\"");
    Moltd::new(&dir, Mode::Child)
        .env("MOLTD_AGENT_USER", "65534:x")
        .args(["config"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("bad MOLTD_AGENT_USER");
    let config = Moltd::new(&dir, Mode::Child)
        .env("MOLTD_AGENT_MEMORY", "512M")
        .args(["config"])
        .run();
    config.expect_code(0);
    // The names are padded to the longest one's width, whatever it is.
    let line = config
        .stdout
        .lines()
        .find(|l| l.starts_with("MOLTD_AGENT_MEMORY "));
    if !line.is_some_and(|l| l.contains(" = 512M ")) {
        config.fail("MOLTD_AGENT_MEMORY = 512M not shown");
    }
}
