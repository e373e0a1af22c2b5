//! `moltd config` says what moltd will do, not what it was given: the
//! original container's variables (`GH_USER`/`GH_REPO`, `SLEEP`, `VERBOSE`,
//! `GITHUB_TOKEN`) show up as the settings they stand in for, secrets in
//! URLs are hidden, and half-set or meaningless input is warned about, at
//! start too. `moltd help env` is the reference the image carries.

use crate::util::{Finished, Mode, Moltd, TestDir};

/// `moltd config` with `vars`.
fn config(dir: &TestDir, vars: &[(&str, &str)]) -> Finished {
    let mut moltd = Moltd::new(dir, Mode::Child).args(["config"]);
    for (name, value) in vars {
        moltd = moltd.env(name, value);
    }
    let finished = moltd.run();
    finished.expect_code(0);
    finished
}

/// The line of `name` in a `moltd config` report.
fn line<'a>(report: &'a Finished, name: &str) -> &'a str {
    report
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {}", report.stdout))
}

fn shows(report: &Finished, name: &str, value: &str, source: &str) {
    let line = line(report, name);
    let (_, shown) = line.split_once(" = ").unwrap();
    assert!(
        shown.starts_with(&format!("{value} ")) && shown.ends_with(&format!("({source})")),
        "{name}: expected {value} ({source}), got {line:?}\n{}",
        report.stdout
    );
}

#[test]
fn config_shows_what_the_seed_variables_do() {
    let dir = TestDir::new("config_seed");
    let report = config(
        &dir,
        &[
            ("GH_USER", "acme"),
            ("GH_REPO", "app"),
            ("SLEEP", "600"),
            ("VERBOSE", "1"),
            ("GITHUB_TOKEN", "ghp_s3cretvalue"),
            ("MOLTD_WEBHOOK", "https://hooks.example/services/T0K3N"),
            ("GITHUB_API_URL", "https://user:pa55@ghe.example/api/v3"),
            ("SSL_CERT_FILE", "/etc/ssl/extra.pem"),
        ],
    );
    let expected = [
        ("MOLTD_REPO", "acme/app", "from GH_USER and GH_REPO"),
        ("MOLTD_INTERVAL", "10m", "from SLEEP"),
        ("MOLTD_LOG", "debug", "from VERBOSE"),
        ("MOLTD_TOKEN", "(hidden)", "from GITHUB_TOKEN"),
        (
            "MOLTD_WEBHOOK",
            "https://hooks.example/(hidden)",
            "environment",
        ),
        (
            "GITHUB_API_URL",
            "https://(hidden)@ghe.example/api/v3",
            "environment",
        ),
        ("SSL_CERT_FILE", "/etc/ssl/extra.pem", "environment"),
        ("SSL_CERT_DIR", "none", "default"),
        ("MOLTD_KEEP", "3", "default"),
    ];
    for (name, value, source) in expected {
        shows(&report, name, value, source);
    }
    for secret in ["s3cretvalue", "T0K3N", "pa55"] {
        assert!(
            !report.stdout.contains(secret),
            "{secret}: {}",
            report.stdout
        );
    }
    assert!(!report.stdout.contains("warning:"), "{}", report.stdout);
}

/// The token in use is named, from a file too; never its value.
#[test]
fn config_names_the_token_in_use() {
    let dir = TestDir::new("config_token");
    let file = dir.write("token", "from-the-file\n");
    let file = file.to_str().unwrap();
    let report = config(
        &dir,
        &[
            ("MOLTD_REPO", "acme/app"),
            ("MOLTD_TOKEN_FILE", file),
            ("GH_TOKEN", "gho_other"),
        ],
    );
    shows(&report, "MOLTD_TOKEN", "(hidden)", "read MOLTD_TOKEN_FILE");
    shows(&report, "MOLTD_TOKEN_FILE", file, "environment");
    assert!(
        report.stdout.contains(
            "warning: GH_TOKEN is ignored: the release token comes from MOLTD_TOKEN_FILE"
        ),
        "{}",
        report.stdout
    );
    assert!(!report.stdout.contains("from-the-file") && !report.stdout.contains("gho_other"));
}

/// The original container gave SLEEP to sleep(1), which takes 5m too.
#[test]
fn sleep_takes_a_duration() {
    let dir = TestDir::new("config_sleep");
    let report = config(&dir, &[("MOLTD_REPO", "acme/app"), ("SLEEP", "5m")]);
    shows(&report, "MOLTD_INTERVAL", "5m", "from SLEEP");
    let bad = Moltd::new(&dir, Mode::Child)
        .args(["config"])
        .env("MOLTD_REPO", "acme/app")
        .env("SLEEP", "soon")
        .run();
    bad.expect_code(1)
        .expect_stderr_contains("bad SLEEP \"soon\": expected seconds, or a duration such as 5m");
}

const CONFUSED: [(&str, &str); 4] = [
    ("GH_USER", "acme"),
    ("VERBOSE", "enabled"),
    ("MOLTD_INTERVALL", "5m"),
    ("MOLTD_KEEP", "5"),
];

const WARNINGS: [&str; 4] = [
    "GH_USER is set but GH_REPO is not: set both (or MOLTD_REPO=owner/repo), updates are off",
    "VERBOSE=\"enabled\" is neither on (1, true, yes, on: debug logs) nor off",
    "updates are off (no MOLTD_REPO, GH_USER and GH_REPO, or MOLTD_URL), so MOLTD_KEEP does nothing",
    "unknown variable MOLTD_INTERVALL: did you mean MOLTD_INTERVAL?",
];

#[test]
fn config_warns_about_half_set_and_meaningless_input() {
    let dir = TestDir::new("config_warnings");
    let report = config(&dir, &CONFUSED);
    for warning in WARNINGS {
        assert!(
            report.stdout.contains(&format!("warning: {warning}")),
            "{warning}\n{}",
            report.stdout
        );
    }
    shows(&report, "MOLTD_REPO", "none (updates off)", "default");
    // VERBOSE that is not on does not set the level.
    shows(&report, "MOLTD_LOG", "warn", "default");
}

/// The same warnings at start, once each, and moltd runs all the same.
#[test]
fn start_warns_about_half_set_and_meaningless_input() {
    let dir = TestDir::new("config_start_warnings");
    let mut moltd = Moltd::new(&dir, Mode::Pid1).args(["--", "true"]);
    for (name, value) in CONFUSED {
        moltd = moltd.env(name, value);
    }
    let finished = moltd.run();
    finished.expect_code(0);
    for warning in WARNINGS {
        let line = format!("moltd: warn: {warning}");
        assert_eq!(
            finished.stderr.matches(&line).count(),
            1,
            "{warning}\n{}",
            finished.stderr
        );
    }
}

#[test]
fn help_covers_every_variable() {
    let dir = TestDir::new("config_help");
    let help = Moltd::new(&dir, Mode::Child).args(["--help"]).run();
    help.expect_code(0)
        .expect_stdout_contains("`moltd help env` lists every variable");
    let env = Moltd::new(&dir, Mode::Child).args(["help", "env"]).run();
    env.expect_code(0);
    // Every setting `moltd config` reports is explained.
    let report = config(&dir, &[]);
    for name in report.stdout.lines().filter_map(|l| l.split_once(" = ")) {
        let name = name.0.trim();
        assert!(
            env.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "{name} missing from moltd help env:\n{}",
            env.stdout
        );
    }
    for name in [
        "GH_USER",
        "SLEEP",
        "VERBOSE",
        "SSL_CERT_DIR",
        "MOLTD_ENTRY",
        "SVWAIT",
    ] {
        assert!(env.stdout.contains(name), "{name}");
    }
    let update = Moltd::new(&dir, Mode::Child)
        .args(["update", "--help"])
        .run();
    update
        .expect_code(0)
        .expect_stdout_contains("moltd help env");
    assert!(!update.stdout.contains("README"), "{}", update.stdout);
    let plain = Moltd::new(&dir, Mode::Child).args(["help"]).run();
    assert_eq!(plain.stdout, help.stdout);
    Moltd::new(&dir, Mode::Child)
        .args(["help", "colours"])
        .run()
        .expect_code(1)
        .expect_stderr_contains("help takes env or nothing");
}

/// A webhook URL's path is its credential: a failed delivery says why
/// without it.
#[test]
fn a_failing_webhook_never_logs_its_secret_path() {
    use crate::apply::{App, free_port, release, setup};
    let (dir, _) = setup("config_webhook_secret");
    let feed = crate::feed::Feed::start(vec![release("1.0.0", App::Good)]);
    // Nothing listens there: every delivery fails at once.
    let closed = free_port();
    let mut running = crate::apply::moltd(&dir, &feed, Mode::Pid1)
        .env(
            "MOLTD_WEBHOOK",
            format!("http://127.0.0.1:{closed}/hooks/S3CRETPATH"),
        )
        .spawn();
    running.wait_for_file("moltd.stderr", "webhook attempt 1 failed");
    let log = dir.read("moltd.stderr");
    if log.contains("S3CRETPATH") {
        running.fail("the webhook's secret path is in the log");
    }
}
