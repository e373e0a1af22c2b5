//! The one table of environment variables moltd's own personality reads.
//!
//! Why one table: the image holds no README, so `moltd help env` is the
//! reference people have at hand; `moltd config` shows every setting; and a
//! `MOLTD_*` variable missing from the table is reported as a likely typo.
//! Three lists would drift apart; this one cannot, and a test checks that
//! every `MOLTD_*` name the sources read is in it.

/// How a value may be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// As given.
    Plain,
    /// Never: a token.
    Secret,
    /// A URL without its user, password and query, which may hold
    /// credentials.
    Url,
    /// Only its scheme and host: a webhook's path is its credential.
    SecretUrl,
}

/// One variable.
pub struct Var {
    pub name: &'static str,
    /// Its heading in `moltd help env`.
    pub group: &'static str,
    /// What moltd does without it, in words.
    pub default: &'static str,
    /// One line saying what it is for.
    pub help: &'static str,
    pub show: Show,
}

const fn var(
    group: &'static str,
    name: &'static str,
    default: &'static str,
    help: &'static str,
    show: Show,
) -> Var {
    Var {
        name,
        group,
        default,
        help,
        show,
    }
}

const INIT: &str = "Init and supervision";
const LOGS: &str = "Logging";
const CLIENTS: &str = "Clients (sv, status, update, rollback, unmark)";
const OBSERVE: &str = "Observing from outside";
const SOURCE: &str = "Where releases come from";
pub const WHICH: &str = "When to check, which release";
pub const FETCH: &str = "Downloading, verifying, unpacking";
pub const SWITCH: &str = "Switching releases";
pub const SELF: &str = "moltd updating itself (digest always required)";
pub const AGENT: &str = "The update agent (the process that does the network work)";

use Show::{Plain, Secret, SecretUrl, Url};

/// Every variable, in the order `moltd help env` and `moltd config` show.
#[rustfmt::skip]
pub const VARS: &[Var] = &[
    var(INIT, "MOLTD_SERVICES", "/etc/service (when no command is given)", "supervise the service folders in this directory (--services)", Plain),
    var(INIT, "MOLTD_CONTROL", crate::services::DEFAULT_CONTROL, "the control socket sv and moltd status use (--control)", Plain),
    var(INIT, "SVWAIT", "7", "seconds a stopping service gets before KILL", Plain),
    var(INIT, "MOLTD_BACKOFF_MAX", "30", "longest delay, in seconds, before a crashed service restarts", Plain),
    var(INIT, "MOLTD_HELD_SOCKETS", "on", "off: ignore the services' listen files, for an app that binds its port itself", Plain),
    var(INIT, "MOLTD_READY_GRACE", "1s", "how long a service with no notify, notification-fd or check must stay up to count as ready", Plain),
    var(INIT, "DUMB_INIT_SETSID", "1", "0: forward signals to the child only, in moltd's session (-c)", Plain),
    var(INIT, "MOLTD_PASS_ENV", "none (children get no secret)", "secret variables children may see after all, comma-separated", Plain),
    var(LOGS, "MOLTD_LOG", "warn", "error, warn, info, debug or trace (-v, -vv)", Plain),
    var(LOGS, "VERBOSE", "off", "1, true, yes or on: debug, when MOLTD_LOG is not set", Plain),
    var(LOGS, "MOLTD_LOG_FORMAT", "human", "human, or json (one object a line)", Plain),
    var(CLIENTS, "MOLTD_CLIENT_TIMEOUT", "5s", "how long a client waits for moltd's first answer", Plain),
    var(CLIENTS, "MOLTD_CLIENT_WAIT", "30m", "how long moltd update and rollback wait for the outcome", Plain),
    var(OBSERVE, "MOLTD_LISTEN", "off", "address:port of the HTTP listener (/healthz, /status, /metrics)", Plain),
    var(OBSERVE, "MOLTD_API_TOKEN", "off (POST /update and /rollback disabled)", "bearer token for POST /update and /rollback", Secret),
    var(OBSERVE, "MOLTD_API_TOKEN_FILE", "none", "a file holding MOLTD_API_TOKEN (a mounted secret)", Plain),
    var(OBSERVE, "MOLTD_METRICS_FILE", "off", "node-exporter textfile, rewritten on change", Plain),
    var(OBSERVE, "MOLTD_WEBHOOK", "off", "https URL that update notices are posted to", SecretUrl),
    var(OBSERVE, "MOLTD_STATUS_FILE", "/run/moltd/status.json", "the update status document; empty: none", Plain),
    var(SOURCE, "MOLTD_SOURCE", "github", "github, gitea (or forgejo), or url (a JSON manifest)", Plain),
    var(SOURCE, "MOLTD_REPO", "none (updates off)", "owner/repo whose releases are installed", Plain),
    var(SOURCE, "GH_USER", "none", "the owner, with GH_REPO: the same as MOLTD_REPO=GH_USER/GH_REPO", Plain),
    var(SOURCE, "GH_REPO", "none", "the repository, with GH_USER", Plain),
    var(SOURCE, "GITHUB_API_URL", "https://api.github.com", "GitHub's API base (GitHub Enterprise: https://HOST/api/v3)", Url),
    var(SOURCE, "MOLTD_API_URL", "none", "the API base of a Gitea or Forgejo server (.../api/v1)", Url),
    var(SOURCE, "MOLTD_URL", "none", "the manifest's URL, with MOLTD_SOURCE=url", Url),
    var(SOURCE, "MOLTD_TOKEN", "none", "token for the release API (private repositories, rate limits)", Secret),
    var(SOURCE, "MOLTD_TOKEN_FILE", "none", "a file holding MOLTD_TOKEN (a mounted secret)", Plain),
    var(SOURCE, "GITHUB_TOKEN", "none", "the token, when MOLTD_TOKEN is not set", Secret),
    var(SOURCE, "GH_TOKEN", "none", "the token, when neither MOLTD_TOKEN nor GITHUB_TOKEN is set", Secret),
    var(SOURCE, "SSL_CERT_FILE", "none (Mozilla's roots, built in)", "a PEM file of extra CA certificates to trust", Plain),
    var(SOURCE, "SSL_CERT_DIR", "none (Mozilla's roots, built in)", "folders (colon-separated) of extra CA certificates", Plain),
    var(WHICH, "MOLTD_INTERVAL", "5m", "time between checks (90s, 5m, 1h)", Plain),
    var(WHICH, "SLEEP", "none", "the same, when MOLTD_INTERVAL is not set (seconds, or 5m)", Plain),
    var(WHICH, "MOLTD_JITTER", "10%", "random delay added to each check (30s, or a share of the interval)", Plain),
    var(WHICH, "MOLTD_MODE", "auto", "auto (install), stage (download, wait for moltd update), check (report)", Plain),
    var(WHICH, "MOLTD_TAG_PREFIX", "none", "only tags with this prefix (backend-v1.2.0)", Plain),
    var(WHICH, "MOLTD_VERSION", "*", "semver requirement, such as ^1.4 or =1.2.3", Plain),
    var(WHICH, "MOLTD_PRERELEASE", "false", "true: prereleases are eligible", Plain),
    var(WHICH, "MOLTD_SKIP", "none", "tags never to install, as if marked bad (comma-separated)", Plain),
    var(WHICH, "MOLTD_NODE_ID", "the hostname", "this replica's stable id, from which its rollout wariness is derived", Plain),
    var(WHICH, "MOLTD_ROLLOUT_WARINESS", "from SHA-256 of MOLTD_NODE_ID", "0 (canary: takes phased releases first) to 1 (last)", Plain),
    var(WHICH, "MOLTD_MIN_AGE", "none", "how long after publication a release may be applied (24h); urgent ones skip it", Plain),
    var(WHICH, "MOLTD_WINDOW", "always", "UTC windows for applying releases: 'Sat,Sun 22:30 1h; Mon-Fri 03:00 30m'", Plain),
    var(WHICH, "MOLTD_ASSET", "chosen by OS and architecture", "glob naming the asset ({version}, {os}, {arch})", Plain),
    var(FETCH, "MOLTD_REQUIRE_CHECKSUM", "true", "false: accept a release without a SHA-256 (digest field or checksums file)", Plain),
    var(FETCH, "MOLTD_MINISIGN_KEY", "none", "minisign public key (RW...) or .pub file; <asset>.minisig must verify", Plain),
    var(FETCH, "MOLTD_STRIP_COMPONENTS", "a single top folder", "leading folders to strip from archive entries", Plain),
    var(FETCH, "MOLTD_ENTRY", "none (no check); X for moltd -- $MOLTD_APP_DIR/current/X", "the program services run, inside a release (bin/app); see below", Plain),
    var(FETCH, "MOLTD_MAX_DOWNLOAD", "1G", "largest asset downloaded", Plain),
    var(FETCH, "MOLTD_MAX_UNPACKED", "4G", "most bytes an archive may unpack to", Plain),
    var(FETCH, "MOLTD_MAX_ENTRIES", "100000", "most entries an archive may hold", Plain),
    var(FETCH, "MOLTD_MIN_FREE", "5%, at most 1G", "space and inodes unpacking leaves free (200M, or 10%)", Plain),
    var(FETCH, "MOLTD_STALL_TIMEOUT", "30s", "a download with no byte for this long fails", Plain),
    var(FETCH, "MOLTD_DOWNLOAD_TIMEOUT", "3600s", "longest a download may take", Plain),
    var(SWITCH, "MOLTD_APP_DIR", "/app", "where releases/, current and .moltd/ live", Plain),
    var(SWITCH, "MOLTD_PREFLIGHT", "none", "shell command run in the new release's folder before anything stops; non-zero marks it bad", Plain),
    var(SWITCH, "MOLTD_PRE_UPDATE", "none", "shell command before the switch; non-zero aborts it", Plain),
    var(SWITCH, "MOLTD_POST_UPDATE", "none", "shell command after a committed update", Plain),
    var(SWITCH, "MOLTD_FLEETLOCK_URL", "none", "a FleetLock server: a slot is taken before a switch stops anything, given back after", Url),
    var(SWITCH, "MOLTD_FLEETLOCK_GROUP", "default", "this replica's group on the FleetLock server", Plain),
    var(SWITCH, "MOLTD_RESTART", "all services", "the services stopped and started around a switch", Plain),
    var(SWITCH, "MOLTD_STRATEGY", "restart", "restart (stop, switch, start) or overlap (start the new beside the old, stop the old once the new is ready and healthy)", Plain),
    var(SWITCH, "MOLTD_HEALTH_GRACE", "10s", "how long restarted services must stay up", Plain),
    var(SWITCH, "MOLTD_HEALTH_URL", "none", "URL that must answer 2xx after a switch", Url),
    var(SWITCH, "MOLTD_HEALTH_CMD", "none", "shell command that must exit 0 after a switch", Plain),
    var(SWITCH, "MOLTD_HEALTH_TIMEOUT", "60s", "how long the URL or command gets to pass", Plain),
    var(SWITCH, "MOLTD_HOOK_TIMEOUT", "600s", "how long a hook may run before it is killed", Plain),
    var(SWITCH, "MOLTD_KEEP", "3", "installed releases to keep (at least 2)", Plain),
    var(SELF, "MOLTD_SELF_REPO", "none (moltd does not update itself)", "owner/repo of moltd's own releases (same MOLTD_SOURCE, API URL and token)", Plain),
    var(SELF, "MOLTD_SELF_ASSET", crate::update::config::SELF_ASSET, "glob naming moltd's asset: the binary, or a .tar.gz holding moltd", Plain),
    var(SELF, "MOLTD_SELF_VERSION", "*", "semver requirement for moltd itself; =X.Y.Z pins (and may go back)", Plain),
    var(SELF, "MOLTD_SELF_MINISIGN_KEY", "none (strongly recommended)", "minisign public key (RW...) or .pub file for moltd's own assets", Plain),
    var(AGENT, "MOLTD_AGENT_USER", "the app dir's owner, else root", "user (name, uid or uid:gid) the agent runs as, when moltd is root", Plain),
    var(AGENT, "MOLTD_AGENT_MEMORY", "1G", "the agent's address-space limit (RLIMIT_AS), or unlimited", Plain),
];

/// The entry of `name`, if moltd reads it.
pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// `moltd help env`.
pub fn help() -> String {
    let mut text = String::from(
        "\
Environment variables moltd reads (its flags override them). `moltd config`
shows the value of each as moltd will use it, where it came from, and warns
about settings that do nothing.
",
    );
    let width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut group = "";
    for var in VARS {
        if var.group != group {
            group = var.group;
            text.push_str(&format!("\n{group}:\n"));
        }
        text.push_str(&format!(
            "  {:<width$}  {}\n  {:<width$}  (default: {})\n",
            var.name, var.help, "", var.default
        ));
    }
    text.push_str(
        "
A release is a .tar.gz; a single top folder is stripped. With MOLTD_ENTRY
(the image sets bin/app), a release without that file is fixed up when it
holds one program (a flat goreleaser archive: `app`, README, LICENSE), and
refused before anything is stopped otherwise.
Secrets (tokens, the webhook URL) never reach services or hooks unless
MOLTD_PASS_ENV names them.
",
    );
    text
}

/// The edit distance between `a` and `b` (insertions, deletions,
/// substitutions), for suggesting the name a typo meant.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The known variable closest to the unknown `name`, when close enough to
/// be what was meant.
pub fn nearest(name: &str) -> Option<&'static str> {
    VARS.iter()
        .map(|v| (distance(name, v.name), v.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, name)| name)
}

/// Whether a `MOLTD_*` name is one moltd reads. `MOLTD_TEST_CRASH_AT`
/// exists only in test builds; the agent's descriptors are set by PID 1
/// for the agent alone; `MOLTD_BUILD_VERSION` is read by the build
/// (`crate::version`), never at run time.
pub fn known(name: &str) -> bool {
    find(name).is_some()
        || name == crate::agent::FDS_VAR
        || name == "MOLTD_BUILD_VERSION"
        || (cfg!(feature = "test-hooks") && name == "MOLTD_TEST_CRASH_AT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_name_meant() {
        let table = [
            ("MOLTD_INTERVALL", Some("MOLTD_INTERVAL")),
            ("MOLTD_REPOS", Some("MOLTD_REPO")),
            ("MOLTD_HEALTHCMD", Some("MOLTD_HEALTH_CMD")),
            ("MOLTD_TOKN_FILE", Some("MOLTD_TOKEN_FILE")),
            ("MOLTD_SOMETHING_ELSE_ENTIRELY", None),
        ];
        for (typo, meant) in table {
            assert_eq!(nearest(typo), meant, "{typo}");
        }
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    /// What is hidden in `moltd config` is what children never see.
    #[test]
    fn secrets_are_the_withheld_variables() {
        for var in VARS {
            let hidden = matches!(var.show, Secret | SecretUrl);
            let withheld =
                crate::secrets::WITHHELD.contains(&var.name) && !var.name.ends_with("_FILE");
            assert_eq!(hidden, withheld, "{}", var.name);
        }
        for name in crate::secrets::WITHHELD {
            assert!(find(name).is_some(), "{name}");
        }
    }

    /// Every `MOLTD_*` name in the sources is in the table: a variable added
    /// without a row would be warned about as a typo and missing from help.
    #[test]
    fn every_variable_read_is_in_the_table() {
        fn visit(dir: &std::path::Path, missing: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    visit(&path, missing);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Tests name typos on purpose.
                let text = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (at, _) in text.match_indices("\"MOLTD_") {
                    let rest = &text[at + 1..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                        .unwrap_or(rest.len());
                    let name = &rest[..end];
                    let whole = rest[end..].starts_with('"');
                    if whole && !name.ends_with('_') && !known(name) {
                        missing.push(format!("{name} in {}", path.display()));
                    }
                }
            }
        }
        let mut missing = Vec::new();
        visit(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut missing,
        );
        missing.retain(|m| !m.starts_with("MOLTD_TEST_CRASH_AT "));
        assert!(missing.is_empty(), "not in VARS: {missing:?}");
        for var in VARS {
            assert!(
                !var.help.is_empty() && !var.default.is_empty(),
                "{}",
                var.name
            );
            assert_eq!(VARS.iter().filter(|v| v.name == var.name).count(), 1);
        }
    }
}
