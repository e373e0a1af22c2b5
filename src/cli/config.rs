//! `moltd config`: the effective configuration, where each value came from,
//! after the same checks a normal start makes (so a bad value fails here
//! exactly as it would at start, naming the variable).
//!
//! The table lists every setting moltd reads; values are shown as given
//! (or as the default), secrets (tokens, the webhook URL) hidden.

use super::Env;

/// Every setting, with its default as shown to people.
const SETTINGS: &[(&str, &str)] = &[
    ("MOLTD_SERVICES", "/etc/service (when no command is given)"),
    ("MOLTD_CONTROL", crate::services::DEFAULT_CONTROL),
    (
        "MOLTD_CLIENT_TIMEOUT",
        "5s (sv, moltd status, update, rollback)",
    ),
    ("MOLTD_CLIENT_WAIT", "30m (moltd update, rollback, unmark)"),
    ("MOLTD_LOG", "warn"),
    ("VERBOSE", "off"),
    ("MOLTD_LOG_FORMAT", "human"),
    ("DUMB_INIT_SETSID", "1"),
    ("SVWAIT", "7"),
    ("MOLTD_BACKOFF_MAX", "30"),
    ("MOLTD_LISTEN", "off"),
    (
        "MOLTD_API_TOKEN",
        "off (POST /update and /rollback disabled)",
    ),
    ("MOLTD_API_TOKEN_FILE", "none"),
    ("MOLTD_METRICS_FILE", "off"),
    ("MOLTD_WEBHOOK", "off"),
    (
        "MOLTD_AGENT_USER",
        "the app dir's owner if not root, else root (moltd as root)",
    ),
    ("MOLTD_AGENT_MEMORY", "1G"),
    ("MOLTD_SOURCE", "github"),
    ("MOLTD_REPO", "none (updates off)"),
    ("GH_USER", "none"),
    ("GH_REPO", "none"),
    ("GITHUB_API_URL", "https://api.github.com"),
    ("MOLTD_API_URL", "none"),
    ("MOLTD_URL", "none"),
    ("MOLTD_TOKEN", "none"),
    ("MOLTD_TOKEN_FILE", "none"),
    ("GITHUB_TOKEN", "none"),
    ("GH_TOKEN", "none"),
    ("MOLTD_INTERVAL", "5m"),
    ("SLEEP", "none"),
    ("MOLTD_JITTER", "10%"),
    ("MOLTD_MODE", "auto"),
    ("MOLTD_TAG_PREFIX", "none"),
    ("MOLTD_VERSION", "*"),
    ("MOLTD_PRERELEASE", "false"),
    ("MOLTD_ASSET", "chosen by OS and architecture"),
    ("MOLTD_APP_DIR", "/app"),
    ("MOLTD_REQUIRE_CHECKSUM", "true"),
    ("MOLTD_MINISIGN_KEY", "none"),
    ("MOLTD_STRIP_COMPONENTS", "a single top folder"),
    ("MOLTD_MAX_DOWNLOAD", "1G"),
    ("MOLTD_MAX_UNPACKED", "4G"),
    ("MOLTD_MAX_ENTRIES", "100000"),
    ("MOLTD_MIN_FREE", "5%, at most 1G"),
    ("MOLTD_STALL_TIMEOUT", "30s"),
    ("MOLTD_DOWNLOAD_TIMEOUT", "3600s"),
    ("MOLTD_STATUS_FILE", "/run/moltd/status.json"),
    ("MOLTD_PRE_UPDATE", "none"),
    ("MOLTD_POST_UPDATE", "none"),
    ("MOLTD_RESTART", "all services"),
    ("MOLTD_HEALTH_GRACE", "10s"),
    ("MOLTD_HEALTH_URL", "none"),
    ("MOLTD_HEALTH_CMD", "none"),
    ("MOLTD_HEALTH_TIMEOUT", "60s"),
    ("MOLTD_HOOK_TIMEOUT", "600s"),
    ("MOLTD_KEEP", "3"),
    ("MOLTD_PASS_ENV", "none (children get no secret)"),
];

/// The report: one `NAME=value  (source)` line per setting. `flags` are
/// the values command-line flags set, by the variable they override.
pub fn report(env: Env, flags: &[(&str, String)]) -> String {
    let width = SETTINGS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, default) in SETTINGS {
        let flag = flags.iter().find(|(n, _)| n == name);
        let given = env(name).map(|v| v.to_string_lossy().into_owned());
        let (value, source) = match (flag, given) {
            (Some((_, value)), _) => (value.clone(), "flag"),
            (None, Some(value)) => (value, "environment"),
            (None, None) => ((*default).to_owned(), "default"),
        };
        // A file's path is no secret; the webhook URL holds one.
        let secret = crate::secrets::WITHHELD.contains(name) && !name.ends_with("_FILE");
        let value = match secret && source != "default" {
            true => "(hidden)".to_owned(),
            false => value,
        };
        text.push_str(&format!("{name:<width$} = {value:<30} ({source})\n"));
    }
    text.push_str("configuration is valid\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn sources_and_secrets() {
        let env = |name: &str| match name {
            "SVWAIT" => Some(OsString::from("3")),
            "MOLTD_API_TOKEN" => Some(OsString::from("s3cret")),
            "MOLTD_WEBHOOK" => Some(OsString::from("https://hooks.example/T0K3N")),
            _ => None,
        };
        let text = report(&env, &[("MOLTD_CONTROL", "/tmp/c.sock".into())]);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap()
                .to_owned()
        };
        assert!(line("SVWAIT").contains("3") && line("SVWAIT").ends_with("(environment)"));
        assert!(
            line("MOLTD_CONTROL").contains("/tmp/c.sock")
                && line("MOLTD_CONTROL").ends_with("(flag)")
        );
        assert!(line("MOLTD_KEEP").ends_with("(default)"));
        assert!(
            !text.contains("s3cret") && !text.contains("T0K3N"),
            "{text}"
        );
    }
}
