//! Signals sent to moltd in service mode reach the process group of each
//! running service (narrowed by its `forward-signals`), never a log service
//! or a service that is down; TERM still stops the container.
//!
//! Each program below is a shell that writes the number of every signal it
//! traps to a file. The last signal sent is always 64: the kernel delivers
//! lower-numbered pending signals first and dash runs its traps in number
//! order, so once 64 is in a file every signal sent before it is too. A
//! program that must get nothing from moltd gets 64 straight from the test,
//! and then its file must hold exactly that.

use crate::util::{Mode, Moltd, Running, TestDir};
use nix::libc::{SIGHUP, SIGRTMIN, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use std::fs;

/// The signals the tests send, in the order sent (and in number order);
/// 64 last.
fn sent() -> [i32; 6] {
    [SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGRTMIN() + 3, 64]
}

/// A shell that traps every signal of [`sent`], appending its number to
/// `NAME.got`, and adds a line to `NAME.ready` once the traps are set.
fn trapper(dir: &TestDir, name: &str) -> String {
    // `wait` returns when a trapped signal arrives; the sleep, in the same
    // group, may have died of it, so start another.
    trapper_doing(dir, name, "while :; do sleep 1000 & wait $!; done")
}

/// A [`trapper`] for a log service: it reads its input to the end, as a
/// logger does, so it stops when the service it logs for is gone.
fn log_trapper(dir: &TestDir, name: &str) -> String {
    trapper_doing(
        dir,
        name,
        // A background job's input is /dev/null unless given another way.
        "exec 3<&0\ncat <&3 >/dev/null & c=$!\nwhile kill -0 $c 2>/dev/null; do wait $c; done",
    )
}

fn trapper_doing(dir: &TestDir, name: &str, body: &str) -> String {
    let d = dir.path().display();
    let traps: String = sent()
        .iter()
        .map(|s| format!("trap 'echo {s} >> {d}/{name}.got' {s}\n"))
        .collect();
    format!("#!/bin/sh\n{traps}echo $$ >> {d}/{name}.ready\n{body}\n")
}

/// Waits until `NAME.got` shows 64, the last signal sent, then checks that
/// it holds exactly `expected`, in any order.
fn expect_got(moltd: &mut Running, dir: &TestDir, name: &str, expected: &[i32]) {
    moltd.wait_for_file(&format!("{name}.got"), "64");
    let mut numbers: Vec<i32> = dir
        .read(&format!("{name}.got"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, expected, "{name}");
}

/// The host pid of the `run` started in `folder` (pids inside the namespace
/// mean nothing out here): a script called `run` working in that folder.
fn pid_running_in(folder: &std::path::Path) -> Option<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm == "run\n" && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == folder)
        })
}

/// Sends 64 to the `run` in `folder` directly and checks that it got
/// nothing else.
fn expect_nothing_from_moltd(moltd: &mut Running, dir: &TestDir, folder: &str, name: &str) {
    let folder = dir.join(folder);
    let mut pid = None;
    // A signal it should not have got may have ended it: wait for the next.
    moltd.wait_for(&format!("a run in {}", folder.display()), || {
        pid = pid_running_in(&folder);
        pid.is_some()
    });
    let pid = pid.unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { nix::libc::kill(pid, 64) }, 0, "kill {pid}");
    expect_got(moltd, dir, name, &[64]);
}

fn send_all(moltd: &mut Running) {
    for signal in sent() {
        moltd.signal(signal);
    }
}

#[test]
fn hup_usr_winch_and_realtime_reach_running_services_but_not_log_or_down_ones() {
    let dir = TestDir::new("svsignals");
    dir.script("svc/all/run", &trapper(&dir, "all"));
    dir.script("svc/all/log/run", &log_trapper(&dir, "all-log"));
    dir.script("svc/some/run", &trapper(&dir, "some"));
    dir.write(
        "svc/some/forward-signals",
        "# reload and the sentinel\nSIGUSR1\n\n64\n",
    );
    dir.script("svc/none/run", &trapper(&dir, "none"));
    dir.write("svc/none/forward-signals", "none\n");
    dir.script("svc/bad/run", &trapper(&dir, "bad"));
    dir.write("svc/bad/forward-signals", "HUP\nSIGFOO\n");
    dir.script("svc/off/run", &trapper(&dir, "off"));
    dir.write("svc/off/down", "");
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .spawn();
    for name in ["all", "all-log", "some", "none", "bad"] {
        moltd.wait_for_file(&format!("{name}.ready"), "\n");
    }
    moltd.wait_for_file(
        "moltd.stderr",
        "bad: forward-signals line 2: \"SIGFOO\" is not a signal name or number; forwarding no signals",
    );
    send_all(&mut moltd);
    expect_got(&mut moltd, &dir, "all", &sent());
    expect_got(&mut moltd, &dir, "some", &[SIGUSR1, 64]);
    expect_nothing_from_moltd(&mut moltd, &dir, "svc/all/log", "all-log");
    expect_nothing_from_moltd(&mut moltd, &dir, "svc/none", "none");
    expect_nothing_from_moltd(&mut moltd, &dir, "svc/bad", "bad");
    // The signals stopped nothing, and the down service was not started.
    for name in ["all", "some", "none", "bad"] {
        moltd.wait_for_sv(name, "run:");
    }
    moltd.wait_for_sv("off", "down:");
    assert!(!dir.join("off.ready").exists());
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}

#[test]
fn combined_mode_forwards_to_the_main_command_and_to_services() {
    let dir = TestDir::new("svsignals_combined");
    dir.script("svc/side/run", &trapper(&dir, "side"));
    let main = dir.script("main", &trapper(&dir, "main"));
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc", "--"])
        .args([main])
        .spawn();
    moltd.wait_for_file("side.ready", "\n");
    moltd.wait_for_file("main.ready", "\n");
    send_all(&mut moltd);
    expect_got(&mut moltd, &dir, "side", &sent());
    expect_got(&mut moltd, &dir, "main", &sent());
    // TERM is still the main command's: it dies of it, and moltd with it.
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(128 + SIGTERM);
}

#[test]
fn forward_signals_written_while_running_applies_without_a_restart() {
    let dir = TestDir::new("svsignals_live");
    dir.script("svc/web/run", &trapper(&dir, "web"));
    let mut moltd = Moltd::new(&dir, Mode::Pid1)
        .args(["--services", "svc"])
        .spawn();
    moltd.wait_for_file("web.ready", "\n");
    dir.write("svc/web/forward-signals", "USR1\nTERM\n");
    moltd.wait_for_file(
        "moltd.stderr",
        "web: forward-signals line 2: SIGTERM is never forwarded (it stops the container); forwarding no signals",
    );
    send_all(&mut moltd);
    expect_nothing_from_moltd(&mut moltd, &dir, "svc/web", "web");
    assert_eq!(dir.read("web.ready").lines().count(), 1, "restarted");
    moltd.signal(SIGTERM);
    moltd.wait().expect_code(0);
}
