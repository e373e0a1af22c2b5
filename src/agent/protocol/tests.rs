use super::*;
use crate::services::control::Op;
use std::time::Duration;

fn round_trip_agent(message: FromAgent) {
    let mut frames = Frames::default();
    frames.push(&frame(&message.encode()));
    let text = frames.next_text().unwrap().unwrap();
    assert_eq!(FromAgent::decode(&text).unwrap(), message);
    assert_eq!(frames.next_text(), Ok(None));
}

fn round_trip_init(message: FromInit) {
    let text = message.encode();
    assert_eq!(FromInit::decode(&text).unwrap(), message, "{text:?}");
}

#[test]
fn every_message_decodes_to_itself() {
    round_trip_agent(FromAgent::Hello {
        version: VERSION,
        moltd: "0.1.0".into(),
    });
    round_trip_agent(FromAgent::Command(Request {
        op: Op::Down,
        names: vec!["web".into(), "db".into()],
        wait: Some(Duration::from_secs(12)),
        kill_on_timeout: true,
    }));
    round_trip_agent(FromAgent::Hook {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo a\tb\nc".into()],
        cwd: None,
    });
    round_trip_agent(FromAgent::Hook {
        argv: vec!["/bin/sh".into(), "-c".into(), "bin/app --check".into()],
        cwd: Some("/app/releases/v1\tb".into()),
    });
    round_trip_agent(FromAgent::KillHook(42));
    round_trip_agent(FromAgent::Ready { updating: true });
    round_trip_agent(FromAgent::Ready { updating: false });
    round_trip_agent(FromAgent::Pending {
        client: 7,
        text: "checking for a newer release".into(),
    });
    round_trip_agent(FromAgent::Reply {
        client: 7,
        reply: Ok("{\n  \"state\": \"idle\"\n}".into()),
    });
    round_trip_agent(FromAgent::Reply {
        client: 8,
        reply: Err("no newer release".into()),
    });
    round_trip_init(FromInit::Welcome {
        version: VERSION,
        held: vec![],
    });
    round_trip_init(FromInit::Welcome {
        version: VERSION,
        held: vec!["web".into(), ".main".into()],
    });
    round_trip_init(FromInit::Answers(vec![
        Answer::Unknown("nope".into()),
        Answer::Unknown("gone".into()),
    ]));
    round_trip_init(FromInit::HookStarted(99));
    round_trip_init(FromInit::HookFailed("fork: out of memory".into()));
    round_trip_init(FromInit::HookExited {
        pid: 99,
        status: ExitStatus::Exited(3),
    });
    round_trip_init(FromInit::HookExited {
        pid: 99,
        status: ExitStatus::Signaled(9),
    });
    round_trip_init(FromInit::Client {
        client: 3,
        line: "update\tcheck".into(),
    });
    round_trip_init(FromInit::Trigger);
    round_trip_init(FromInit::Services(Services {
        list: vec![ServiceState {
            name: "web".into(),
            phase: Phase::CrashLoop,
            restarts: 4,
            essential: true,
        }],
        shutting_down: true,
        reaped: 12,
    }));
    for force in [false, true] {
        round_trip_agent(FromAgent::SelfUpdate(SelfUpdate {
            path: "/app/.moltd/bin/moltd-0.2.0".into(),
            force,
        }));
    }
    round_trip_init(FromInit::SelfUpdate(SelfUpdateAnswer::Refused(
        "not an ELF executable".into(),
    )));
    round_trip_init(FromInit::SelfUpdate(SelfUpdateAnswer::Refused(
        "its self-test failed:\tbad".into(),
    )));
    round_trip_init(FromInit::SelfUpdate(SelfUpdateAnswer::Exec("0.2.0".into())));
}

#[test]
fn self_update_refusals_are_one_line() {
    let text = FromInit::SelfUpdate(SelfUpdateAnswer::Refused("a\nb".into())).encode();
    assert_eq!(text, "self-update\trefused\ta b");
}

#[test]
fn frames_arrive_in_pieces_and_together() {
    let mut frames = Frames::default();
    let mut bytes = frame("trigger");
    bytes.extend(frame("ready\ton"));
    for byte in &bytes[..bytes.len() - 1] {
        frames.push(&[*byte]);
    }
    assert_eq!(frames.next_text(), Ok(Some("trigger".into())));
    assert_eq!(frames.next_text(), Ok(None));
    frames.push(&bytes[bytes.len() - 1..]);
    assert_eq!(frames.next_text(), Ok(Some("ready\ton".into())));
    assert_eq!(frames.next_text(), Ok(None));
}

#[test]
fn oversized_and_non_utf8_frames_are_refused() {
    let mut frames = Frames::default();
    // The length alone is enough to refuse: nothing waits for 4 GiB.
    frames.push(&u32::MAX.to_be_bytes());
    assert_eq!(
        frames.next_text(),
        Err(ProtocolError::TooBig(u32::MAX as usize))
    );
    let mut frames = Frames::default();
    frames.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
    assert!(matches!(frames.next_text(), Err(ProtocolError::TooBig(_))));
    let mut frames = Frames::default();
    frames.push(&[0, 0, 0, 2, 0xc3, 0x28]);
    assert_eq!(frames.next_text(), Err(ProtocolError::NotUtf8));
}

#[test]
fn malformed_messages_from_the_agent_are_refused() {
    let unknown = |text: &str| ProtocolError::UnknownKind(text.to_owned());
    assert_eq!(FromAgent::decode(""), Err(unknown("")));
    assert_eq!(FromAgent::decode("shutdown"), Err(unknown("shutdown")));
    // PID 1's own kinds are not the agent's to send.
    assert_eq!(FromAgent::decode("welcome\t1"), Err(unknown("welcome")));
    for bad in [
        "hello",
        "hello\t1",
        "hello\tone\t0.1.0",
        "hello\t1\t0.1.0\textra",
        "command",
        "command\t1\nstatus\t\t0\t0\n",
        "command\nreboot\n",
        "hook",
        "hook\n",
        "kill-hook",
        "kill-hook\t0",
        "kill-hook\t-1",
        "kill-hook\t1x",
        "ready",
        "ready\tyes",
        "pending\nchecking",
        "pending\tme\nchecking",
        "pending\t-1\nchecking",
        "reply\t7\nok",
        "reply\t7\tmaybe\ntext",
        "reply\tseven\tok\ntext",
        "self-update",
        "self-update\tmoltd\t0",
        "self-update\t/moltd",
        "self-update\t/moltd\tyes",
    ] {
        let err = FromAgent::decode(bad).unwrap_err();
        assert!(matches!(err, ProtocolError::Bad { .. }), "{bad:?}: {err}");
    }
}

#[test]
fn malformed_messages_from_pid1_are_refused() {
    assert!(matches!(
        FromInit::decode("hello\t1\tx"),
        Err(ProtocolError::UnknownKind(_))
    ));
    for bad in [
        "welcome",
        "welcome\tv1",
        "answers\t2",
        "answers\nnonsense\n",
        "hook-started",
        "hook-started\t0",
        "hook-failed\tx",
        "hook-exited\t5\texit",
        "hook-exited\t5\tcore\t1",
        "hook-exited\t5\texit\tx",
        "client\nupdate\tcheck",
        "trigger\tnow",
        "services\t0",
        "services\t2\t0\n",
        "services\t0\t0\nweb\trun\t0\n",
        "services\t0\t0\nweb\tflying\t0\t0\n",
        "services\t0\t0\nweb\trun\tmany\t0\n",
        "self-update",
        "self-update\trefused",
        "self-update\texec",
        "self-update\texec\t1\t2",
        "self-update\tdone\tx",
    ] {
        let err = FromInit::decode(bad).unwrap_err();
        assert!(matches!(err, ProtocolError::Bad { .. }), "{bad:?}: {err}");
    }
}
