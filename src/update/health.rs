//! The health gate: after a switch, the new release's services must stay
//! up for the grace period while `MOLTD_HEALTH_URL` answers 2xx (or
//! `MOLTD_HEALTH_CMD` exits 0) within the timeout; a failed gate shows the
//! end of what the command printed. Apart from [`super::apply`], which only
//! decides what to do with the gate's verdict.

use super::Updater;
use super::apply::Payload;
use super::chain;
use crate::sys::reap::ExitStatus;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

impl Updater {
    /// The health gate: the services stay up for the grace period, and the
    /// URL answers 2xx (or the command exits 0) within the timeout.
    pub(super) fn health(
        &mut self,
        payload: &mut dyn Payload,
        names: &[String],
    ) -> Result<(), String> {
        self.gate(payload, names, true)
    }

    /// The gate's first half alone: the services stay up for the grace
    /// period. While two generations share a socket, a URL or command could
    /// be answered by the old one, so only this can judge the new one.
    pub(super) fn stays_up(
        &mut self,
        payload: &mut dyn Payload,
        names: &[String],
    ) -> Result<(), String> {
        self.gate(payload, names, false)
    }

    /// Whether the gate has a URL or command to ask.
    pub(super) fn probes(&self) -> bool {
        let sw = &self.config.switch;
        sw.health_url.is_some() || sw.health_cmd.is_some()
    }

    fn gate(
        &mut self,
        payload: &mut dyn Payload,
        names: &[String],
        probe: bool,
    ) -> Result<(), String> {
        let sw = self.config.switch.clone();
        let started = Instant::now();
        let pids = payload.pids(names)?;
        if let Some((name, _)) = names.iter().zip(&pids).find(|(_, pid)| pid.is_none()) {
            return Err(format!("{name} is not running"));
        }
        let mut healthy = !(probe && self.probes());
        let mut last_problem = String::new();
        // What an earlier gate's command printed is not this one's.
        for finished in [true, false] {
            let _ = std::fs::remove_file(self.health_output(finished));
        }
        loop {
            if !healthy {
                match self.probe(payload, started + sw.health_timeout) {
                    Ok(()) => healthy = true,
                    Err(problem) => last_problem = problem,
                }
            }
            let now_pids = payload.pids(names)?;
            let changed = names.iter().zip(pids.iter().zip(&now_pids));
            if let Some((name, _)) = changed.clone().find(|(_, (a, b))| a != b) {
                return Err(format!("{name} exited during the health check"));
            }
            let elapsed = started.elapsed();
            if healthy && elapsed >= sw.health_grace {
                return Ok(());
            }
            if !healthy && elapsed >= sw.health_timeout {
                self.show_health_output();
                return Err(format!(
                    "no healthy answer within {}s: {last_problem}",
                    sw.health_timeout.as_secs_f64()
                ));
            }
            let left = match healthy {
                true => sw.health_grace.saturating_sub(elapsed),
                false => sw.health_timeout.saturating_sub(elapsed),
            };
            std::thread::sleep(left.min(PROBE_EVERY));
        }
    }

    /// One try of `MOLTD_HEALTH_URL` or `MOLTD_HEALTH_CMD`.
    fn probe(&mut self, payload: &mut dyn Payload, deadline: Instant) -> Result<(), String> {
        let sw = &self.config.switch;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if let Some(url) = &sw.health_url {
            let response = self
                .http
                .get(url)
                .timeout(left)
                .send()
                .map_err(|err| format!("{url}: {}", chain(&err)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("{url} answered http {}", status.as_u16()));
            }
        }
        if let Some(command) = &sw.health_cmd {
            let output = self.health_output(false);
            // Each try shows only its own lines, if the gate fails.
            std::fs::File::create(&output)
                .map_err(|err| format!("cannot create {}: {err}", output.display()))?;
            let status = payload.run_check(command, &output, left)?;
            // The last try may be one cut short by the deadline: the one
            // before it, which ran to its end, says more.
            let _ = std::fs::rename(&output, self.health_output(true));
            if status != ExitStatus::Exited(0) {
                return Err(format!(
                    "MOLTD_HEALTH_CMD exited with {}",
                    status.shell_code()
                ));
            }
        }
        Ok(())
    }
}

impl Updater {
    /// Where the health command's output goes: the try that runs
    /// (`health.try`, truncated at each), or the last that `finished`
    /// (`health.out`, exit status known).
    fn health_output(&self, finished: bool) -> PathBuf {
        let name = if finished { "health.out" } else { "health.try" };
        self.config.state_dir().join(name)
    }

    /// Logs the end of what the last finished try of `MOLTD_HEALTH_CMD`
    /// printed (or the last try, if none finished), each line prefixed
    /// `health | `: shown only when the gate fails, so a check that fails
    /// while the app starts leaves no trace.
    fn show_health_output(&self) {
        let open = |finished| std::fs::File::open(self.health_output(finished));
        let Ok(mut file) = open(true).or_else(|_| open(false)) else {
            return;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let skipped = len.saturating_sub(HEALTH_OUTPUT_BYTES);
        let mut tail = Vec::new();
        if file.seek(SeekFrom::Start(skipped)).is_err() || file.read_to_end(&mut tail).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&tail);
        let mut lines: Vec<&str> = text.lines().collect();
        // A line cut by the byte limit is dropped.
        if skipped > 0 && !lines.is_empty() {
            lines.remove(0);
        }
        let first = lines.len().saturating_sub(HEALTH_OUTPUT_LINES);
        if first > 0 || skipped > 0 {
            log::warn!("health | (the last {} lines)", lines.len() - first);
        }
        for line in &lines[first..] {
            log::warn!("health | {line}");
        }
    }
}

/// How much of a failed health command's output is shown: its last lines,
/// from its last bytes.
const HEALTH_OUTPUT_LINES: usize = 20;
const HEALTH_OUTPUT_BYTES: u64 = 4096;

/// How often the health gate looks again.
const PROBE_EVERY: Duration = Duration::from_millis(200);
