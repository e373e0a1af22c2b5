//! Waits that end when a service is ready rather than when it runs: `sv -w
//! up` and the update's, and the second generation of an overlap. Apart
//! from the other table tests of the supervisor, which never notify.

use super::*;

fn notified(pid: i32, pgid: Option<i32>) -> Event {
    Event::Ready(Notifier::Process { pid, pgid })
}

/// `sv -w up` (and the update, which asks the same) is answered when the
/// service is ready, not when it runs: by a notification from `run` or a
/// process of its group (never another service's), by `./check` passing,
/// or once it stayed up its grace period.
#[test]
fn waits_for_up_end_when_the_service_is_ready() {
    let t0 = Instant::now();
    let mut notify = def("a");
    notify.main.readiness = Readiness::Notify;
    let mut checked = def("b");
    checked.main.readiness = Readiness::Check;
    let mut sup = running(t0, &[notify, checked, def("c"), def("d")]);
    let wait = |sup: &mut Supervisor, name: &str| {
        let actions = sup.step(t0, request(Op::Up, name, Some(60)));
        assert_eq!(answers(&actions), vec![], "{name} is not ready yet");
    };
    // Notified: a stranger's message, and another service's, do not count.
    wait(&mut sup, "a");
    for (pid, pgid) in [(999, Some(999)), (998, None), (555, Some(102))] {
        let actions = sup.step(t0, notified(pid, pgid));
        assert_eq!(answers(&actions), vec![], "{pid} in group {pgid:?}");
    }
    assert!(sup.status_of("c", t0).unwrap().main.ready, "c's own child");
    assert!(!sup.status_of("a", t0).unwrap().main.ready);
    // A child of `run`, in its group.
    let actions = sup.step(t0, notified(555, Some(100)));
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    assert!(sup.status_of("a", t0).unwrap().main.ready);
    // Checked: the first check fails, the second passes, 200 ms later.
    wait(&mut sup, "b");
    let actions = sup.step(t0, Event::Tick);
    assert!(actions.contains(&spawn("b", Which::Main, Program::Check)));
    sup.step(t0, spawned("b", Which::Main, Program::Check, 300));
    let actions = sup.step(t0, exited(300, ExitStatus::Exited(1), false));
    assert_eq!(answers(&actions), vec![]);
    let next = t0 + Duration::from_millis(200);
    assert_eq!(sup.next_deadline(), Some(next));
    let actions = sup.step(next, Event::Tick);
    assert!(actions.contains(&spawn("b", Which::Main, Program::Check)));
    sup.step(next, spawned("b", Which::Main, Program::Check, 301));
    let actions = sup.step(next, exited(301, ExitStatus::Exited(0), false));
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    // Grace: ready once it stayed up long enough, then nothing is due.
    wait(&mut sup, "d");
    let actions = sup.step(t0 + READY_GRACE, Event::Tick);
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    assert_eq!(sup.next_deadline(), None, "idle: nothing to wake up for");
}

/// An update's overlap: a second generation (`NAME/next`) starts beside the
/// first and its wait ends when it is ready; `retire` stops the first and
/// the second takes its place; `down` on `NAME/next` stops the second and
/// leaves the first alone.
#[test]
fn a_second_generation_runs_beside_the_first_until_one_of_them_goes() {
    use libc::{SIGCONT, SIGTERM};
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(20);
    let mut sup = running(t0, &[def("a")]);
    sup.step(t0 + READY_GRACE, Event::Tick);
    let pid = |sup: &Supervisor, name: &str| sup.status_of(name, t1).and_then(|s| s.main.pid);

    let actions = sup.step(t1, request(Op::Overlap, "a/next", Some(10)));
    assert_eq!(actions, vec![spawn("a", Which::Next, Program::Run)]);
    let actions = sup.step(t1, spawned("a", Which::Next, Program::Run, 200));
    assert_eq!(answers(&actions), vec![], "not ready yet");
    let actions = sup.step(t1 + READY_GRACE, Event::Tick);
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    assert_eq!(
        (pid(&sup, "a"), pid(&sup, "a/next")),
        (Some(100), Some(200))
    );

    let actions = sup.step(t1, request(Op::Retire, "a", Some(10)));
    assert_eq!(actions, vec![signal(-100, SIGTERM), signal(-100, SIGCONT)]);
    let actions = sup.step(t1, exited(100, ExitStatus::Signaled(SIGTERM), false));
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Spawn { .. })));
    assert_eq!((pid(&sup, "a"), pid(&sup, "a/next")), (Some(200), None));
    assert!(sup.status_of("a", t1).unwrap().main.ready);
    // The second generation, now the service, restarts as the service.
    let t2 = t1 + Duration::from_secs(30);
    let actions = sup.step(t2, exited(200, ExitStatus::Exited(1), false));
    assert_eq!(actions, vec![spawn("a", Which::Main, Program::Run)]);
    sup.step(t2, spawned("a", Which::Main, Program::Run, 201));

    // Given up: the second generation stops, the first runs on.
    sup.step(t1, request(Op::Overlap, "a/next", Some(10)));
    sup.step(t1, spawned("a", Which::Next, Program::Run, 300));
    let actions = sup.step(t1, request(Op::Down, "a/next", Some(10)));
    assert_eq!(actions, vec![signal(-300, SIGTERM), signal(-300, SIGCONT)]);
    let actions = sup.step(t1, exited(300, ExitStatus::Signaled(SIGTERM), false));
    assert!(
        matches!(answers(&actions)[..], [Answer::Ok(_)]),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Spawn { .. })));
    assert_eq!(pid(&sup, "a"), Some(201));
    // The main command and unknown services have no second generation.
    let actions = sup.step(t1, request(Op::Overlap, "nope/next", Some(10)));
    assert_eq!(answers(&actions), vec![Answer::Unknown("nope/next".into())]);
}
