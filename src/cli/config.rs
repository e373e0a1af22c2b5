//! `moltd config`: what moltd will do with its configuration, after the
//! same checks a normal start makes (so a bad value fails here exactly as
//! it would at start, naming the variable), and the warnings a start logs.
//!
//! Each setting of [`super::vars::VARS`] is shown with its effective value
//! and where that came from: a flag, the variable itself, a variable of the
//! original container it stands in for (`GH_USER`/`GH_REPO`, `SLEEP`,
//! `VERBOSE`, `GITHUB_TOKEN`), or the default. Tokens are never shown, only
//! which variable or file is in use; URLs lose their credentials.
//!
//! The warnings are for input that is accepted but does nothing, or not
//! what it seems to: half a repository, a value moltd cannot read as on or
//! off, a variable shadowed by another, update settings without updates,
//! and `MOLTD_*` names moltd does not know (likely typos).

use super::Env;
use super::vars::{self, Show, VARS};
use crate::services::ServicesConfig;
use crate::update::config::Source;
use log::LevelFilter;
use std::ffi::OsString;
use std::time::Duration;

/// A variable's value, trimmed; empty counts as unset (as everywhere).
fn given(env: Env, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.to_string_lossy().trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The report: one `NAME = value (source)` line per setting, then the
/// warnings. `flags` are the values command-line flags set, by the
/// variable they override.
pub fn report(
    env: Env,
    names: &[OsString],
    services: &ServicesConfig,
    level: LevelFilter,
    flags: &[(&str, String)],
) -> String {
    let width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for var in VARS {
        let flag = flags.iter().find(|(n, _)| *n == var.name);
        let (value, source) = match flag {
            Some((_, value)) => (value.clone(), "flag".to_owned()),
            None => effective(env, var.name, services, level)
                .or_else(|| {
                    given(env, var.name).map(|v| (shown(var.show, &v), "environment".into()))
                })
                .unwrap_or_else(|| (var.default.to_owned(), "default".into())),
        };
        text.push_str(&format!("{:<width$} = {value:<30} ({source})\n", var.name));
    }
    for warning in warnings(env, names, services.updates_app()) {
        text.push_str(&format!("warning: {warning}\n"));
    }
    text.push_str("configuration is valid\n");
    text
}

/// The value moltd uses for `name` when it comes from somewhere other than
/// `name` itself, with where from.
fn effective(
    env: Env,
    name: &str,
    services: &ServicesConfig,
    level: LevelFilter,
) -> Option<(String, String)> {
    let updates = services.updates.as_ref();
    let unset = given(env, name).is_none();
    match name {
        "MOLTD_REPO" if unset => match updates?.source.as_ref()? {
            Source::GitHub { owner, repo, .. } | Source::Gitea { owner, repo, .. } => {
                Some((format!("{owner}/{repo}"), "from GH_USER and GH_REPO".into()))
            }
            Source::Manifest { .. } => None,
        },
        "MOLTD_INTERVAL" if unset && given(env, "SLEEP").is_some() => {
            Some((duration(updates?.schedule.interval), "from SLEEP".into()))
        }
        "MOLTD_LOG" if unset && env("VERBOSE").is_some_and(|v| super::truthy(&v)) => Some((
            level.to_string().to_ascii_lowercase(),
            "from VERBOSE".into(),
        )),
        "MOLTD_TOKEN" => {
            let (_, origin) = crate::secrets::release_token(env).ok()??;
            let how = if origin.ends_with("_FILE") {
                "read"
            } else {
                "from"
            };
            Some(("(hidden)".into(), format!("{how} {origin}")))
        }
        "MOLTD_NODE_ID" if unset => Some((updates?.rollout.node.id.clone(), "the hostname".into())),
        "MOLTD_ROLLOUT_WARINESS" if unset => {
            let node = &updates?.rollout.node;
            let from = match given(env, "MOLTD_NODE_ID") {
                Some(_) => "from SHA-256 of MOLTD_NODE_ID",
                None => "from SHA-256 of the hostname",
            };
            Some((format!("{:.4}", node.wariness), from.into()))
        }
        "MOLTD_API_TOKEN" if unset && given(env, "MOLTD_API_TOKEN_FILE").is_some() => {
            Some(("(hidden)".into(), "read from MOLTD_API_TOKEN_FILE".into()))
        }
        _ => None,
    }
}

/// `5m`, `90s`, `1h`: the shortest whole unit.
fn duration(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `value` as it may be printed.
fn shown(show: Show, value: &str) -> String {
    let url = reqwest::Url::parse(value).ok();
    match (show, url) {
        (Show::Plain, _) | (Show::Url, None) => value.to_owned(),
        (Show::Secret, _) | (Show::SecretUrl, None) => "(hidden)".to_owned(),
        (Show::Url | Show::SecretUrl, Some(url)) => {
            let mut text = format!("{}://", url.scheme());
            if !url.username().is_empty() || url.password().is_some() {
                text.push_str("(hidden)@");
            }
            text.push_str(url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                text.push_str(&format!(":{port}"));
            }
            match show {
                // A webhook's path is its credential.
                Show::SecretUrl => text.push_str("/(hidden)"),
                _ => {
                    text.push_str(url.path());
                    if url.query().is_some() {
                        text.push_str("?(hidden)");
                    }
                }
            }
            text
        }
    }
}

/// What `MOLTD_SELF_REPO` alone reads of the app's update settings: the
/// schedule, the limits of a download, where `.moltd/` lives.
const SELF_READS: &[&str] = &[
    "MOLTD_INTERVAL",
    "SLEEP",
    "MOLTD_JITTER",
    "MOLTD_MAX_DOWNLOAD",
    "MOLTD_MAX_UNPACKED",
    "MOLTD_MAX_ENTRIES",
    "MOLTD_MIN_FREE",
    "MOLTD_STALL_TIMEOUT",
    "MOLTD_DOWNLOAD_TIMEOUT",
];

/// What a start warns about (and `moltd config` lists): accepted input that
/// does nothing. `names` are the names in the environment; `updates` says
/// whether a release source for the app is configured.
pub fn warnings(env: Env, names: &[OsString], updates: bool) -> Vec<String> {
    let set = |name: &str| given(env, name).is_some();
    let mut found = Vec::new();
    match (set("MOLTD_REPO"), set("GH_USER"), set("GH_REPO")) {
        (false, true, false) => found.push(
            "GH_USER is set but GH_REPO is not: set both (or MOLTD_REPO=owner/repo), updates are off".into(),
        ),
        (false, false, true) => found.push(
            "GH_REPO is set but GH_USER is not: set both (or MOLTD_REPO=owner/repo), updates are off".into(),
        ),
        (true, user, repo) if user || repo => {
            let ignored: Vec<&str> = [("GH_USER", user), ("GH_REPO", repo)]
                .into_iter()
                .filter_map(|(name, set)| set.then_some(name))
                .collect();
            found.push(format!("{} ignored: MOLTD_REPO is set", and_is(&ignored)));
        }
        _ => {}
    }
    if let Some(value) = given(env, "VERBOSE") {
        let word = value.to_ascii_lowercase();
        if set("MOLTD_LOG") {
            found.push("VERBOSE is ignored: MOLTD_LOG is set".into());
        } else if !["1", "true", "yes", "on", "0", "false", "no", "off"].contains(&word.as_str()) {
            found.push(format!(
                "VERBOSE={value:?} is neither on (1, true, yes, on: debug logs) nor off (0, false, no, off): taken as off; MOLTD_LOG=info or debug says how much"
            ));
        }
    }
    if set("MOLTD_INTERVAL") && set("SLEEP") {
        found.push("SLEEP is ignored: MOLTD_INTERVAL is set".into());
    }
    if let Ok(Some((_, origin))) = crate::secrets::release_token(env) {
        let ignored: Vec<&str> = ["GITHUB_TOKEN", "GH_TOKEN"]
            .into_iter()
            .filter(|name| set(name) && *name != origin)
            .collect();
        if !ignored.is_empty() {
            found.push(format!(
                "{} ignored: the release token comes from {origin}",
                and_is(&ignored)
            ));
        }
    }
    if !updates {
        let itself = set("MOLTD_SELF_REPO");
        let idle: Vec<&str> = VARS
            .iter()
            .filter(|v| v.group == vars::WHICH || v.group == vars::FETCH)
            .chain(
                VARS.iter()
                    .filter(|v| v.group == vars::SWITCH && v.name != "MOLTD_APP_DIR"),
            )
            .map(|v| v.name)
            .filter(|name| set(name) && !(itself && SELF_READS.contains(name)))
            .collect();
        let off = match itself {
            true => "updates of the app are off",
            false => "updates are off",
        };
        if !idle.is_empty() {
            found.push(format!(
                "{off} (no MOLTD_REPO, GH_USER and GH_REPO, or MOLTD_URL), so {} nothing",
                match idle.len() {
                    1 => format!("{} does", idle[0]),
                    _ => format!("{} do", idle.join(", ")),
                }
            ));
        }
    }
    found.extend(self_update_warnings(&set));
    let mut unknown: Vec<String> = names
        .iter()
        .filter_map(|n| n.to_str())
        .filter(|n| n.starts_with("MOLTD_") && !vars::known(n))
        .map(str::to_owned)
        .collect();
    unknown.sort();
    for name in unknown {
        found.push(match vars::nearest(&name) {
            Some(meant) => format!("unknown variable {name}: did you mean {meant}?"),
            None => {
                format!("unknown variable {name}: moltd does not read it (see 'moltd help env')")
            }
        });
    }
    found
}

/// What is said about `MOLTD_SELF_*`: settings without the repository, and
/// the signature key a binary PID 1 will exec should have.
fn self_update_warnings(set: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let settings: Vec<&str> = VARS
        .iter()
        .filter(|v| v.group == vars::SELF && v.name != "MOLTD_SELF_REPO")
        .map(|v| v.name)
        .filter(|name| set(name))
        .collect();
    if !set("MOLTD_SELF_REPO") {
        if !settings.is_empty() {
            found.push(format!(
                "{} nothing without MOLTD_SELF_REPO",
                match settings.as_slice() {
                    [one] => format!("{one} does"),
                    _ => format!("{} do", settings.join(", ")),
                }
            ));
        }
        return found;
    }
    if !set("MOLTD_SELF_MINISIGN_KEY") {
        found.push(
            "MOLTD_SELF_REPO is set without MOLTD_SELF_MINISIGN_KEY: moltd will run a new binary of itself as PID 1 on the strength of a SHA-256 from the same feed; a signature key is strongly recommended".into(),
        );
    }
    found
}

/// `A is` or `A and B are`.
fn and_is(names: &[&str]) -> String {
    match names {
        [one] => format!("{one} is"),
        _ => format!("{} are", names.join(" and ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::tests::env_of;

    #[test]
    fn urls_lose_their_credentials() {
        let table = [
            (
                Show::Url,
                "https://u:p@h.example:8443/api?token=x",
                "https://(hidden)@h.example:8443/api?(hidden)",
            ),
            (
                Show::Url,
                "https://api.github.com",
                "https://api.github.com/",
            ),
            (Show::Url, "not a url", "not a url"),
            (
                Show::SecretUrl,
                "https://hooks.slack.com/services/T0/B0/XYZ",
                "https://hooks.slack.com/(hidden)",
            ),
            (Show::SecretUrl, "garbage/T0K3N", "(hidden)"),
            (Show::Secret, "ghp_abc", "(hidden)"),
        ];
        for (show, value, expected) in table {
            assert_eq!(shown(show, value), expected, "{value}");
        }
    }

    #[test]
    fn warnings_for_input_that_does_nothing() {
        let names = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        /// The variables, the names present, whether updates are on, and
        /// how the warnings start.
        type Row<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], bool, &'a [&'a str]);
        let table: [Row; 9] = [
            (
                &[("GH_USER", "acme")],
                &[],
                false,
                &["GH_USER is set but GH_REPO is not"],
            ),
            (
                &[("GH_REPO", "app")],
                &[],
                false,
                &["GH_REPO is set but GH_USER is not"],
            ),
            (&[("GH_USER", "acme"), ("GH_REPO", "app")], &[], true, &[]),
            (
                &[("MOLTD_REPO", "a/b"), ("GH_USER", "c")],
                &[],
                true,
                &["GH_USER is ignored: MOLTD_REPO is set"],
            ),
            (
                &[("VERBOSE", "enabled")],
                &[],
                false,
                &["VERBOSE=\"enabled\" is neither on"],
            ),
            (
                &[("VERBOSE", "1"), ("MOLTD_LOG", "info")],
                &[],
                false,
                &["VERBOSE is ignored"],
            ),
            (&[("VERBOSE", "off")], &[], false, &[]),
            (
                &[
                    ("MOLTD_INTERVAL", "1m"),
                    ("SLEEP", "5"),
                    ("GITHUB_TOKEN", "t"),
                    ("MOLTD_TOKEN", "u"),
                ],
                &[],
                true,
                &[
                    "SLEEP is ignored",
                    "GITHUB_TOKEN is ignored: the release token comes from MOLTD_TOKEN",
                ],
            ),
            (
                &[
                    ("MOLTD_INTERVAL", "1m"),
                    ("MOLTD_KEEP", "4"),
                    ("MOLTD_APP_DIR", "/x"),
                ],
                &[
                    "MOLTD_INTERVALL",
                    "MOLTD_ZZZZZZZZZZZZ",
                    "MOLTD_REPO",
                    "PATH",
                ],
                false,
                &[
                    "updates are off (no MOLTD_REPO, GH_USER and GH_REPO, or MOLTD_URL), so MOLTD_INTERVAL, MOLTD_KEEP do nothing",
                    "unknown variable MOLTD_INTERVALL: did you mean MOLTD_INTERVAL?",
                    "unknown variable MOLTD_ZZZZZZZZZZZZ: moltd does not read it",
                ],
            ),
        ];
        for (vars, present, updates, expected) in table {
            let got = warnings(&env_of(vars), &names(present), updates);
            assert_eq!(got.len(), expected.len(), "{vars:?}: {got:?}");
            for (got, want) in got.iter().zip(expected) {
                assert!(
                    got.starts_with(want),
                    "{vars:?}: {got:?}, expected {want:?}"
                );
            }
        }
    }

    #[test]
    fn warnings_for_moltds_own_updates() {
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a [&'a str]);
        let table: [Case; 5] = [
            (
                &[("MOLTD_SELF_REPO", "acme/moltd")],
                true,
                &["MOLTD_SELF_REPO is set without MOLTD_SELF_MINISIGN_KEY"],
            ),
            (
                &[
                    ("MOLTD_SELF_REPO", "acme/moltd"),
                    ("MOLTD_SELF_MINISIGN_KEY", "RW"),
                ],
                true,
                &[],
            ),
            (
                &[
                    ("MOLTD_SELF_REPO", "acme/moltd"),
                    ("MOLTD_SELF_MINISIGN_KEY", "RW"),
                ],
                false,
                &[],
            ),
            // Alone, what it reads is not said to do nothing; the rest is.
            (
                &[
                    ("MOLTD_SELF_REPO", "acme/moltd"),
                    ("MOLTD_SELF_MINISIGN_KEY", "RW"),
                    ("MOLTD_INTERVAL", "1h"),
                    ("MOLTD_MAX_DOWNLOAD", "100M"),
                    ("MOLTD_KEEP", "4"),
                ],
                false,
                &[
                    "updates of the app are off (no MOLTD_REPO, GH_USER and GH_REPO, or MOLTD_URL), so MOLTD_KEEP does nothing",
                ],
            ),
            (
                &[("MOLTD_SELF_ASSET", "x"), ("MOLTD_SELF_VERSION", "^1")],
                true,
                &["MOLTD_SELF_ASSET, MOLTD_SELF_VERSION do nothing without MOLTD_SELF_REPO"],
            ),
        ];
        for (vars, updates, expected) in table {
            let got = warnings(&env_of(vars), &[], updates);
            assert_eq!(got.len(), expected.len(), "{vars:?}: {got:?}");
            for (got, want) in got.iter().zip(expected) {
                assert!(
                    got.starts_with(want),
                    "{vars:?}: {got:?}, expected {want:?}"
                );
            }
        }
    }

    #[test]
    fn durations_in_the_shortest_unit() {
        for (secs, text) in [
            (300, "5m"),
            (600, "10m"),
            (90, "90s"),
            (7200, "2h"),
            (0, "0s"),
        ] {
            assert_eq!(duration(Duration::from_secs(secs)), text);
        }
    }
}
