//! Which release this node adopts after a check: the version policy's
//! choice ([`super::select`]) held to the publisher's rollout
//! ([`super::rollout`]), and the way out of a withdrawn release.
//!
//! Why apart from `select`: judging a release may read its `rollout.json`
//! asset, and leaving a withdrawn one looks at the installed releases;
//! `select` and `rollout` stay pure, this file does the looking.
//!
//! * The releases newer than the current one are judged newest first,
//!   down to the first this node takes (now, or staged until a time); those
//!   it does not take yet, or never, are passed over for this check.
//! * The earliest time a judged release becomes eligible is when the agent
//!   checks again (see [`Updater::wake_in`]): nothing polls to find out.
//! * A current release withdrawn by the publisher (the marker, a draft
//!   again, or gone from a list read to its end that still holds older
//!   releases: the list keeps the current release whatever the policy) is
//!   left for the newest good installed release, else the newest good one
//!   in the feed that this node takes, through the normal health-gated
//!   switch. Leaving is urgent: no minimum age, no window.

use super::rollout::{self, Decision, Judged, Meta, Report, Wait};
use super::select::{self, Candidate};
use super::{Error, Updater, chain, layout};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// The most bytes of a `rollout.json` read.
const ASSET_LIMIT: u64 = 64 * 1024;

/// What a check concluded.
#[derive(Debug)]
pub struct Plan {
    /// The release to move to, if any.
    pub newer: Option<Candidate>,
    /// Whether it is applied now or staged until a time.
    pub decision: Option<Decision>,
    /// The current release is withdrawn: where to go, and why.
    pub leave: Option<(Candidate, String)>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Updater {
    /// The publisher's word on `release`, reading its `rollout.json` if it
    /// has one (an error there makes it ineligible for this check).
    fn meta(&self, release: &super::release::Release) -> Result<Meta, String> {
        let asset = release.asset(rollout::ASSET).map(|asset| {
            self.http
                .document(&asset.download_url, "application/octet-stream", ASSET_LIMIT)
                .map_err(|err| format!("cannot read {}: {}", rollout::ASSET, chain(&err)))
        });
        rollout::meta_of(
            release.notes.as_deref(),
            release.rollout.as_ref(),
            asset.as_ref(),
        )
    }

    fn judge(&self, release: &super::release::Release, now: u64) -> Decision {
        self.judge_with(&self.config.rollout, release, now)
    }

    fn judge_with(
        &self,
        policy: &rollout::Policy,
        release: &super::release::Release,
        now: u64,
    ) -> Decision {
        let meta = self.meta(release);
        rollout::decide(policy, &meta, release.published, now)
    }

    /// How long until the agent should check again because a release
    /// the last check judged becomes eligible, if one waits: a second past
    /// the time, so the clock has passed it.
    pub fn wake_in(&self) -> Option<std::time::Duration> {
        let at = self.wake_at?;
        Some(std::time::Duration::from_secs(
            at.saturating_sub(unix_now()) + 1,
        ))
    }

    /// Judges the list the last check read (see the module doc).
    pub(super) fn plan(&mut self) -> Plan {
        let now = unix_now();
        let releases = &self.state.listing.releases;
        let policy = &self.config.policy;
        let skipped = self.state.skipped(releases);
        let current = self.state.current.clone();
        let current_version = current
            .as_deref()
            .and_then(|tag| select::tag_version(tag, &policy.tag_prefix));
        let mut report = Report::new(&self.config.rollout);
        let mut passed = skipped.clone();
        let mut wake: Option<u64> = None;
        let mut chosen = None;
        for candidate in select::ranked(releases, policy, &skipped) {
            let tag = &candidate.release.tag;
            let newer = current_version
                .as_ref()
                .is_none_or(|cur| candidate.version > *cur)
                || select::pinned(policy);
            if current.as_deref() == Some(tag.as_str()) || !newer {
                break;
            }
            let decision = self.judge(&candidate.release, now);
            report.releases.push(Judged::new(tag, &decision));
            match &decision {
                Decision::At { at, wait, .. } => {
                    wake = Some(wake.map_or(*at, |w| w.min(*at)));
                    if *wait == Wait::Throttle {
                        passed.insert(tag.clone());
                        continue;
                    }
                }
                Decision::Never { .. } => {
                    passed.insert(tag.clone());
                    continue;
                }
                Decision::Now { .. } => {}
            }
            chosen = Some(decision);
            break;
        }
        let newer = select::choose(releases, policy, current.as_deref(), &passed);
        let decision = newer.as_ref().and(chosen);
        let leave = self.leave(now, &skipped);
        if let Some((to, why)) = &leave {
            log::warn!("{why}: the release to go back to is {}", to.release.tag);
            report.leaving = Some(why.clone());
        }
        self.wake_at = wake;
        self.reporter.rollout(report);
        let newer = match &leave {
            Some(_) => None,
            None => newer,
        };
        Plan {
            newer,
            decision,
            leave,
        }
    }

    /// What a check that takes nothing says: that nothing is newer, or
    /// when the newest release judged is taken.
    pub(super) fn nothing_taken(&self, current: &str) -> String {
        let rollout = self.status().rollout.as_ref();
        match rollout.and_then(|r| r.releases.first()) {
            Some(first) => format!(
                "no newer release this node takes now (current: {current}); {}: {}",
                first.tag,
                first.describe()
            ),
            None => format!("no newer release (current: {current})"),
        }
    }

    /// Where to go when the current release is withdrawn, and why.
    fn leave(&self, now: u64, skipped: &BTreeSet<String>) -> Option<(Candidate, String)> {
        let policy = &self.config.policy;
        let listing = &self.state.listing;
        let current = self.state.current.as_deref()?;
        let version = select::tag_version(current, &policy.tag_prefix)?;
        let why = match listing.releases.iter().find(|r| r.tag == current) {
            Some(release) if release.draft => {
                format!("release {current} was turned back into a draft")
            }
            Some(release) => match self.meta(release) {
                Ok(meta) if meta.withdrawn => {
                    format!("release {current} was withdrawn by the publisher")
                }
                _ => return None,
            },
            None if listing.lost(current, &version, &policy.tag_prefix) => {
                format!(
                    "release {current} is no longer in the release list (deleted, or a draft again)"
                )
            }
            None => return None,
        };
        // A release is good when not marked, not withdrawn, and (when
        // listed) one this node takes.
        let takes = |tag: &str| match listing.releases.iter().find(|r| r.tag == tag) {
            Some(release) => match self.judge(release, now) {
                Decision::Never { .. } => false,
                Decision::At { wait, .. } => wait != Wait::Throttle,
                Decision::Now { .. } => true,
            },
            None => true,
        };
        let installed = layout::installed(&self.config.releases_dir())
            .into_iter()
            .filter(|tag| tag != current && !skipped.contains(tag))
            .filter_map(|tag| Some((select::tag_version(&tag, &policy.tag_prefix)?, tag)))
            .filter(|(_, tag)| takes(tag))
            .max();
        if let Some((version, tag)) = installed {
            let release = listing
                .releases
                .iter()
                .find(|r| r.tag == tag)
                .cloned()
                .unwrap_or_else(|| super::release::Release::named(&tag));
            return Some((Candidate { version, release }, why));
        }
        let feed = select::ranked(&listing.releases, policy, skipped)
            .into_iter()
            .find(|c| c.release.tag != current && takes(&c.release.tag));
        match feed {
            Some(candidate) => Some((candidate, why)),
            None => {
                log::warn!("{why}, but no other release can replace it: it keeps running");
                None
            }
        }
    }

    /// The first boot's candidates held to the rollout: those this node
    /// never takes (withdrawn, malformed) are out; of the rest, those the
    /// throttle reached come first. No minimum age and no window: nothing
    /// runs until a release is installed.
    pub(super) fn first_boot_order(&self, candidates: Vec<Candidate>) -> Vec<Candidate> {
        let now = unix_now();
        let policy = rollout::Policy {
            min_age: None,
            window: None,
            ..self.config.rollout.clone()
        };
        let (mut takes, mut later) = (Vec::new(), Vec::new());
        for candidate in candidates {
            match self.judge_with(&policy, &candidate.release, now) {
                Decision::Never { why } => {
                    log::info!("release {} is not installed: {why}", candidate.release.tag);
                }
                Decision::At {
                    wait: Wait::Throttle,
                    ..
                } => later.push(candidate),
                _ => takes.push(candidate),
            }
        }
        takes.extend(later);
        takes
    }
}

/// The error for a first boot whose every release is withdrawn.
pub(super) fn all_withdrawn(feed: String) -> Error {
    Error::NothingInstallable(format!(
        "every release of {feed} is withdrawn by its publisher or has malformed rollout metadata"
    ))
}
