//! Unit tests of the service-folder scan: the syntax of each file a service
//! folder may hold. Apart so that scan.rs holds only the parser.

use super::*;

#[test]
fn down_signal_syntax() {
    let table = [
        ("QUIT\n", Some(libc::SIGQUIT)),
        ("SIGHUP", Some(libc::SIGHUP)),
        ("  usr1  \nignored", Some(libc::SIGUSR1)),
        ("3", Some(3)),
        ("KILL", None),
        ("garbage", None),
        ("", None),
        ("99", None),
    ];
    for (text, expected) in table {
        assert_eq!(parse_down_signal(text), expected, "{text:?}");
    }
}

#[test]
fn notification_fd_syntax() {
    let table = [
        ("3\n", Some(3)),
        (" 7 \nignored", Some(7)),
        ("1023", Some(1023)),
        ("2", None),
        ("1024", None),
        ("-1", None),
        ("four", None),
        ("", None),
    ];
    for (text, expected) in table {
        assert_eq!(parse_notification_fd(text), expected, "{text:?}");
    }
}

#[test]
fn forward_signals_syntax() {
    let set = |signals: &[i32]| Ok(signals.iter().copied().collect::<SignalSet>());
    let table = [
        ("HUP\nSIGUSR1\n  usr2  \n37\n", set(&[1, 10, 12, 37])),
        ("# reload only\n\nHUP\n", set(&[libc::SIGHUP])),
        ("", set(&[])),
        ("none\n", set(&[])),
        ("WINCH\n64\n32", set(&[libc::SIGWINCH, 64, 32])),
        (
            "HUP\nFOO\n",
            Err(ForwardSignalsError::NotASignal {
                line: 2,
                text: "FOO".into(),
            }),
        ),
        (
            "HUP USR1",
            Err(ForwardSignalsError::NotASignal {
                line: 1,
                text: "HUP USR1".into(),
            }),
        ),
        (
            "65",
            Err(ForwardSignalsError::NotASignal {
                line: 1,
                text: "65".into(),
            }),
        ),
    ];
    for (text, expected) in table {
        assert_eq!(parse_forward_signals(text), expected, "{text:?}");
    }
    for (text, signal) in [
        ("HUP\n\nTERM", libc::SIGTERM),
        ("HUP\n\nCHLD", libc::SIGCHLD),
        ("HUP\n\nKILL", libc::SIGKILL),
        ("HUP\n\nSEGV", libc::SIGSEGV),
        ("HUP\n\nTSTP", libc::SIGTSTP),
    ] {
        match parse_forward_signals(text) {
            Err(ForwardSignalsError::NotForwardable { line: 3, name, .. }) => {
                assert_eq!(name, signals::name(signal))
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn listen_syntax() {
    let dir = Path::new("/svc/web");
    let tcp = |name: Option<&str>, addr: &str, line| Listen {
        name: name.map(str::to_owned),
        address: Address::Tcp(addr.parse().unwrap()),
        line,
    };
    let good = [
        (
            "tcp://127.0.0.1:8080\n",
            vec![tcp(None, "127.0.0.1:8080", 1)],
        ),
        (
            "# the app\n\nhttp=tcp://0.0.0.0:80\n  admin=tcp://[::1]:9000  \n",
            vec![
                tcp(Some("http"), "0.0.0.0:80", 3),
                tcp(Some("admin"), "[::1]:9000", 4),
            ],
        ),
        ("", vec![]),
        (
            "unix:app.sock mode=660 owner=1000:50\nunix:/run/a=b",
            vec![
                Listen {
                    name: None,
                    address: Address::Unix {
                        path: "/svc/web/app.sock".into(),
                        mode: Some(0o660),
                        owner: Some((1000, Some(50))),
                    },
                    line: 1,
                },
                Listen {
                    name: None,
                    address: Address::Unix {
                        path: "/run/a=b".into(),
                        mode: None,
                        owner: None,
                    },
                    line: 2,
                },
            ],
        ),
    ];
    for (text, expected) in good {
        assert_eq!(parse_listen(text, dir), Ok(expected), "{text:?}");
    }
    let bad = [
        (
            "http://0.0.0.0:80",
            1,
            ListenProblem::Scheme("http://0.0.0.0:80".into()),
        ),
        (
            "\ntcp://localhost:80",
            2,
            ListenProblem::TcpAddress("localhost:80".into()),
        ),
        (
            "tcp://0.0.0.0",
            1,
            ListenProblem::TcpAddress("0.0.0.0".into()),
        ),
        (
            "tcp://0.0.0.0:70000",
            1,
            ListenProblem::TcpAddress("0.0.0.0:70000".into()),
        ),
        (
            "tcp://::1:80",
            1,
            ListenProblem::TcpAddress("::1:80".into()),
        ),
        ("unix:", 1, ListenProblem::EmptyPath),
        (
            "a:b=tcp://0.0.0.0:80",
            1,
            ListenProblem::Scheme("a:b=tcp://0.0.0.0:80".into()),
        ),
        (
            "we b=tcp://0.0.0.0:80",
            1,
            ListenProblem::Option("b=tcp://0.0.0.0:80".into()),
        ),
        ("=tcp://0.0.0.0:80", 1, ListenProblem::Name("".into())),
        ("w/b=tcp://0.0.0.0:80", 1, ListenProblem::Name("w/b".into())),
        (
            "unix:a mode=999",
            1,
            ListenProblem::Option("mode=999".into()),
        ),
        (
            "unix:a owner=root",
            1,
            ListenProblem::Option("owner=root".into()),
        ),
        (
            "unix:a owner=1:x",
            1,
            ListenProblem::Option("owner=1:x".into()),
        ),
        ("unix:a size=1", 1, ListenProblem::Option("size=1".into())),
        (
            "unix:a mode=600 mode=644",
            1,
            ListenProblem::Repeated("mode="),
        ),
        ("tcp://0.0.0.0:80 mode=600", 1, ListenProblem::OptionOnTcp),
        (
            "a=tcp://0.0.0.0:80\n# again\nb=tcp://0.0.0.0:80",
            3,
            ListenProblem::Duplicate(1),
        ),
    ];
    for (text, line, problem) in bad {
        assert_eq!(parse_listen(text, dir), Err((line, problem)), "{text:?}");
    }
    let many: String = (0..=MAX_SOCKETS)
        .map(|n| format!("tcp://127.0.0.1:{}\n", 1000 + n))
        .collect();
    assert_eq!(
        parse_listen(&many, dir),
        Err((MAX_SOCKETS + 1, ListenProblem::TooMany))
    );
}

#[test]
fn listen_errors_name_the_file_and_line() {
    let err = ListenError::Line {
        file: "/etc/service/web/listen".into(),
        line: 2,
        problem: ListenProblem::TcpAddress("localhost:80".into()),
    };
    assert_eq!(
        err.to_string(),
        "/etc/service/web/listen line 2: \"localhost:80\" is not an IP address and port (host names are not resolved)"
    );
}

#[test]
fn forwardable_signals_leave_out_stop_reap_fault_and_job_control() {
    let set = SignalSet::forwardable();
    for signal in [1, 10, 12, 13, 14, 28, 30, 32, 34, 37, 64] {
        assert!(set.contains(signal), "{signal}");
    }
    for signal in [
        0, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15, 17, 18, 19, 20, 21, 22, 31, 65,
    ] {
        assert!(!set.contains(signal), "{signal}");
    }
}
