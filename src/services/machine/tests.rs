use super::*;
use crate::init::policy;
use crate::services::control::Op;
use crate::services::scan::{Part, Readiness, SignalSet};
use crate::services::status::Phase;
use nix::libc;
use std::path::PathBuf;

mod ready;

pub(super) const SVWAIT: Duration = Duration::from_secs(7);
pub(super) const READY_GRACE: Duration = Duration::from_secs(1);

pub(super) fn settings() -> Settings {
    Settings {
        svwait: SVWAIT,
        backoff_max: Duration::from_secs(4),
        ready_grace: READY_GRACE,
    }
}

pub(super) fn part() -> Part {
    Part {
        down: false,
        finish: false,
        down_signal: libc::SIGTERM,
        down_signal_problem: None,
        readiness: Readiness::Grace,
        readiness_problem: None,
    }
}

pub(super) fn def(name: &str) -> Definition {
    Definition {
        name: name.into(),
        dir: PathBuf::from("/svc").join(name),
        main: part(),
        log: None,
        essential: false,
        forward_signals: SignalSet::forwardable(),
        forward_signals_problem: None,
        listen: Ok(Vec::new()),
    }
}

pub(super) fn listing(defs: &[Definition]) -> Event {
    Event::Scanned(Ok(Listing {
        services: defs.to_vec(),
        ..Listing::default()
    }))
}

pub(super) fn spawn(name: &str, which: Which, program: Program) -> Action {
    Action::Spawn {
        service: name.into(),
        which,
        program,
    }
}

pub(super) fn spawned(name: &str, which: Which, program: Program, pid: i32) -> Event {
    Event::Spawned {
        service: name.into(),
        which,
        program,
        result: Ok(pid),
    }
}

pub(super) fn exited(pid: i32, status: ExitStatus, group_alive: bool) -> Event {
    Event::Exited {
        pid,
        status,
        group_alive,
    }
}

pub(super) fn signal(target: i32, signal: i32) -> Action {
    Action::Signal { target, signal }
}

pub(super) fn request(op: Op, name: &str, wait: Option<u64>) -> Event {
    Event::Command {
        client: ClientId::Socket(9),
        request: Request {
            op,
            names: vec![name.into()],
            wait: wait.map(Duration::from_secs),
            kill_on_timeout: false,
        },
    }
}

/// A supervisor running `defs`, each main `run` started with pids 100,
/// 101, ... in name order.
pub(super) fn running(t0: Instant, defs: &[Definition]) -> Supervisor {
    let mut sup = Supervisor::new(settings());
    sup.step(t0, listing(defs));
    for (i, d) in defs.iter().enumerate() {
        sup.step(
            t0,
            spawned(&d.name, Which::Main, Program::Run, 100 + i as i32),
        );
    }
    sup
}

pub(super) fn answers(actions: &[Action]) -> Vec<Answer> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Reply { answers, .. } => Some(answers.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A main command with pid `pid`, forwarding to its group.
pub(super) fn main_command(pid: i32) -> Forwarder {
    Forwarder::new(main_rules(), pid)
}

/// How [`main_command`] forwards.
pub(super) fn main_rules() -> policy::Rules {
    policy::Rules {
        delivery: policy::Delivery::Group,
        job_control: policy::JobControl::ForwardThenStop,
        rewrites: Vec::new(),
        success_codes: Vec::new(),
        term_group_on_exit: true,
        forward_faults: false,
    }
}

#[test]
fn new_services_start_unless_down() {
    let t0 = Instant::now();
    let mut lazy = def("lazy");
    lazy.main.down = true;
    let mut sup = Supervisor::new(settings());
    assert_eq!(
        sup.step(t0, listing(&[def("web"), lazy])),
        vec![spawn("web", Which::Main, Program::Run)]
    );
    assert_eq!(sup.next_deadline(), None, "idle means no timer");
}

#[test]
fn quick_deaths_back_off_exponentially_up_to_the_cap() {
    let t0 = Instant::now();
    let mut sup = running(t0, &[def("a")]);
    let mut now = t0;
    let mut pid = 100;
    // Delays after each quick death: 1 s (runit's minimum), then
    // doubling up to the 4 s cap.
    for (n, delay) in [1u64, 2, 4, 4].into_iter().enumerate() {
        now += Duration::from_millis(100);
        let actions = sup.step(now, exited(pid, ExitStatus::Exited(1), false));
        assert_eq!(actions, vec![], "death {n}");
        let phase = sup.status_of("a", now).unwrap().main.phase;
        let expected = if n == 0 {
            Phase::Backoff
        } else {
            Phase::CrashLoop
        };
        assert_eq!(phase, expected, "death {n}");
        let due = sup.next_deadline().unwrap();
        let wanted = now + Duration::from_secs(delay);
        assert_eq!(due, wanted, "death {n}");
        assert_eq!(
            sup.step(due - Duration::from_millis(1), Event::Tick),
            vec![]
        );
        assert_eq!(
            sup.step(due, Event::Tick),
            vec![spawn("a", Which::Main, Program::Run)]
        );
        now = due;
        pid += 1;
        sup.step(now, spawned("a", Which::Main, Program::Run, pid));
    }
    // A run that stayed up resets the count: restart at once.
    now += STABLE;
    assert_eq!(
        sup.step(now, exited(pid, ExitStatus::Exited(1), false)),
        vec![spawn("a", Which::Main, Program::Run)]
    );
}

#[test]
fn leftovers_are_stopped_before_finish_runs_with_runits_arguments() {
    let t0 = Instant::now();
    let mut d = def("a");
    d.main.finish = true;
    d.main.down_signal = libc::SIGQUIT;
    let mut sup = running(t0, &[d]);
    let t1 = t0 + STABLE;
    assert_eq!(
        sup.step(t1, exited(100, ExitStatus::Signaled(libc::SIGSEGV), true)),
        vec![signal(-100, libc::SIGQUIT), signal(-100, libc::SIGCONT)]
    );
    assert_eq!(sup.lingering_groups(), vec![100]);
    assert_eq!(sup.status_of("a", t1).unwrap().main.phase, Phase::Stopping);
    assert_eq!(
        sup.step(t1, Event::GroupGone { pgid: 100 }),
        vec![spawn(
            "a",
            Which::Main,
            Program::Finish {
                code: -1,
                signal: libc::SIGSEGV
            }
        )]
    );
    sup.step(
        t1,
        spawned(
            "a",
            Which::Main,
            Program::Finish {
                code: -1,
                signal: 11,
            },
            200,
        ),
    );
    // finish is killed if it hangs, and the service restarts after it.
    let late = t1 + SVWAIT;
    assert_eq!(
        sup.step(late, Event::Tick),
        vec![signal(-200, libc::SIGKILL)]
    );
    assert_eq!(
        sup.step(
            late,
            exited(200, ExitStatus::Signaled(libc::SIGKILL), false)
        ),
        vec![spawn("a", Which::Main, Program::Run)]
    );
}

#[test]
fn sv_down_waits_for_the_group_and_kills_it_after_svwait() {
    let t0 = Instant::now();
    let mut sup = running(t0, &[def("a")]);
    let actions = sup.step(t0, request(Op::Down, "a", Some(30)));
    assert_eq!(
        actions,
        vec![signal(-100, libc::SIGTERM), signal(-100, libc::SIGCONT)]
    );
    // run exits, but its group lives on: not down yet.
    assert_eq!(
        sup.step(t0, exited(100, ExitStatus::Signaled(libc::SIGTERM), true)),
        vec![]
    );
    assert_eq!(
        sup.step(t0 + SVWAIT, Event::Tick),
        vec![signal(-100, libc::SIGKILL)]
    );
    let done = sup.step(t0 + SVWAIT, Event::GroupGone { pgid: 100 });
    match &answers(&done)[..] {
        [Answer::Ok(status)] => assert_eq!(status.main.phase, Phase::Down),
        other => panic!("{other:?}"),
    }
    assert_eq!(sup.next_deadline(), None);
}

#[test]
fn waits_time_out_and_force_kills() {
    let t0 = Instant::now();
    let mut sup = running(t0, &[def("a")]);
    let mut force = request(Op::Down, "a", Some(2));
    if let Event::Command { request, .. } = &mut force {
        request.kill_on_timeout = true;
    }
    sup.step(t0, force);
    let actions = sup.step(t0 + Duration::from_secs(2), Event::Tick);
    assert_eq!(actions[0], signal(-100, libc::SIGKILL));
    assert!(matches!(answers(&actions)[..], [Answer::Killed(_)]));
    let unknown = sup.step(t0, request(Op::Up, "nope", Some(2)));
    assert_eq!(answers(&unknown), vec![Answer::Unknown("nope".into())]);
}

/// runit's `sv -v term` and `sv -v kill` wait for the service to be up
/// again, or down if it is meant to stay down.
#[test]
fn term_and_kill_waits_end_when_the_service_is_back_or_meant_down() {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut sup = running(t0, &[def("a")]);
        let actions = sup.step(t1, request(Op::Signal(sig), "a", Some(5)));
        assert_eq!(actions, vec![signal(100, sig)]);
        let actions = sup.step(t1, exited(100, ExitStatus::Signaled(sig), false));
        assert_eq!(actions, vec![spawn("a", Which::Main, Program::Run)]);
        let actions = sup.step(t1, spawned("a", Which::Main, Program::Run, 200));
        assert_eq!(answers(&actions), vec![], "up, not yet ready");
        let actions = sup.step(t1 + READY_GRACE, Event::Tick);
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
        // Run once: it stays down, and that is what the wait ends on.
        sup.step(t1, request(Op::Once, "a", None));
        sup.step(t1, request(Op::Signal(sig), "a", Some(5)));
        let actions = sup.step(t1, exited(200, ExitStatus::Signaled(sig), false));
        assert!(
            matches!(answers(&actions)[..], [Answer::Ok(_)]),
            "{actions:?}"
        );
    }
}

#[test]
fn shutdown_exit_codes_follow_the_signal() {
    for (sig, code) in [
        (libc::SIGTERM, 0),
        (libc::SIGINT, 130),
        (libc::SIGQUIT, 131),
    ] {
        let t0 = Instant::now();
        let mut sup = running(t0, &[def("a"), def("b")]);
        let actions = sup.step(t0, Event::Signal(sig));
        assert_eq!(actions.len(), 4, "TERM and CONT to both groups");
        assert_eq!(
            sup.step(t0, exited(100, ExitStatus::Signaled(15), false)),
            vec![]
        );
        assert_eq!(
            sup.step(t0, exited(101, ExitStatus::Signaled(15), false)),
            vec![Action::Exit(code)]
        );
    }
}

#[test]
fn signals_reach_the_group_of_each_running_run_its_file_allows() {
    use libc::{
        SIGABRT, SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGPIPE, SIGPWR, SIGRTMIN, SIGSEGV, SIGSYS,
        SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
    };
    let t0 = Instant::now();
    let mut logged = def("a");
    logged.log = Some(part());
    let mut hup_only = def("b");
    hup_only.forward_signals = [SIGHUP].into_iter().collect();
    let mut none = def("c");
    none.forward_signals = SignalSet::default();
    let mut down = def("d");
    down.main.down = true;
    let mut sup = Supervisor::new(settings());
    sup.step(t0, listing(&[logged, hup_only, none, down]));
    sup.step(t0, spawned("a", Which::Log, Program::Run, 99));
    for (pid, name) in (100..).zip(["a", "b", "c"]) {
        sup.step(t0, spawned(name, Which::Main, Program::Run, pid));
    }
    let to_a = |sig: i32| vec![signal(-100, sig)];
    let table = [
        (SIGHUP, vec![signal(-100, SIGHUP), signal(-101, SIGHUP)]),
        (SIGUSR1, to_a(SIGUSR1)),
        (SIGUSR2, to_a(SIGUSR2)),
        (SIGWINCH, to_a(SIGWINCH)),
        (SIGPIPE, to_a(SIGPIPE)),
        (SIGALRM, to_a(SIGALRM)),
        (SIGPWR, to_a(SIGPWR)),
        (SIGRTMIN() + 3, to_a(SIGRTMIN() + 3)),
        (64, to_a(64)),
        (SIGCHLD, vec![]),
        (SIGTSTP, vec![]),
        (SIGTTIN, vec![]),
        (SIGTTOU, vec![]),
        (SIGCONT, vec![]),
        (SIGSEGV, vec![]),
        (SIGABRT, vec![]),
        (SIGSYS, vec![]),
    ];
    for (sig, expected) in table {
        let actions = sup.step(t0, Event::Signal(sig));
        assert_eq!(actions, expected, "{}", signals::name(sig));
    }
    // Once shutdown has begun, stopping services get nothing more.
    assert_eq!(sup.step(t0, Event::Signal(SIGTERM)).len(), 6);
    assert_eq!(sup.step(t0, Event::Signal(SIGHUP)), vec![]);
}

#[test]
fn combined_mode_forwards_to_the_main_command_and_to_services() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings());
    sup.step(t0, Event::MainSpawned(Ok(main_command(50))));
    sup.step(t0, listing(&[def("a")]));
    sup.step(t0, spawned("a", Which::Main, Program::Run, 100));
    assert_eq!(
        sup.step(t0, Event::Signal(libc::SIGUSR1)),
        vec![signal(-50, libc::SIGUSR1), signal(-100, libc::SIGUSR1)]
    );
    // TERM is the main command's alone: its exit stops the services.
    assert_eq!(
        sup.step(t0, Event::Signal(libc::SIGTERM)),
        vec![signal(-50, libc::SIGTERM)]
    );
}

#[test]
fn log_service_stops_after_its_service_by_closing_its_input() {
    let t0 = Instant::now();
    let mut d = def("web");
    d.log = Some(part());
    let mut sup = Supervisor::new(settings());
    assert_eq!(
        sup.step(t0, listing(&[d])),
        vec![
            spawn("web", Which::Log, Program::Run),
            spawn("web", Which::Main, Program::Run)
        ]
    );
    sup.step(t0, spawned("web", Which::Log, Program::Run, 50));
    sup.step(t0, spawned("web", Which::Main, Program::Run, 51));
    assert_eq!(sup.step(t0, Event::Signal(libc::SIGTERM)).len(), 2);
    assert_eq!(
        sup.step(t0, exited(51, ExitStatus::Signaled(15), false)),
        vec![Action::CloseLogInput {
            service: "web".into()
        }]
    );
    assert_eq!(
        sup.step(t0, exited(50, ExitStatus::Exited(0), false)),
        vec![Action::Exit(0)]
    );
}

#[test]
fn log_folder_added_to_a_running_service_starts_without_restarting_it() {
    let t0 = Instant::now();
    let mut sup = running(t0, &[def("web")]);
    let mut with_log = def("web");
    with_log.log = Some(part());
    let mut down_log = def("db");
    down_log.log = Some(Part {
        down: true,
        ..part()
    });
    // (what a scan finds, what it starts)
    let table = [
        (&with_log, vec![spawn("web", Which::Log, Program::Run)]),
        // Seen again: nothing new.
        (&with_log, vec![]),
    ];
    for (d, expected) in table {
        assert_eq!(sup.step(t0, listing(std::slice::from_ref(d))), expected);
        assert!(sup.definition("web").unwrap().log.is_some());
    }
    sup.step(t0, spawned("web", Which::Log, Program::Run, 60));
    let status = sup.status_of("web", t0).unwrap();
    assert_eq!(status.main.pid, Some(100), "run was not restarted");
    assert_eq!(status.log.unwrap().pid, Some(60));
    assert_eq!(status.dir, Some(PathBuf::from("/svc/web")));
    let log_dir = sup.status_of("web/log", t0).unwrap().dir;
    assert_eq!(log_dir, Some(PathBuf::from("/svc/web/log")));
    // A log/ with a down file is defined, not started.
    let mut sup = running(t0, &[def("db")]);
    assert_eq!(sup.step(t0, listing(&[down_log])), vec![]);
    let status = sup.status_of("db", t0).unwrap();
    assert_eq!(status.log.map(|l| l.phase), Some(Phase::Down));
    // Shutting down: not started.
    let mut sup = running(t0, &[def("web")]);
    sup.step(t0, Event::Signal(libc::SIGTERM));
    assert_eq!(sup.step(t0, listing(&[with_log])), vec![]);
}

#[test]
fn essential_service_whose_finish_says_125_stops_the_container() {
    let t0 = Instant::now();
    let mut d = def("db");
    d.essential = true;
    d.main.finish = true;
    let mut sup = running(t0, &[d, def("other")]);
    sup.step(t0, exited(100, ExitStatus::Exited(1), false));
    sup.step(
        t0,
        spawned(
            "db",
            Which::Main,
            Program::Finish { code: 1, signal: 0 },
            300,
        ),
    );
    let actions = sup.step(
        t0,
        exited(300, ExitStatus::Exited(FINISH_NO_RESTART), false),
    );
    assert_eq!(
        actions,
        vec![signal(-101, libc::SIGTERM), signal(-101, libc::SIGCONT)]
    );
    assert_eq!(
        sup.step(t0, exited(101, ExitStatus::Signaled(15), false)),
        vec![Action::Exit(ESSENTIAL_FAILED)]
    );
}

#[test]
fn removed_folder_is_stopped_then_forgotten() {
    let t0 = Instant::now();
    let mut sup = running(t0, &[def("a"), def("b")]);
    assert_eq!(
        sup.step(t0, listing(&[def("b")])),
        vec![signal(-100, libc::SIGTERM), signal(-100, libc::SIGCONT)]
    );
    assert_eq!(
        sup.step(t0, exited(100, ExitStatus::Signaled(15), false)),
        vec![Action::Forget {
            service: "a".into()
        }]
    );
    // The scan that follows picks the folder up again if it came back.
    assert_eq!(sup.step(t0, Event::Tick), vec![Action::Scan]);
    assert_eq!(sup.step(t0, listing(&[def("b")])), vec![]);
}

#[test]
fn exec_failure_counts_as_exit_111() {
    let t0 = Instant::now();
    let mut d = def("a");
    d.main.finish = true;
    let mut sup = Supervisor::new(settings());
    sup.step(t0, listing(&[d]));
    sup.step(
        t0,
        Event::Spawned {
            service: "a".into(),
            which: Which::Main,
            program: Program::Run,
            result: Err(SpawnFailure {
                pid: Some(70),
                reason: "Permission denied".into(),
            }),
        },
    );
    assert_eq!(
        sup.step(t0, exited(70, ExitStatus::Exited(127), false)),
        vec![spawn(
            "a",
            Which::Main,
            Program::Finish {
                code: COULD_NOT_START,
                signal: 0
            }
        )]
    );
}
