//! The Prometheus text exposition (format 0.0.4) of moltd's state, for
//! `GET /metrics` and the node-exporter textfile alike.
//!
//! Written by hand: a dozen families do not justify a metrics crate, and a
//! pure function over a snapshot is easy to test.

use super::Services;
use crate::control::Phase;
use crate::update::status::Status;
use std::fmt::Write as _;
use std::time::Duration;

/// Renders every family. `update` is `None` without an updater.
pub fn render(services: &Services, update: Option<&Status>, uptime: Duration) -> String {
    let mut out = Text(String::new());
    if let Some(status) = update {
        let c = &status.counters;
        out.family("moltd_release_info", "gauge", "The release that runs.");
        if let Some(tag) = &status.current {
            out.sample("moltd_release_info", &[("tag", tag)], 1);
        }
        let counters = [
            (
                "moltd_update_checks_total",
                "Release list checks started.",
                c.checks,
            ),
            (
                "moltd_updates_applied_total",
                "Switches to a release that completed.",
                c.applied,
            ),
            (
                "moltd_updates_failed_total",
                "Update runs that failed.",
                c.failed,
            ),
            (
                "moltd_updates_rolled_back_total",
                "Switches undone after a failed health check.",
                c.rolled_back,
            ),
            (
                "moltd_downloaded_bytes_total",
                "Bytes of release assets downloaded.",
                c.downloaded_bytes,
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, "counter", help);
            out.sample(name, &[], value);
        }
        out.gauge(
            "moltd_releases_bad",
            "Releases marked bad.",
            status.bad_releases.len() as u64,
        );
        if let Some(at) = c.last_successful_check {
            out.gauge(
                "moltd_last_successful_check_timestamp_seconds",
                "Unix time of the last successful release check.",
                at,
            );
        }
        out.gauge(
            "moltd_updates_suspended",
            "1 while automatic updates are suspended (a manual change) or off.",
            u64::from(status.suspended.is_some()),
        );
    }
    out.family(
        "moltd_service_restarts_total",
        "counter",
        "Restarts of each service.",
    );
    for s in &services.list {
        out.sample(
            "moltd_service_restarts_total",
            &[("service", &s.name)],
            u64::from(s.restarts),
        );
    }
    out.family(
        "moltd_service_state",
        "gauge",
        "1 for the phase each service is in.",
    );
    for s in &services.list {
        for phase in Phase::ALL {
            let labels = [("service", s.name.as_str()), ("state", phase.word())];
            out.sample("moltd_service_state", &labels, u64::from(s.phase == phase));
        }
    }
    out.family(
        "moltd_reaped_total",
        "counter",
        "Processes reaped by moltd.",
    );
    out.sample("moltd_reaped_total", &[], services.reaped);
    out.gauge(
        "moltd_healthy",
        "1 while moltd and its essential services are up.",
        u64::from(services.healthy()),
    );
    out.gauge(
        "moltd_resident_memory_bytes",
        "moltd's (PID 1's) resident set size.",
        resident_bytes(&format!("/proc/{}/status", nix::unistd::getppid())),
    );
    out.gauge(
        "moltd_agent_resident_memory_bytes",
        "The update agent's resident set size.",
        resident_bytes("/proc/self/status"),
    );
    out.gauge(
        "moltd_uptime_seconds",
        "Seconds since moltd started.",
        uptime.as_secs(),
    );
    out.0
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A resident set size, from a `/proc/PID/status` (0 if unreadable).
fn resident_bytes(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ServiceState;

    #[test]
    fn families_and_labels() {
        let services = Services {
            list: vec![ServiceState {
                name: "we\"b".into(),
                phase: Phase::CrashLoop,
                restarts: 4,
                essential: false,
            }],
            shutting_down: false,
            reaped: 9,
        };
        let text = render(&services, None, Duration::from_secs(5));
        assert!(text.contains("moltd_service_restarts_total{service=\"we\\\"b\"} 4\n"));
        assert!(text.contains("moltd_service_state{service=\"we\\\"b\",state=\"crash-loop\"} 1\n"));
        assert!(text.contains("moltd_service_state{service=\"we\\\"b\",state=\"run\"} 0\n"));
        assert!(text.contains("moltd_reaped_total 9\n"));
        assert!(text.contains("moltd_uptime_seconds 5\n"));
        assert!(!text.contains("moltd_update_checks_total"));
        assert!(resident_bytes("/proc/self/status") > 0);
    }
}
