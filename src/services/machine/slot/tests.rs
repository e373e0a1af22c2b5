//! The table in the module doc, row by row: one slot in one state, one
//! event, the actions and the state that follow.

use super::*;
use crate::services::machine::{FINISH_NO_RESTART, SpawnFailure};

const SVWAIT: Duration = Duration::from_secs(7);
const GRACE: Duration = Duration::from_secs(1);

fn part(finish: bool) -> Part {
    Part {
        down: false,
        finish,
        down_signal: libc::SIGTERM,
        down_signal_problem: None,
        readiness: Readiness::Grace,
        readiness_problem: None,
    }
}

fn kill(target: i32, signal: i32) -> Action {
    Action::Signal { target, signal }
}

fn spawn(program: Program) -> Action {
    Action::Spawn {
        service: "web".into(),
        which: Which::Main,
        program,
    }
}

fn close() -> Action {
    Action::CloseLogInput {
        service: "web".into(),
    }
}

fn failure(pid: Option<i32>) -> SpawnFailure {
    SpawnFailure {
        pid,
        reason: "Permission denied".into(),
    }
}

/// One row: a slot of `part` wanted `intent`, in `life`, gets `event` at
/// `now`; returns the actions, its life after, and whether it gave up.
fn row(
    now: Instant,
    part: Part,
    intent: Intent,
    life: Life,
    event: SlotEvent,
    may_start: bool,
) -> (Vec<Action>, Life, bool) {
    let mut slot = Slot::new(part, now);
    slot.intent = intent;
    slot.life = life;
    let mut actions = Vec::new();
    let mut cx = Ctx {
        now,
        settings: Settings {
            svwait: SVWAIT,
            backoff_max: Duration::from_secs(4),
            ready_grace: GRACE,
        },
        label: "web".into(),
        service: "web",
        which: Which::Main,
        may_start,
        actions: &mut actions,
        gave_up: false,
    };
    slot.on(&mut cx, event);
    let gave_up = cx.gave_up;
    (actions, slot.life, gave_up)
}

#[test]
fn every_row_of_the_slot_table_does_what_it_says() {
    use ExitStatus::{Exited, Signaled};
    use Intent::{Down as WantDown, Up};
    use SlotEvent as E;
    use libc::{SIGCONT, SIGHUP, SIGKILL, SIGTERM};
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(1);
    let kill_at = Some(t0 + SVWAIT);
    let backoff = Life::Backoff { until: later };
    let running = Life::Running {
        pid: 100,
        exec_failed: false,
        ready: Readying::Grace(t0 + GRACE),
    };
    let stopping = Life::Stopping {
        pgid: 100,
        run: Some(100),
        exit: None,
        deadline: kill_at,
    };
    let lingering = |exit, deadline| Life::Stopping {
        pgid: 100,
        run: None,
        exit: Some(exit),
        deadline,
    };
    let finishing = |pid, deadline| Life::Finishing {
        pid,
        exit: Exited(1),
        deadline,
    };
    let run = || spawn(Program::Run);
    let stop = || vec![kill(-100, SIGTERM), kill(-100, SIGCONT)];
    let exit = |status, group_alive| E::RunExited {
        status,
        group_alive,
    };
    // (finish, intent, state, event, may start, actions, next state, gave up)
    #[rustfmt::skip]
    let table = [
        (false, Up, Life::Down, E::Start, true, vec![run()], Life::Starting, false),
        (false, Up, backoff, E::Start, true, vec![run()], Life::Starting, false),
        (false, Up, Life::Down, E::Start, false, vec![], Life::Down, false),
        (false, Up, running, E::Start, true, vec![], running, false),
        (false, Up, running, E::Stop(StopHow::Signal), true, stop(), stopping, false),
        (false, Up, running, E::Restart, true, stop(), stopping, false),
        (false, Up, Life::Down, E::Restart, true, vec![run()], Life::Starting, false),
        (false, Up, running, E::Stop(StopHow::CloseInput), true, vec![close()], stopping, false),
        (false, Up, backoff, E::Stop(StopHow::Signal), true, vec![], Life::Down, false),
        (false, Up, backoff, E::Stop(StopHow::CloseInput), true, vec![close()], Life::Down, false),
        (false, Up, Life::Down, E::Stop(StopHow::CloseInput), true, vec![close()], Life::Down, false),
        (false, Up, Life::Starting, E::Stop(StopHow::Signal), true, vec![], Life::Starting, false),
        (false, Up, stopping, E::Signal(SIGHUP), true, vec![kill(100, SIGHUP)], stopping, false),
        (false, Up, lingering(Exited(0), kill_at), E::Signal(SIGHUP), true, vec![], lingering(Exited(0), kill_at), false),
        (false, Up, Life::Starting, E::RunSpawned(Ok(100)), true, vec![], running, false),
        (false, Up, Life::Starting, E::RunSpawned(Err(failure(Some(70)))), true, vec![], Life::Running { pid: 70, exec_failed: true, ready: Readying::Awaiting }, false),
        // No child at all: a quick death, so the next start is a second away.
        (false, Up, Life::Starting, E::RunSpawned(Err(failure(None))), true, vec![], backoff, false),
        (true, Up, Life::Starting, E::RunSpawned(Err(failure(None))), true, vec![spawn(Program::Finish { code: 111, signal: 0 })], finishing(None, kill_at).with_exit(Exited(111)), false),
        (false, Up, running, E::RunSpawned(Ok(200)), true, vec![], running, false),
        (true, Up, finishing(None, kill_at), E::FinishSpawned(Ok(200)), true, vec![], finishing(Some(200), kill_at), false),
        (true, Up, finishing(None, kill_at), E::FinishSpawned(Err(failure(Some(200)))), true, vec![], finishing(Some(200), kill_at), false),
        (true, Up, finishing(None, kill_at), E::FinishSpawned(Err(failure(None))), true, vec![run()], Life::Starting, false),
        (false, Up, running, exit(Exited(1), false), true, vec![], backoff, false),
        (false, Up, running, exit(Exited(1), true), true, stop(), lingering(Exited(1), kill_at), false),
        (false, Up, stopping, exit(Signaled(SIGTERM), true), true, vec![], lingering(Signaled(SIGTERM), kill_at), false),
        (false, WantDown, stopping, exit(Signaled(SIGTERM), false), true, vec![], Life::Down, false),
        (true, WantDown, stopping, exit(Signaled(SIGTERM), false), true, vec![spawn(Program::Finish { code: -1, signal: SIGTERM })], finishing(None, kill_at).with_exit(Signaled(SIGTERM)), false),
        (false, WantDown, lingering(Exited(0), None), E::GroupGone, true, vec![], Life::Down, false),
        (false, Up, lingering(Exited(0), None), E::GroupGone, true, vec![run()], Life::Starting, false),
        (false, Up, stopping, E::GroupGone, true, vec![], stopping, false),
        (true, Up, finishing(Some(200), kill_at), E::FinishExited(Exited(FINISH_NO_RESTART)), true, vec![], Life::Down, true),
        (true, Up, finishing(Some(200), kill_at), E::FinishExited(Exited(0)), true, vec![run()], Life::Starting, false),
        (false, Up, Life::Backoff { until: t0 }, E::Tick, true, vec![run()], Life::Starting, false),
        (false, WantDown, Life::Backoff { until: t0 }, E::Tick, true, vec![], Life::Down, false),
        (false, Up, backoff, E::Tick, true, vec![], backoff, false),
        (false, Up, lingering(Exited(0), Some(t0)), E::Tick, true, vec![kill(-100, SIGKILL)], lingering(Exited(0), None), false),
        (true, Up, finishing(Some(200), Some(t0)), E::Tick, true, vec![kill(-200, SIGKILL)], finishing(Some(200), None), false),
        (true, Up, finishing(None, Some(t0)), E::Tick, true, vec![], finishing(None, Some(t0)), false),
        (false, Up, running, E::Tick, true, vec![], running, false),
    ];
    for (n, (finish, intent, life, event, may_start, actions, next, gave_up)) in
        table.into_iter().enumerate()
    {
        let what = format!("row {n}: {life:?} + {event:?}");
        let got = row(t0, part(finish), intent, life, event, may_start);
        assert_eq!(got, (actions, next, gave_up), "{what}");
    }
}

/// The readiness rows: how `run` starts readying by its [`Readiness`], and
/// what notifications, the grace period and `./check` do to it.
#[test]
fn every_readiness_row_of_the_slot_table_does_what_it_says() {
    use ExitStatus::Exited;
    use Readying::{Awaiting, CheckAt, Checking, Grace, Ready};
    use SlotEvent as E;
    use libc::{SIGCONT, SIGKILL, SIGTERM};
    let t0 = Instant::now();
    let later = t0 + Duration::from_millis(1);
    let limit = Some(t0 + CHECK_LIMIT);
    let with = |readiness| Part {
        readiness,
        ..part(false)
    };
    let running = |ready| Life::Running {
        pid: 100,
        exec_failed: false,
        ready,
    };
    let checking = |pid, deadline| running(Checking { pid, deadline });
    let stopping = Life::Stopping {
        pgid: 100,
        run: Some(100),
        exit: None,
        deadline: Some(t0 + SVWAIT),
    };
    let kill_check = || kill(-300, SIGKILL);
    let grace = Readiness::Grace;
    let check = Readiness::Check;
    // (readiness, state, event, actions, next state)
    #[rustfmt::skip]
    let table = [
        (Readiness::Notify, Life::Starting, E::RunSpawned(Ok(100)), vec![], running(Awaiting)),
        (Readiness::Fd(5), Life::Starting, E::RunSpawned(Ok(100)), vec![], running(Awaiting)),
        (check, Life::Starting, E::RunSpawned(Ok(100)), vec![], running(CheckAt(t0))),
        (grace, Life::Starting, E::RunSpawned(Ok(100)), vec![], running(Grace(t0 + GRACE))),
        (grace, running(Awaiting), E::Ready, vec![], running(Ready)),
        (grace, running(Grace(later)), E::Ready, vec![], running(Ready)),
        (grace, running(Ready), E::Ready, vec![], running(Ready)),
        (grace, stopping, E::Ready, vec![], stopping),
        (grace, Life::Down, E::Ready, vec![], Life::Down),
        (grace, running(Grace(t0)), E::Tick, vec![], running(Ready)),
        (grace, running(Grace(later)), E::Tick, vec![], running(Grace(later))),
        (grace, running(Awaiting), E::Tick, vec![], running(Awaiting)),
        (check, running(CheckAt(t0)), E::Tick, vec![spawn(Program::Check)], checking(None, limit)),
        (check, running(CheckAt(later)), E::Tick, vec![], running(CheckAt(later))),
        (check, checking(None, limit), E::CheckSpawned(Ok(300)), vec![], checking(Some(300), limit)),
        (check, checking(None, limit), E::CheckSpawned(Err(failure(Some(300)))), vec![], checking(Some(300), limit)),
        (check, checking(None, limit), E::CheckSpawned(Err(failure(None))), vec![], running(CheckAt(t0 + CHECK_EVERY))),
        (check, checking(Some(300), limit), E::CheckExited(Exited(0)), vec![], running(Ready)),
        (check, checking(Some(300), limit), E::CheckExited(Exited(1)), vec![], running(CheckAt(t0 + CHECK_EVERY))),
        (check, checking(Some(300), Some(t0)), E::Tick, vec![kill_check()], checking(Some(300), None)),
        (check, checking(Some(300), limit), E::Tick, vec![], checking(Some(300), limit)),
        (check, running(Ready), E::CheckExited(Exited(0)), vec![], running(Ready)),
        (check, checking(Some(300), limit), E::Stop(StopHow::Signal), vec![kill(-100, SIGTERM), kill(-100, SIGCONT), kill_check()], stopping),
        (check, checking(Some(300), limit), E::RunExited { status: Exited(1), group_alive: false }, vec![kill_check()], Life::Backoff { until: t0 + MIN_RESTART }),
    ];
    for (n, (readiness, life, event, actions, next)) in table.into_iter().enumerate() {
        let what = format!("row {n}: {life:?} + {event:?}");
        let got = row(t0, with(readiness), Intent::Up, life, event, true);
        assert_eq!(got, (actions, next, false), "{what}");
    }
}

impl Life {
    /// The same `Finishing`, for another exit of `run`.
    fn with_exit(self, status: ExitStatus) -> Life {
        match self {
            Life::Finishing { pid, deadline, .. } => Life::Finishing {
                pid,
                exit: status,
                deadline,
            },
            other => other,
        }
    }
}
