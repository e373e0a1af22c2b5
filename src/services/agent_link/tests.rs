//! Unit tests of PID 1's link to the agent, with real processes standing in
//! for the agent and its hooks. Apart so that agent_link.rs holds only the link.

use super::*;
use crate::observe::ServiceState;
use crate::services::status::Phase;

/// A real process to stand in for an agent or a hook.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap()
}

/// A link to `pid` as to an agent that said `hello`; and the agent's end.
fn link_to(pid: i32) -> (AgentLink, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut link = AgentLink::new(None, None, None);
    link.lives = 1;
    link.life = Life::Up(Box::new(Running {
        pid,
        stream: Some(ours),
        frames: protocol::Frames::default(),
        out: Vec::new(),
        greeted: true,
        ready: true,
        since: Instant::now(),
        unanswered: BTreeMap::new(),
        waiting: BTreeSet::new(),
        killed: None,
        closed: None,
    }));
    (link, theirs)
}

#[test]
fn an_agent_that_does_not_read_its_link_is_killed_instead_of_pid1_queueing_without_bound() {
    // A real process in the agent's place, which never reads its end.
    let mut agent = sleeper();
    let (mut link, _theirs) = link_to(agent.id() as i32);
    // Snapshots that change every time, as a crash-looping service's do.
    let snapshot = |restarts| Services {
        list: (0..20)
            .map(|n| ServiceState {
                name: format!("service-with-a-long-name-{n:04}"),
                phase: Phase::CrashLoop,
                restarts,
                essential: false,
            })
            .collect(),
        shutting_down: false,
        reaped: u64::from(restarts),
    };
    let mut most = 0;
    for restarts in 0..(3 * MAX_UNREAD / 1000) as u32 {
        link.publish(snapshot(restarts));
        let Some(running) = link.running() else {
            break;
        };
        most = most.max(running.out.len());
        if running.killed.is_some() {
            break;
        }
    }
    assert!(most <= MAX_UNREAD + 2048, "{most} bytes queued");
    let running = link.running().unwrap();
    assert!(running.killed.as_deref().unwrap().contains("unread"));
    assert!(running.out.is_empty() && running.stream.is_none());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(agent.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn an_agent_asking_for_a_second_hook_while_one_runs_is_killed_instead_of_pid1_forking_again() {
    let (mut agent, mut hook) = (sleeper(), sleeper());
    let (mut link, _theirs) = link_to(agent.id() as i32);
    assert!(link.may_start_hook());
    link.hook_started(hook.id() as i32);
    assert!(!link.may_start_hook());
    let running = link.running().unwrap();
    assert!(
        running
            .killed
            .as_deref()
            .unwrap()
            .contains("asked for a hook")
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(agent.wait().unwrap().signal(), Some(libc::SIGKILL));
    // Nothing more is started for it, even once its hook is gone.
    hook.kill().unwrap();
    hook.wait().unwrap();
    link.hooks.clear();
    assert!(!link.may_start_hook());
}

#[test]
fn an_agent_that_closes_its_link_and_lives_on_is_killed_and_restarted() {
    let mut agent = sleeper();
    let (mut link, theirs) = link_to(agent.id() as i32);
    drop(theirs);
    // A test forking meanwhile holds a copy of that end until its exec:
    // wait for the end of file as the loop does, by polling.
    let until = Instant::now() + Duration::from_secs(30);
    while link.serving() && Instant::now() < until {
        if let Some((fd, _)) = link.fd() {
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
        }
        assert!(link.read().is_empty());
    }
    assert!(!link.serving());
    // The loop sleeps until the deadline, then ticks.
    let deadline = link
        .deadline()
        .expect("no deadline for an agent gone quiet");
    assert!(deadline <= Instant::now() + WATCHDOG);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let devnull = File::open("/dev/null").unwrap();
    link.tick(&Inherited::clean_slate(), devnull.as_fd());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(agent.wait().unwrap().signal(), Some(libc::SIGKILL));
    let running = link.running().unwrap();
    assert!(running.killed.as_deref().unwrap().contains("did not exit"));
    assert_eq!(link.deadline(), None);
}
