use super::*;
use std::time::UNIX_EPOCH;

fn t(text: &str) -> u64 {
    parse_rfc3339(text).unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn times_read_as_rfc3339() {
    let table = [
        ("1970-01-01T00:00:00Z", Some(0)),
        ("2026-12-07T10:00:00Z", Some(1_796_637_600)),
        ("2026-12-07T10:00:00.123Z", Some(1_796_637_600)),
        ("2026-12-07T12:00:00+02:00", Some(1_796_637_600)),
        ("2026-12-07T08:30:00-01:30", Some(1_796_637_600)),
        ("2024-02-29T00:00:00Z", Some(1_709_164_800)),
        ("2026-12-07 10:00:00Z", None),
        ("2026-12-07T10:00:00", None),
        ("2026-13-07T10:00:00Z", None),
        ("2026-12-07T24:00:00Z", None),
        ("2026-12-07T10:00:00+0200", None),
        ("1969-12-31T23:59:59Z", None),
        ("2026-12-07T10:00:00.Z", None),
        ("2026-1x-07T10:00:00Z", None),
    ];
    for (text, expected) in table {
        assert_eq!(parse_rfc3339(text), expected, "{text}");
    }
    // The inverse of the status document's times, over leap years and
    // centuries.
    for secs in (0..5_000_000_000u64).step_by(86_400 * 37 + 3_607) {
        let text = crate::update::status::rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(parse_rfc3339(&text), Some(secs), "{text}");
    }
}

#[test]
fn release_notes_metadata() {
    let schedule = |start: &str, percent: f64, hours: u64| Schedule {
        start: t(start),
        percent,
        duration_secs: hours * 3600,
    };
    let ok = |schedule: Option<Schedule>, withdrawn: bool, urgent: bool| {
        Ok(Meta {
            schedule,
            withdrawn,
            urgent,
        })
    };
    let table: Vec<(&str, Result<Meta, &str>)> = vec![
        ("Fixes a leak.\n", ok(None, false, false)),
        (
            "Notes\nmoltd-rollout: start=2026-12-07T10:00:00Z percent=5 duration=48h\n",
            ok(
                Some(schedule("2026-12-07T10:00:00Z", 5.0, 48)),
                false,
                false,
            ),
        ),
        (
            "  moltd-rollout:   duration=2h  percent=12.5 start=2026-12-07T10:00:00Z  \r\n",
            ok(
                Some(schedule("2026-12-07T10:00:00Z", 12.5, 2)),
                false,
                false,
            ),
        ),
        ("moltd-rollout: withdrawn", ok(None, true, false)),
        (
            "moltd-rollout: start=2026-12-07T10:00:00Z percent=5 duration=48h\nmoltd-rollout: withdrawn\n",
            ok(Some(schedule("2026-12-07T10:00:00Z", 5.0, 48)), true, false),
        ),
        ("moltd-rollout: urgent", ok(None, false, true)),
        ("moltd-rollout:", ok(None, false, false)),
        // Not at the start of a line: prose about the syntax.
        (
            "use `moltd-rollout: withdrawn` to withdraw",
            ok(None, false, false),
        ),
        ("moltd-rollout: percent=5", Err("must be given together")),
        (
            "moltd-rollout: start=2026-12-07T10:00:00Z percent=105 duration=1h",
            Err("percent=\"105\""),
        ),
        (
            "moltd-rollout: start=2026-12-07T10:00:00Z percent=-1 duration=1h",
            Err("percent=\"-1\""),
        ),
        (
            "moltd-rollout: start=tomorrow percent=5 duration=1h",
            Err("start=\"tomorrow\""),
        ),
        (
            "moltd-rollout: start=2026-12-07T10:00:00Z percent=5 duration=2 days",
            Err("\"days\" is not one of"),
        ),
        ("moltd-rollout: withdrawn withdrawn", Err("given twice")),
        (
            "moltd-rollout: withdrawm",
            Err("\"withdrawm\" is not one of"),
        ),
        ("moltd-rollout: pecent=5", Err("\"pecent=5\" is not one of")),
    ];
    for (notes, expected) in table {
        match (parse_notes(notes), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{notes:?}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{notes:?}: {got}"),
            (got, want) => panic!("{notes:?}: got {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn json_fields_follow_the_same_rules() {
    let parse = |json: &str| {
        serde_json::from_str::<Fields>(json)
            .map_err(|e| e.to_string())
            .and_then(|f| f.meta())
    };
    assert_eq!(
        parse(r#"{"start":"2026-12-07T10:00:00Z","percent":5,"duration":"48h"}"#)
            .unwrap()
            .schedule,
        Some(Schedule {
            start: t("2026-12-07T10:00:00Z"),
            percent: 5.0,
            duration_secs: 48 * 3600,
        })
    );
    assert!(parse(r#"{"withdrawn":true}"#).unwrap().withdrawn);
    assert!(parse(r#"{"urgent":true}"#).unwrap().urgent);
    assert!(parse(r#"{"percent":5}"#).is_err());
    assert!(
        parse(r#"{"start":"2026-12-07T10:00:00Z withdrawn","percent":5,"duration":"1h"}"#).is_err()
    );
    assert!(parse(r#"{"withdrawn":true,"typo":1}"#).is_err());
}

#[test]
fn the_throttle_rises_linearly_from_the_start_share() {
    let start = t("2026-12-07T10:00:00Z");
    let s = Schedule {
        start,
        percent: 10.0,
        duration_secs: 10 * 3600,
    };
    let table = [
        (start - 3600, 0.10),
        (start, 0.10),
        (start + 3600, 0.19),
        (start + 5 * 3600, 0.55),
        (start + 10 * 3600, 1.0),
        (start + 99 * 3600, 1.0),
    ];
    for (now, expected) in table {
        assert!((s.throttle(now) - expected).abs() < 1e-9, "{now}");
    }
    let eligible = [
        (0.0, 0),
        (0.10, 0),
        (0.19, start + 3600),
        (0.55, start + 5 * 3600),
        (1.0, start + 10 * 3600),
    ];
    for (w, expected) in eligible {
        let from = s.eligible_from(w);
        assert!(from.abs_diff(expected) <= 1, "{w}: {from} vs {expected}");
        if from > 0 {
            assert!(s.throttle(from) >= w && s.throttle(from - 1) < w, "{w}");
        }
    }
    let at_once = Schedule {
        duration_secs: 0,
        ..s
    };
    assert_eq!(at_once.throttle(start), 1.0);
    assert_eq!(at_once.eligible_from(0.7), start);
}

#[test]
fn wariness_from_the_node_id() {
    let a = wariness_of("web-0");
    assert_eq!(a, wariness_of("web-0"));
    assert_ne!(a, wariness_of("web-1"));
    for i in 0..1000 {
        let w = wariness_of(&format!("node-{i}"));
        assert!((0.0..1.0).contains(&w), "{w}");
    }
}

#[test]
fn maintenance_windows() {
    let monday = t("2026-12-07T00:00:00Z");
    assert_eq!(
        parse_windows("Sat,Sun 22:30 1h; mon-FRI 03:00 30m").unwrap(),
        vec![
            Window {
                days: vec![5, 6],
                start: 22 * 60 + 30,
                length: 60
            },
            Window {
                days: vec![0, 1, 2, 3, 4],
                start: 180,
                length: 30
            },
        ]
    );
    assert_eq!(
        parse_windows("Fri-Mon 00:00 1h").unwrap()[0].days,
        [4, 5, 6, 0]
    );
    assert_eq!(parse_windows("* 00:00 1h").unwrap()[0].days.len(), 7);
    assert_eq!(parse_windows("Tuesday 00:00 1h").unwrap()[0].days, [1]);
    for bad in [
        "",
        "Sat 22:30",
        "Sat 25:00 1h",
        "Sat 2:30 1h",
        "Caturday 22:30 1h",
        "Monk 22:30 1h",
        "Sat 22:30 0m",
        "Sat 22:30 169h",
        "Sat 22:30 1h extra",
    ] {
        assert!(parse_windows(bad).is_err(), "{bad}");
    }
    let w = parse_windows("Sat,Sun 22:30 1h; Sun 23:00 2h").unwrap();
    let table = [
        // Monday 10:00: Saturday 22:30.
        (monday + 10 * 3600, monday + 5 * 86_400 + 22 * 3600 + 1800),
        // Inside Saturday's window.
        (
            monday + 5 * 86_400 + 23 * 3600,
            monday + 5 * 86_400 + 23 * 3600,
        ),
        // Sunday 23:59 and Monday 00:30: inside the window that spills over.
        (
            monday + 6 * 86_400 + 23 * 3600 + 3540,
            monday + 6 * 86_400 + 23 * 3600 + 3540,
        ),
        (monday + 7 * 86_400 + 1800, monday + 7 * 86_400 + 1800),
        // Monday 01:00, its end: next Saturday.
        (
            monday + 7 * 86_400 + 3600,
            monday + 12 * 86_400 + 22 * 3600 + 1800,
        ),
    ];
    for (now, expected) in table {
        assert_eq!(next_open(&w, now), expected, "{now}");
    }
}

fn policy(wariness: f64, min_age: Option<u64>, window: Option<&str>) -> Policy {
    Policy {
        node: Node {
            id: "n".into(),
            wariness,
            configured: true,
        },
        min_age: min_age.map(|h| Duration::from_secs(h * 3600)),
        window: window.map(|w| (w.to_owned(), parse_windows(w).unwrap())),
        lock: None,
    }
}

#[test]
fn the_decision() {
    let start = t("2026-12-07T10:00:00Z");
    let h = |n: u64| start + n * 3600;
    let plain = Ok(Meta::default());
    let phased = Ok(Meta {
        schedule: Some(Schedule {
            start,
            percent: 10.0,
            duration_secs: 10 * 3600,
        }),
        ..Meta::default()
    });
    let urgent_phased = Ok(Meta {
        urgent: true,
        ..phased.clone().unwrap()
    });
    let withdrawn = Ok(Meta {
        withdrawn: true,
        ..Meta::default()
    });
    let malformed = Err("\"pecent=5\" is not one of".to_owned());
    // Windows: every day 00:00 for 2h.
    let night = Some("* 00:00 2h");
    type Row<'a> = (
        Policy,
        &'a Result<Meta, String>,
        Option<u64>,
        u64,
        &'a str,
        u64,
    );
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        (policy(0.5, None, None), &plain, Some(start), start, "now", 0),
        (policy(0.05, None, None), &phased, Some(start), start, "now", 0),
        (policy(0.55, None, None), &phased, Some(start), h(1), "at", h(5)),
        (policy(0.55, None, None), &phased, Some(start), h(6), "now", 0),
        (policy(0.0, None, None), &withdrawn, Some(start), h(1), "never", 0),
        (policy(0.0, None, None), &malformed, Some(start), h(1), "never", 0),
        // Minimum age: from publication.
        (policy(0.5, Some(24), None), &plain, Some(start), h(1), "at", h(24)),
        (policy(0.5, Some(24), None), &plain, Some(start), h(25), "now", 0),
        (policy(0.5, Some(24), None), &plain, None, h(25), "never", 0),
        // The throttle's time, then the age counted from publication.
        (policy(0.55, Some(2), None), &phased, Some(start), h(1), "at", h(5)),
        // Window: the next night after the age.
        (policy(0.5, Some(24), night), &plain, Some(start), h(1), "at", t("2026-12-09T00:00:00Z")),
        (policy(0.5, None, night), &plain, Some(start), h(1), "at", t("2026-12-08T00:00:00Z")),
        (policy(0.5, None, night), &plain, Some(start), t("2026-12-08T01:00:00Z"), "now", 0),
        // Urgent: no age, no window, still the throttle.
        (policy(0.05, Some(24), night), &urgent_phased, Some(start), h(1), "now", 0),
        (policy(0.55, Some(24), night), &urgent_phased, Some(start), h(1), "at", h(5)),
    ];
    for (i, (policy, meta, published, now, kind, at)) in table.into_iter().enumerate() {
        let decision = decide(&policy, meta, published, now);
        let ok = match (&decision, kind) {
            (Decision::Now { .. }, "now") | (Decision::Never { .. }, "never") => true,
            (Decision::At { at: got, .. }, "at") => got.abs_diff(at) <= 1,
            _ => false,
        };
        assert!(ok, "row {i}: {decision:?}, expected {kind} {at}");
    }
    let waits = |policy: Policy, now: u64| match decide(&policy, &phased, Some(start), now) {
        Decision::At { wait, .. } => Some(wait),
        _ => None,
    };
    assert_eq!(
        waits(policy(0.55, Some(48), None), h(1)),
        Some(Wait::Throttle)
    );
    assert_eq!(
        waits(policy(0.05, Some(48), None), h(1)),
        Some(Wait::MinAge)
    );
    assert_eq!(waits(policy(0.05, None, night), h(1)), Some(Wait::Window));
    let why = decide(&policy(0.0, None, None), &withdrawn, None, start).describe();
    assert_eq!(why, "never taken (withdrawn by the publisher)");
    let why = decide(&policy(0.5, Some(24), None), &plain, Some(start), h(1)).describe();
    assert!(
        why.starts_with("eligible at 2026-12-08T10:00:00Z ("),
        "{why}"
    );
}

/// The issue's figure: over 10,000 node ids, the share that has taken a
/// release tracks the throttle within 2 points at every hour, and a
/// withdrawal at hour H leaves it where the throttle of hour H put it.
/// `cargo test --lib fleet_of_ten_thousand -- --nocapture` prints the
/// table of BENCHMARKS.md.
#[test]
fn fleet_of_ten_thousand_follows_the_schedule() {
    let nodes: Vec<f64> = (0..10_000)
        .map(|i| wariness_of(&format!("node-{i}")))
        .collect();
    let schedule = Schedule {
        start: t("2026-12-07T10:00:00Z"),
        percent: 5.0,
        duration_secs: 48 * 3600,
    };
    let withdrawn_at = 12;
    let free = simulate(&nodes, &schedule, 54, None);
    let cut = simulate(&nodes, &schedule, 54, Some(withdrawn_at));
    println!("| hour | throttle | taken | taken, withdrawn at hour {withdrawn_at} |");
    println!("|---:|---:|---:|---:|");
    for ((hour, throttle, share), (_, _, cut_share)) in free.iter().zip(&cut) {
        if hour % 6 == 0 || *hour == withdrawn_at + 1 {
            println!(
                "| {hour} | {:.2}% | {:.2}% | {:.2}% |",
                throttle * 100.0,
                share * 100.0,
                cut_share * 100.0
            );
        }
        assert!(
            (share - throttle).abs() <= 0.02,
            "hour {hour}: {share} vs {throttle}"
        );
    }
    let (worst, hour) = free
        .iter()
        .map(|(hour, throttle, share)| ((share - throttle).abs(), *hour))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    println!(
        "| largest gap | {:.2} points at hour {hour} | | |",
        worst * 100.0
    );
    let plateau = cut[withdrawn_at as usize].2;
    assert!((plateau - schedule.throttle(schedule.start + withdrawn_at * 3600)).abs() <= 0.02);
    for (hour, _, share) in &cut[withdrawn_at as usize..] {
        assert_eq!(*share, plateau, "hour {hour}");
    }
    assert_eq!(free.last().unwrap().2, 1.0);
}
