//! The second figure: 20 moltd instances, each PID 1 of its own
//! namespace, on one loopback feed. A release with a 10% start rolls out
//! in the order of the nodes' wariness (derived from `MOLTD_NODE_ID`);
//! withdrawn half-way, it stops reaching new nodes within one poll
//! interval and the nodes that took it go back.
//!
//! What is checked holds whatever the machine's load: no node ever runs
//! the release before the throttle reached it, and at every sample the
//! nodes running it are a prefix of the wariness order, but for nodes of
//! smaller wariness caught in the middle of their own update. The only
//! clock bounds are generous waits.

use crate::feed::*;
use crate::rollout::utc;
use crate::util::{Mode, Moltd, Running, TestDir};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NODES: usize = 20;
/// The poll interval: a withdrawal must be seen within it.
const INTERVAL: u64 = 2;
/// The rollout: 10% at once, then to 100% over this long.
const DURATION: f64 = 60.0;
const PERCENT: f64 = 10.0;

/// The wariness the formula gives `id`: the first 8 bytes of its
/// SHA-256 over 2^64.
fn wariness(id: &str) -> f64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap()) as f64 / 2f64.powi(64)
}

/// Node ids whose wariness values are at least `gap` apart, so that two
/// nodes' turns are seconds apart and the order is observable.
fn spaced_ids(gap: f64) -> Vec<(String, f64)> {
    let mut chosen: Vec<(String, f64)> = Vec::new();
    for i in 0.. {
        let id = format!("replica-{i}");
        let w = wariness(&id);
        if chosen.iter().all(|(_, other)| (other - w).abs() >= gap) {
            chosen.push((id, w));
        }
        if chosen.len() == NODES {
            break;
        }
    }
    chosen.sort_by(|a, b| a.1.total_cmp(&b.1));
    chosen
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The throttle at `t` of a rollout from `start`.
fn throttle(start: f64, t: f64) -> f64 {
    let p = PERCENT / 100.0;
    if t < start {
        return p;
    }
    (p + (1.0 - p) * (t - start) / DURATION).min(1.0)
}

struct Node<'a> {
    id: String,
    wariness: f64,
    dir: &'a TestDir,
    running: Running<'a>,
}

impl Node<'_> {
    fn current(&self) -> String {
        fs::read_link(self.dir.join("app/current"))
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether its updater is between a check and the end of an update.
    fn busy(&self) -> bool {
        let doc: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(self.dir.join("status.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let state = doc["state"].as_str().unwrap_or("idle");
        !matches!(state, "idle" | "completed" | "failed" | "rolled_back")
    }
}

#[test]
fn twenty_nodes_adopt_in_wariness_order_and_leave_a_withdrawn_release() {
    let began = Instant::now();
    let feed = Feed::start(vec![app_release("1.0.0")]);
    let ids = spaced_ids(0.03);
    let dirs: Vec<TestDir> = (0..NODES)
        .map(|i| TestDir::new(&format!("fleet_{i}")))
        .collect();
    let mut nodes: Vec<Node> = ids
        .iter()
        .zip(&dirs)
        .map(|((id, w), dir)| {
            dir.script("services/app/run", "#!/bin/sh\nexec sleep 3600\n");
            let running = Moltd::new(dir, Mode::Pid1)
                .args(["--services", "services"])
                .env("MOLTD_LOG", "info")
                .env("MOLTD_REPO", "acme/app")
                .env("GITHUB_API_URL", feed.url())
                .env("MOLTD_APP_DIR", dir.join("app"))
                .env("MOLTD_STATUS_FILE", dir.join("status.json"))
                .env("MOLTD_INTERVAL", format!("{INTERVAL}s"))
                .env("MOLTD_JITTER", "0s")
                .env("MOLTD_HEALTH_GRACE", "1s")
                .env("SVWAIT", "3")
                .env("MOLTD_NODE_ID", id)
                .spawn();
            Node {
                id: id.clone(),
                wariness: *w,
                dir,
                running,
            }
        })
        .collect();
    for node in &mut nodes {
        let dir = node.dir;
        node.running.wait_for("v1.0.0 installed", || {
            fs::read_link(dir.join("app/current")).is_ok_and(|t| t.ends_with("v1.0.0"))
        });
    }
    let started = began.elapsed();
    // The rollout starts in 2 s: the 10% take it at once, the rest in turn.
    let start = unix_now().ceil() + 2.0;
    let schedule = format!(
        "moltd-rollout: start={} percent={PERCENT} duration={}s",
        utc(start as i64 - unix_now() as i64),
        DURATION as u64
    );
    let mut v2 = app_release("2.0.0");
    v2.notes = Some(format!("Phased.\n{schedule}\n"));
    feed.publish(v2.clone());
    let published = Instant::now();

    let mut ever: BTreeSet<usize> = BTreeSet::new();
    let mut withdrawn_at: Option<Instant> = None;
    let mut allowed: Option<BTreeSet<usize>> = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let t = unix_now();
        let on_v2: Vec<usize> = (0..NODES)
            .filter(|&i| nodes[i].current() == "v2.0.0")
            .collect();
        let busy: Vec<bool> = nodes.iter().map(Node::busy).collect();
        for &i in &on_v2 {
            let node = &nodes[i];
            // Never ahead of its turn (a second for whole-second clocks).
            if node.wariness > throttle(start, t + 1.0) {
                let why = format!(
                    "{} (wariness {:.4}) runs v2.0.0 at throttle {:.4}",
                    node.id,
                    node.wariness,
                    throttle(start, t)
                );
                nodes[i].running.fail(&why);
            }
            // A prefix: every node of smaller wariness took it or is on its way.
            for j in 0..i {
                if !on_v2.contains(&j) && !busy[j] && !ever.contains(&j) {
                    let why = format!(
                        "{} runs v2.0.0 before {} (wariness {:.4} < {:.4}), which is idle on {}",
                        nodes[i].id,
                        nodes[j].id,
                        nodes[j].wariness,
                        nodes[i].wariness,
                        nodes[j].current()
                    );
                    nodes[i].running.fail(&why);
                }
            }
            ever.insert(i);
        }
        if let Some(allowed) = &allowed {
            if let Some(&i) = on_v2.iter().find(|i| !allowed.contains(i)) {
                let why = format!(
                    "{} took v2.0.0 more than one poll interval after it was withdrawn",
                    nodes[i].id
                );
                nodes[i].running.fail(&why);
            }
        }
        match withdrawn_at {
            None if throttle(start, t) >= 0.45 => {
                let mut gone = v2.clone();
                gone.notes = Some(format!(
                    "Leaks memory.\n{schedule}\nmoltd-rollout: withdrawn\n"
                ));
                feed.republish(gone);
                withdrawn_at = Some(Instant::now());
                println!(
                    "withdrawn at throttle {:.1}%: {} of {NODES} nodes had taken it",
                    throttle(start, t) * 100.0,
                    ever.len()
                );
            }
            // One poll interval and a margin later, nobody starts anew.
            Some(at) if allowed.is_none() && at.elapsed() > Duration::from_secs(INTERVAL + 3) => {
                let mut set = ever.clone();
                set.extend((0..NODES).filter(|&i| busy[i] || on_v2.contains(&i)));
                allowed = Some(set);
            }
            Some(_) if allowed.is_some() && on_v2.is_empty() && !busy.iter().any(|b| *b) => break,
            _ => {}
        }
        if Instant::now() > deadline {
            nodes[0].running.fail(&format!(
                "the rollout did not end: {} on v2.0.0, ever {:?}",
                on_v2.len(),
                ever
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The nodes that ever took it are the smallest wariness values.
    let count = ever.len();
    if ever != (0..count).collect::<BTreeSet<_>>() || count < 2 || count == NODES {
        nodes[0].running.fail(&format!(
            "adopters not a prefix of the wariness order: {ever:?}"
        ));
    }
    for node in &nodes {
        if node.current() != "v1.0.0" {
            panic!("{} is on {}", node.id, node.current());
        }
    }
    println!(
        "{NODES} nodes: started in {:.1}s, rollout and withdrawal in {:.1}s, back on v1.0.0 {:.1}s after the withdrawal; {count} took v2.0.0",
        started.as_secs_f64(),
        published.elapsed().as_secs_f64(),
        withdrawn_at.unwrap().elapsed().as_secs_f64()
    );
}
