//! The overlap strategy (`MOLTD_STRATEGY=overlap`), from the switch of
//! `current` on: the new release's services start beside the old ones, and
//! the old ones stop only once the new ones are ready and stayed up for the
//! grace period. Apart from [`super::apply`]'s stop-then-start sequence,
//! which shares only the steps before the switch, the undo and the commit.
//!
//! Why the URL or command of the health gate is asked only after the old
//! generation stopped: both generations accept on the same held sockets,
//! so while both run the old one may answer for the new one, and a broken
//! release would pass. What judges the new generation alone while both
//! run is its own readiness and its staying up; the probe then runs with
//! the new one alone, and a failure there is undone as in the restart
//! strategy (stop it, switch back, start the old one: with held sockets,
//! clients see latency, not refusals).

use super::Updater;
use super::apply::{Payload, Why};
use super::error::Error;
use super::layout;
use super::status::Phase;

impl Updater {
    /// The overlap strategy, from the switch of `current` on (see
    /// [`super::apply`]).
    pub(super) fn overlap_steps(
        &mut self,
        payload: &mut dyn Payload,
        to: &str,
        why: Why,
        from: Option<String>,
    ) -> Result<(), Error> {
        let sw = self.config.switch.clone();
        let from_text = from.clone().unwrap_or_default();
        self.reporter.phase(
            Phase::Switching,
            6,
            format!("switching current from {from_text} to {to}"),
        );
        if let Err(err) = layout::switch_current(&self.config.app_dir, to) {
            return self.abandon(payload, None, err);
        }
        self.reporter.phase(
            Phase::Starting,
            7,
            format!("starting {to} beside {from_text}"),
        );
        let next = payload.overlap(sw.restart.as_deref());
        self.reporter.phase(
            Phase::HealthCheck,
            8,
            format!("checking the health of {to}"),
        );
        // A failed overlap stopped what it started itself; a failed gate
        // leaves the second generation to stop.
        let gated = match next {
            Ok(next) => match self.stays_up(payload, &next) {
                Ok(()) => Ok(next),
                Err(problem) => Err((problem, Some(next))),
            },
            Err(problem) => Err((problem, None)),
        };
        match gated {
            Ok(next) => {
                self.reporter.phase(
                    Phase::Stopping,
                    8,
                    format!("stopping the services of {from_text}"),
                );
                // The new release serves already: a slow stop of the old
                // one does not undo it.
                if let Err(problem) = payload.retire(&next) {
                    log::warn!("cannot stop the services of {from_text}: {problem}");
                }
                if self.probes() {
                    // The second generation is each service now.
                    let names: Vec<String> = next
                        .iter()
                        .map(|n| n.strip_suffix("/next").unwrap_or(n).to_owned())
                        .collect();
                    self.reporter.phase(
                        Phase::HealthCheck,
                        8,
                        format!("checking the health of {to} alone"),
                    );
                    if let Err(problem) = self.health(payload, &names) {
                        let reason = format!("release {to} failed its health check: {problem}");
                        return self.undo(payload, &names, from.as_deref(), to, why, reason);
                    }
                }
                if let (Why::Rollback, Some(left)) = (why, &from) {
                    self.state.bad.insert(left.clone());
                }
                self.commit(payload, to, from)
            }
            Err((problem, next)) => {
                let reason = format!("release {to} failed its health check: {problem}");
                log::warn!("{reason}; stopping it");
                if let Some(Err(problem)) = next.map(|next| payload.abandon(&next)) {
                    log::error!("cannot stop the services of {to}: {problem}");
                }
                if let Some(from) = &from {
                    layout::switch_current(&self.config.app_dir, from)?;
                }
                if why == Why::Update {
                    self.state.bad.insert(to.to_owned());
                }
                self.state.applying = None;
                self.save_state()?;
                let reason = match &from {
                    Some(from) => format!("{reason}; rolled back to {from}, which never stopped"),
                    None => reason,
                };
                self.reporter.rolled_back(reason.clone());
                Err(Error::RolledBack(reason))
            }
        }
    }
}
