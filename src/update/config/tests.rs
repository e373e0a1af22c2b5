//! Unit tests of the update configuration: parsing the MOLTD_* variables.
//! Apart so that config.rs holds only the parser.

use super::*;
use std::collections::HashMap;

type Vars<'a> = &'a [(&'a str, &'a str)];

fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    Config::from_env(&|name| map.get(name).cloned())
}

#[test]
fn durations_and_sizes() {
    let durations = [
        ("300", Some(300_000)),
        ("90s", Some(90_000)),
        ("5m", Some(300_000)),
        ("1h", Some(3_600_000)),
        ("250ms", Some(250)),
        ("5x", None),
        ("", None),
        ("m", None),
    ];
    for (text, millis) in durations {
        assert_eq!(
            parse_duration(text),
            millis.map(Duration::from_millis),
            "{text}"
        );
    }
    let sizes = [
        ("1024", Some(1024)),
        ("1K", Some(1024)),
        ("500M", Some(500 * MIB)),
        ("2GiB", Some(2048 * MIB)),
        ("3mb", Some(3 * MIB)),
        ("1T", None),
        ("x", None),
    ];
    for (text, bytes) in sizes {
        assert_eq!(parse_size(text), bytes, "{text}");
    }
}

#[test]
fn sources() {
    let table: [(Vars, Option<Source>); 6] = [
        (
            &[("MOLTD_REPO", "acme/app")],
            Some(Source::GitHub {
                api: "https://api.github.com".into(),
                owner: "acme".into(),
                repo: "app".into(),
            }),
        ),
        (
            &[
                ("GH_USER", "acme"),
                ("GH_REPO", "app"),
                ("GITHUB_API_URL", "http://127.0.0.1:9/"),
            ],
            Some(Source::GitHub {
                api: "http://127.0.0.1:9".into(),
                owner: "acme".into(),
                repo: "app".into(),
            }),
        ),
        (
            &[
                ("MOLTD_SOURCE", "gitea"),
                ("MOLTD_REPO", "a/b"),
                ("MOLTD_API_URL", "https://c.org/api/v1"),
            ],
            Some(Source::Gitea {
                api: "https://c.org/api/v1".into(),
                owner: "a".into(),
                repo: "b".into(),
            }),
        ),
        (
            &[("MOLTD_SOURCE", "url"), ("MOLTD_URL", "https://x/m.json")],
            Some(Source::Manifest {
                url: "https://x/m.json".into(),
            }),
        ),
        (&[], None),
        (&[("MOLTD_REPO", "no-slash")], None),
    ];
    for (vars, expected) in table {
        assert_eq!(
            config(vars).ok().and_then(|c| c.source),
            expected,
            "{vars:?}"
        );
    }
}

#[test]
fn interval_and_jitter() {
    let table: [(Vars, Option<(u64, u64)>); 8] = [
        (&[], Some((300, 30))),
        (&[("SLEEP", "60")], Some((60, 6))),
        // sleep(1) took this too, so SLEEP does.
        (&[("SLEEP", "5m")], Some((300, 30))),
        (
            &[("MOLTD_INTERVAL", "1h"), ("SLEEP", "60")],
            Some((3600, 360)),
        ),
        (
            &[("MOLTD_INTERVAL", "100s"), ("MOLTD_JITTER", "50%")],
            Some((100, 50)),
        ),
        (
            &[("MOLTD_INTERVAL", "100s"), ("MOLTD_JITTER", "0")],
            Some((100, 0)),
        ),
        (&[("SLEEP", "soon")], None),
        (&[("MOLTD_INTERVAL", "0")], None),
    ];
    for (vars, expected) in table {
        let mut vars = vars.to_vec();
        vars.push(("MOLTD_REPO", "a/b"));
        let got = config(&vars)
            .ok()
            .map(|c| (c.schedule.interval.as_secs(), c.schedule.jitter.as_secs()));
        assert_eq!(got, expected, "{vars:?}");
    }
}

#[test]
fn bad_values_name_the_variable() {
    let table = [
        ("MOLTD_VERSION", "banana"),
        ("MOLTD_PRERELEASE", "maybe"),
        ("MOLTD_MODE", "fast"),
        ("MOLTD_MAX_DOWNLOAD", "lots"),
        ("MOLTD_STRIP_COMPONENTS", "-1"),
        ("MOLTD_ENTRY", "/app/current/bin/app"),
        ("MOLTD_ENTRY", "../bin/app"),
        ("MOLTD_SOURCE", "ftp"),
        ("MOLTD_MIN_FREE", "150%"),
        ("MOLTD_MIN_FREE", "lots"),
        ("MOLTD_STRATEGY", "rolling"),
    ];
    for (name, value) in table {
        let err = config(&[("MOLTD_REPO", "a/b"), (name, value)]).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn skip_lists_tags_separated_by_commas_or_spaces() {
    let cases: &[(Option<&str>, &[&str])] = &[
        (None, &[]),
        (Some(""), &[]),
        (Some("v1.6.0"), &["v1.6.0"]),
        (
            Some(" v1.6.0, v1.7.0 ,,v2.0.0-rc.1 "),
            &["v1.6.0", "v1.7.0", "v2.0.0-rc.1"],
        ),
        (Some("v1.6.0 v1.6.0\tv1.7.0"), &["v1.6.0", "v1.7.0"]),
    ];
    for (value, expected) in cases {
        let mut vars = vec![("MOLTD_REPO", "a/b")];
        vars.extend(value.map(|v| ("MOLTD_SKIP", v)));
        let skip = config(&vars).unwrap().skip;
        let expected: BTreeSet<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(skip, expected, "MOLTD_SKIP={value:?}");
    }
}

#[test]
fn reserve_of_space_and_inodes() {
    let gib = 1024 * MIB;
    let table = [
        // Default: 5%, at most 1G; the same share of the inodes.
        (None, (300 * MIB, 50_000), Some((15 * MIB, 2_500))),
        (None, (100 * gib, 1_000_000), Some((gib, 10_000))),
        (Some("10%"), (100 * gib, 1_000), Some((10 * gib, 100))),
        (Some("0%"), (gib, 1_000), Some((0, 0))),
        (Some("200M"), (gib, 1_000), Some((200 * MIB, 195))),
        (Some("200M"), (100 * MIB, 1_000), Some((100 * MIB, 1_000))),
        (Some("64K"), (0, 0), Some((0, 0))),
        (Some("101%"), (gib, 1_000), None),
    ];
    for (value, (bytes, inodes), expected) in table {
        let mut vars = vec![("MOLTD_REPO", "a/b")];
        vars.extend(value.map(|v| ("MOLTD_MIN_FREE", v)));
        let got = config(&vars)
            .ok()
            .map(|c| c.limits.min_free.reserve(bytes, inodes));
        assert_eq!(got, expected, "{value:?} on {bytes} bytes, {inodes} inodes");
    }
}

#[test]
fn moltds_own_repository_shares_the_apps_source_kind() {
    let github = config(&[
        ("MOLTD_REPO", "acme/app"),
        ("GITHUB_API_URL", "http://feed/"),
        ("MOLTD_SELF_REPO", "acme/moltd"),
        ("MOLTD_SELF_VERSION", "^1.2"),
        ("MOLTD_SELF_MINISIGN_KEY", "RWkey"),
    ])
    .unwrap()
    .self_update
    .unwrap();
    assert_eq!(
        github.source,
        Source::GitHub {
            api: "http://feed".into(),
            owner: "acme".into(),
            repo: "moltd".into(),
        }
    );
    assert_eq!(github.asset, SELF_ASSET);
    assert!(
        github
            .policy
            .requirement
            .matches(&semver::Version::new(1, 3, 0))
    );
    assert!(
        !github
            .policy
            .requirement
            .matches(&semver::Version::new(2, 0, 0))
    );
    assert_eq!(github.minisign_key.as_deref(), Some("RWkey"));
    let gitea = config(&[
        ("MOLTD_SOURCE", "gitea"),
        ("MOLTD_API_URL", "https://codeberg.org/api/v1"),
        ("MOLTD_REPO", "acme/app"),
        ("MOLTD_SELF_REPO", "acme/moltd"),
        ("MOLTD_SELF_ASSET", "moltd-{arch}"),
    ])
    .unwrap()
    .self_update
    .unwrap();
    assert!(matches!(gitea.source, Source::Gitea { ref repo, .. } if repo == "moltd"));
    assert_eq!(gitea.asset, "moltd-{arch}");
    let none = config(&[("MOLTD_REPO", "acme/app")]).unwrap();
    assert_eq!(none.self_update, None);
}

/// `MOLTD_SELF_REPO` alone is a configuration: moltd updates itself, the
/// app has no source; without either, updates are off.
#[test]
fn moltds_own_repository_alone_updates_moltd_only() {
    let alone = config(&[
        ("MOLTD_SELF_REPO", "acme/moltd"),
        ("GITHUB_API_URL", "http://feed/"),
        ("MOLTD_INTERVAL", "1h"),
    ])
    .unwrap();
    assert_eq!(alone.source, None);
    assert!(matches!(alone.app_source(), Err(Error::NoSource)));
    let own = alone.self_update.as_ref().map(|s| &s.source);
    assert_eq!(alone.token_source(), own);
    assert!(matches!(own, Some(Source::GitHub { repo, .. }) if repo == "moltd"));
    assert_eq!(
        alone.schedule.interval,
        std::time::Duration::from_secs(3600)
    );
    assert!(matches!(config(&[]), Err(Error::NoSource)));
    // A bad value elsewhere is still reported.
    let bad = config(&[("MOLTD_SELF_REPO", "acme/moltd"), ("MOLTD_KEEP", "1")]);
    assert!(bad.unwrap_err().to_string().contains("MOLTD_KEEP"));
}

#[test]
fn bad_self_update_values_name_the_variable() {
    let table: [(Vars, &str); 4] = [
        (&[("MOLTD_SELF_REPO", "moltd")], "MOLTD_SELF_REPO"),
        (&[("MOLTD_SELF_REPO", "a/b/c")], "MOLTD_SELF_REPO"),
        (
            &[("MOLTD_SELF_REPO", "a/b"), ("MOLTD_SELF_VERSION", "newest")],
            "MOLTD_SELF_VERSION",
        ),
        (
            &[
                ("MOLTD_SOURCE", "url"),
                ("MOLTD_URL", "https://x/m.json"),
                ("MOLTD_SELF_REPO", "a/b"),
            ],
            "MOLTD_SOURCE",
        ),
    ];
    for (vars, name) in table {
        let mut vars = vars.to_vec();
        vars.push(("MOLTD_REPO", "acme/app"));
        let err = config(&vars).unwrap_err();
        assert!(err.to_string().contains(name), "{vars:?}: {err}");
    }
}
