//! Fleet rollouts from the feed alone: whether this node takes a release
//! now, at a later time, or never, and why.
//!
//! Many replicas of one image poll the same feed; without this, a release
//! reaches all of them within one poll interval, so a bad one that passes
//! the health gate reaches the whole fleet. There is no server to ask, so
//! everything comes from what the publisher writes and what the node knows
//! of itself. Pure functions of those and a clock, so every rule is
//! table-tested and the fleet's behaviour can be simulated.
//!
//! * **Wariness** in [0, 1]: `MOLTD_ROLLOUT_WARINESS`, else the first 8
//!   bytes of SHA-256(`MOLTD_NODE_ID`, else the hostname) over 2^64. Ids
//!   spread evenly, so a share p of the fleet has a wariness below p.
//! * **Throttle** at time t, as Fedora CoreOS's update graph computes it:
//!   the start share `p` until `start`, then rising linearly to 1 over
//!   `duration`. A node takes the release when its wariness is at most the
//!   throttle, so from `start + (w - p) / (1 - p) * duration` on.
//! * **Markers**: `withdrawn` (never taken; a node running it leaves it)
//!   and `urgent` (skips the minimum age and the window, never the
//!   throttle).
//! * **Minimum age** (`MOLTD_MIN_AGE`, since publication) and the
//!   **window** (`MOLTD_WINDOW`): outside them a release the throttle
//!   allows is staged but not applied, until the time given.
//!
//! The metadata is a line of the release notes, strict and small:
//!
//! ```text
//! moltd-rollout: start=2026-12-07T10:00:00Z percent=5 duration=48h
//! moltd-rollout: withdrawn
//! ```
//!
//! Every `moltd-rollout:` line counts; together they give at most one of
//! each key and marker. `start`, `percent` and `duration` come together.
//! Anything else on such a line makes the release ineligible, with the
//! reason: a typo must not roll a release out to the whole fleet at once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

mod calendar;
pub use calendar::{Window, next_open, parse_rfc3339, parse_windows};

/// The prefix of a metadata line in the release notes.
pub const PREFIX: &str = "moltd-rollout:";

/// A release's phased rollout, as the publisher states it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unix time the rise starts.
    pub start: u64,
    /// The share of the fleet that may take it from the beginning, in
    /// percent (0 to 100).
    pub percent: f64,
    /// How long the share takes to rise from `percent` to 100.
    pub duration_secs: u64,
}

impl Schedule {
    /// The throttle in [0, 1] at Unix time `now`.
    pub fn throttle(&self, now: u64) -> f64 {
        let p = self.percent / 100.0;
        if now < self.start {
            return p;
        }
        if self.duration_secs == 0 {
            return 1.0;
        }
        let elapsed = (now - self.start) as f64 / self.duration_secs as f64;
        (p + (1.0 - p) * elapsed).min(1.0)
    }

    /// The first Unix time a node of wariness `w` takes the release.
    pub fn eligible_from(&self, w: f64) -> u64 {
        let p = self.percent / 100.0;
        if w <= p {
            return 0;
        }
        if p >= 1.0 || self.duration_secs == 0 {
            return self.start;
        }
        let share = ((w - p) / (1.0 - p)).clamp(0.0, 1.0);
        let at = self.start + (share * self.duration_secs as f64).ceil() as u64;
        // The first second the throttle reaches w, whichever way the
        // division rounded.
        (at.saturating_sub(2).max(self.start)..at + 3)
            .find(|&t| self.throttle(t) >= w)
            .unwrap_or(self.start + self.duration_secs)
    }
}

/// What the publisher says about one release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub withdrawn: bool,
    #[serde(default)]
    pub urgent: bool,
}

/// The `moltd-rollout:` lines of release notes; none gives the default
/// (rolls out as before). An error names what was wrong.
pub fn parse_notes(notes: &str) -> Result<Meta, String> {
    let mut items = Vec::new();
    for line in notes.lines() {
        if let Some(rest) = line.trim().strip_prefix(PREFIX) {
            items.extend(rest.split_whitespace());
        }
    }
    let mut meta = Meta::default();
    let (mut start, mut percent, mut duration) = (None, None, None);
    for item in items {
        let once = |seen: bool| match seen {
            true => Err(format!("{item:?} is given twice")),
            false => Ok(()),
        };
        match item.split_once('=') {
            None if item == "withdrawn" => {
                once(meta.withdrawn)?;
                meta.withdrawn = true;
            }
            None if item == "urgent" => {
                once(meta.urgent)?;
                meta.urgent = true;
            }
            Some(("start", value)) => {
                once(start.is_some())?;
                start = Some(parse_rfc3339(value).ok_or_else(|| {
                    format!("start={value:?} is not a UTC time such as 2026-12-07T10:00:00Z")
                })?);
            }
            Some(("percent", value)) => {
                once(percent.is_some())?;
                percent = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| {
                            format!("percent={value:?} is not a number from 0 to 100")
                        })?,
                );
            }
            Some(("duration", value)) => {
                once(duration.is_some())?;
                duration = Some(super::config::parse_duration(value).ok_or_else(|| {
                    format!("duration={value:?} is not a duration such as 48h or 90m")
                })?);
            }
            _ => {
                return Err(format!(
                    "{item:?} is not one of start=, percent=, duration=, withdrawn, urgent"
                ));
            }
        }
    }
    meta.schedule = match (start, percent, duration) {
        (None, None, None) => None,
        (Some(start), Some(percent), Some(duration)) => Some(Schedule {
            start,
            percent,
            duration_secs: duration.as_secs(),
        }),
        _ => return Err("start=, percent= and duration= must be given together".into()),
    };
    Ok(meta)
}

/// The fields of an asset `rollout.json` or a manifest's `rollout` object:
/// the same as the notes' line, as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    pub start: Option<String>,
    pub percent: Option<f64>,
    pub duration: Option<String>,
    #[serde(default)]
    pub withdrawn: bool,
    #[serde(default)]
    pub urgent: bool,
}

impl Fields {
    /// The same checks as [`parse_notes`], through its line syntax.
    pub fn meta(&self) -> Result<Meta, String> {
        let mut line = String::from(PREFIX);
        let words = [
            self.start.as_ref().map(|s| format!("start={s}")),
            self.percent.map(|p| format!("percent={p}")),
            self.duration.as_ref().map(|d| format!("duration={d}")),
            self.withdrawn.then(|| "withdrawn".to_owned()),
            self.urgent.then(|| "urgent".to_owned()),
        ];
        for word in words.into_iter().flatten() {
            if word.contains(char::is_whitespace) {
                return Err(format!("{word:?} holds a space"));
            }
            line.push(' ');
            line.push_str(&word);
        }
        parse_notes(&line)
    }
}

/// The node's wariness from its id: the first 8 bytes of SHA-256 over 2^64.
pub fn wariness_of(id: &str) -> f64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) as f64 / 2f64.powi(64)
}

/// The container's hostname: the pod's or StatefulSet member's name on
/// Kubernetes.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// Where the node's wariness came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `MOLTD_NODE_ID`, else the hostname.
    pub id: String,
    pub wariness: f64,
    /// Whether `MOLTD_ROLLOUT_WARINESS` set it (else it is the id's).
    pub configured: bool,
}

/// What this node's settings are.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub node: Node,
    /// `MOLTD_MIN_AGE`.
    pub min_age: Option<Duration>,
    /// `MOLTD_WINDOW`, as given and parsed.
    pub window: Option<(String, Vec<Window>)>,
    /// `MOLTD_FLEETLOCK_URL` and `MOLTD_FLEETLOCK_GROUP` (see
    /// [`super::fleetlock`]).
    pub lock: Option<Lock>,
}

/// A FleetLock server and this node's group there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// The server's base URL, without a trailing slash.
    pub url: String,
    pub group: String,
}

// Wariness is checked to be a number in [0, 1] when read: never NaN.
impl Eq for Node {}
impl Eq for Policy {}

impl Policy {
    /// `MOLTD_ROLLOUT_WARINESS`, `MOLTD_NODE_ID` (else the hostname),
    /// `MOLTD_MIN_AGE`, `MOLTD_WINDOW`, through `var` (trimmed, empty is
    /// unset).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Policy, super::Error> {
        let bad = |var: &'static str, value: &str, expected: &'static str| super::Error::Config {
            var,
            value: value.to_owned(),
            expected,
        };
        let id = var("MOLTD_NODE_ID").unwrap_or_else(host_name);
        let node = match var("MOLTD_ROLLOUT_WARINESS") {
            None => Node {
                wariness: wariness_of(&id),
                id,
                configured: false,
            },
            Some(text) => Node {
                wariness: text
                    .parse::<f64>()
                    .ok()
                    .filter(|w| (0.0..=1.0).contains(w))
                    .ok_or_else(|| {
                        bad(
                            "MOLTD_ROLLOUT_WARINESS",
                            &text,
                            "a number from 0 (takes releases first) to 1 (last)",
                        )
                    })?,
                id,
                configured: true,
            },
        };
        let min_age = match var("MOLTD_MIN_AGE") {
            None => None,
            Some(text) => Some(
                super::config::parse_duration(&text)
                    .ok_or_else(|| bad("MOLTD_MIN_AGE", &text, "a duration such as 24h"))?,
            ),
        };
        let window = match var("MOLTD_WINDOW") {
            None => None,
            Some(text) => match parse_windows(&text) {
                Ok(windows) => Some((text, windows)),
                Err(problem) => {
                    return Err(super::Error::Window {
                        value: text,
                        problem,
                    });
                }
            },
        };
        let lock = match var("MOLTD_FLEETLOCK_URL") {
            None => None,
            Some(url) => {
                let web = reqwest::Url::parse(&url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !web {
                    return Err(bad("MOLTD_FLEETLOCK_URL", &url, "an http or https URL"));
                }
                let group = var("MOLTD_FLEETLOCK_GROUP").unwrap_or_else(|| "default".into());
                let fits = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
                if !group.chars().all(fits) {
                    return Err(bad(
                        "MOLTD_FLEETLOCK_GROUP",
                        &group,
                        "letters, digits, '-' and '.'",
                    ));
                }
                Some(Lock {
                    url: url.trim_end_matches('/').to_owned(),
                    group,
                })
            }
        };
        Ok(Policy {
            node,
            min_age,
            window,
            lock,
        })
    }
}

/// Why a release waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// The throttle has not reached this node yet: not taken.
    Throttle,
    /// Younger than `MOLTD_MIN_AGE`: staged, not applied.
    MinAge,
    /// Outside `MOLTD_WINDOW`: staged, not applied.
    Window,
}

/// Whether this node takes a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Now { why: String },
    At { at: u64, wait: Wait, why: String },
    Never { why: String },
}

impl Decision {
    pub fn why(&self) -> &str {
        match self {
            Decision::Now { why } | Decision::At { why, .. } | Decision::Never { why } => why,
        }
    }

    /// A line for people.
    pub fn describe(&self) -> String {
        Judged::new("", self).describe()
    }
}

/// The asset a publisher may give the metadata in instead of the notes.
pub const ASSET: &str = "rollout.json";

/// What the publisher says of a release: its notes' lines, a manifest's
/// `rollout` object and the `rollout.json` asset's bytes (or why they could
/// not be read). A schedule from more than one of them is an error;
/// markers from any of them count.
pub fn meta_of(
    notes: Option<&str>,
    manifest: Option<&serde_json::Value>,
    asset: Option<&Result<Vec<u8>, String>>,
) -> Result<Meta, String> {
    let mut all = vec![parse_notes(notes.unwrap_or_default())];
    if let Some(value) = manifest {
        all.push(
            Fields::deserialize(value)
                .map_err(|err| format!("the manifest's rollout: {err}"))
                .and_then(|fields| fields.meta()),
        );
    }
    if let Some(bytes) = asset {
        all.push(bytes.clone().and_then(|bytes| {
            serde_json::from_slice::<Fields>(&bytes)
                .map_err(|err| format!("{ASSET}: {err}"))
                .and_then(|fields| fields.meta())
        }));
    }
    let mut meta = Meta::default();
    for one in all {
        let one = one?;
        if one.schedule.is_some() && meta.schedule.is_some() {
            return Err(format!(
                "the schedule is given twice (notes, {ASSET} or the manifest): give it once"
            ));
        }
        meta.schedule = meta.schedule.or(one.schedule);
        meta.withdrawn |= one.withdrawn;
        meta.urgent |= one.urgent;
    }
    Ok(meta)
}

/// A release as one check judged it, for the status document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub tag: String,
    /// `now`, `at` or `never`.
    pub decision: String,
    /// When it is taken, for `at` (RFC 3339).
    pub at: Option<String>,
    /// What it waits for, for `at`.
    pub waiting_for: Option<Wait>,
    pub why: String,
}

impl Judged {
    pub fn new(tag: &str, decision: &Decision) -> Judged {
        let (kind, at, wait) = match decision {
            Decision::Now { .. } => ("now", None, None),
            Decision::At { at, wait, .. } => ("at", Some(*at), Some(*wait)),
            Decision::Never { .. } => ("never", None, None),
        };
        Judged {
            tag: tag.to_owned(),
            decision: kind.to_owned(),
            at: at
                .map(|at| super::status::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(at))),
            waiting_for: wait,
            why: decision.why().to_owned(),
        }
    }
}

impl Judged {
    /// A line for people, as [`Decision::describe`] says it.
    pub fn describe(&self) -> String {
        match (self.decision.as_str(), &self.at) {
            ("now", _) => format!("eligible now ({})", self.why),
            ("at", Some(at)) => format!("eligible at {at} ({})", self.why),
            _ => format!("never taken ({})", self.why),
        }
    }
}

/// The rollout as this node sees it: the status document's `rollout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: String,
    pub wariness: f64,
    /// Set by `MOLTD_ROLLOUT_WARINESS` (else derived from the node id).
    pub wariness_configured: bool,
    pub min_age: Option<String>,
    pub window: Option<String>,
    /// The releases the last check judged, newest first: those newer than
    /// the current one down to the one taken.
    pub releases: Vec<Judged>,
    /// Why the last check left the current release (withdrawn by the
    /// publisher, or deleted), if it did.
    pub leaving: Option<String>,
}

impl Report {
    pub fn new(policy: &Policy) -> Report {
        Report {
            node_id: policy.node.id.clone(),
            wariness: policy.node.wariness,
            wariness_configured: policy.node.configured,
            min_age: policy.min_age.map(|d| format!("{}s", d.as_secs())),
            window: policy.window.as_ref().map(|(text, _)| text.clone()),
            releases: Vec::new(),
            leaving: None,
        }
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Whether this node takes a release with metadata `meta` (an error: it
/// was malformed), published at `published` (Unix time, if the feed says),
/// at Unix time `now`.
pub fn decide(
    policy: &Policy,
    meta: &Result<Meta, String>,
    published: Option<u64>,
    now: u64,
) -> Decision {
    let meta = match meta {
        Ok(meta) => meta,
        Err(problem) => {
            return Decision::Never {
                why: format!("malformed rollout metadata: {problem}"),
            };
        }
    };
    if meta.withdrawn {
        return Decision::Never {
            why: "withdrawn by the publisher".into(),
        };
    }
    let w = policy.node.wariness;
    let mut at = now;
    let mut wait = None;
    let mut why = match &meta.schedule {
        None => "no rollout schedule".to_owned(),
        Some(schedule) => {
            let from = schedule.eligible_from(w);
            if from > now {
                at = from;
                wait = Some(Wait::Throttle);
            }
            format!(
                "throttle {} now, this node's wariness {w:.4}",
                percent(schedule.throttle(now))
            )
        }
    };
    if meta.urgent {
        why.push_str("; urgent: no minimum age or window");
    } else {
        if let Some(age) = policy.min_age {
            let Some(published) = published else {
                return Decision::Never {
                    why: "MOLTD_MIN_AGE is set but the feed gives no publication time".into(),
                };
            };
            let old_enough = published.saturating_add(age.as_secs());
            if old_enough > at {
                at = old_enough;
                wait = Some(wait.unwrap_or(Wait::MinAge));
            }
        }
        if let Some((text, windows)) = &policy.window {
            let open = next_open(windows, at);
            if open > at {
                at = open;
                wait = Some(wait.unwrap_or(Wait::Window));
            }
            if wait == Some(Wait::Window) || open > now {
                why.push_str(&format!("; window {text}"));
            }
        }
        if wait == Some(Wait::MinAge) {
            why.push_str("; younger than MOLTD_MIN_AGE");
        }
    }
    match wait {
        None => Decision::Now { why },
        Some(wait) => Decision::At { at, wait, why },
    }
}

/// The share of a fleet of `nodes` that has taken a release by each of
/// `hours` hours after its start (the first entry: at the start), with the
/// throttle it tracks; when `withdrawn_at` is `Some(h)`, nobody takes it
/// after hour `h`. A node takes it at the first hour its wariness is at
/// most the throttle. The figure of BENCHMARKS.md, "Fleet rollouts".
pub fn simulate(
    nodes: &[f64],
    schedule: &Schedule,
    hours: u64,
    withdrawn_at: Option<u64>,
) -> Vec<(u64, f64, f64)> {
    let mut taken = vec![false; nodes.len()];
    let mut count = 0usize;
    (0..=hours)
        .map(|hour| {
            let now = schedule.start + hour * 3600;
            let throttle = schedule.throttle(now);
            if withdrawn_at.is_none_or(|h| hour <= h) {
                for (i, w) in nodes.iter().enumerate() {
                    if !taken[i] && schedule.eligible_from(*w) <= now {
                        taken[i] = true;
                        count += 1;
                    }
                }
            }
            (hour, throttle, count as f64 / nodes.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests;
