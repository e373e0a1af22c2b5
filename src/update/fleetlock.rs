//! FleetLock: how many replicas switch releases at once, decided by a lock
//! server the fleet shares (the protocol Fedora CoreOS's Zincati speaks,
//! so an existing server such as airlock does).
//!
//! Why: the throttle spreads a release over time, but replicas whose turn
//! comes together still stop together. Before the first stop the agent
//! asks `POST {url}/v1/pre-reboot` for a slot; a refusal leaves the release
//! staged for the next check. After the switch (committed or rolled back)
//! it gives the slot back with `POST {url}/v1/steady-state`, and keeps
//! trying at start and at every check while `state.json` says it holds one
//! (a switch cut short by a kill must not keep the slot forever). Both
//! carry the header `fleet-lock-protocol: true` and the body
//! `{"client_params": {"id": NODE_ID, "group": GROUP}}`; any 2xx is a yes,
//! anything else a no, with the server's `{"kind", "value"}` as the reason.

use super::rollout::Lock;
use super::{Error, Updater, chain};
use reqwest::header::CONTENT_TYPE;

/// The most bytes of a lock server's answer read.
const ANSWER_LIMIT: u64 = 64 * 1024;

/// One FleetLock call: `op` is `pre-reboot` or `steady-state`.
fn call(http: &super::http::Http, lock: &Lock, id: &str, op: &str) -> Result<(), Error> {
    let url = format!("{}/v1/{op}", lock.url);
    let body = serde_json::json!({ "client_params": { "id": id, "group": lock.group } });
    let request = http
        .post(&url)
        .header("fleet-lock-protocol", "true")
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let response = http.send(request, &url)?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(());
    }
    let text = http
        .read_limited(response, &url, ANSWER_LIMIT, "answer")
        .unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let message = match (answer["kind"].as_str(), answer["value"].as_str()) {
        (Some(kind), Some(value)) => format!("{kind}: {value}"),
        (Some(kind), None) => kind.to_owned(),
        _ => String::from_utf8_lossy(&text).trim().to_owned(),
    };
    Err(Error::FleetLock {
        url,
        status,
        message,
    })
}

impl Updater {
    /// Takes a slot before anything stops; nothing to do without
    /// `MOLTD_FLEETLOCK_URL`.
    pub(super) fn lock_slot(&mut self) -> Result<(), Error> {
        let Some(lock) = &self.config.rollout.lock else {
            return Ok(());
        };
        call(&self.http, lock, &self.config.rollout.node.id, "pre-reboot")?;
        log::info!("fleet lock slot taken at {}", lock.url);
        self.state.fleet_lock = true;
        self.save_state()
    }

    /// Gives a held slot back; a failure is logged and tried again at the
    /// next check.
    pub(super) fn unlock_slot(&mut self) {
        if !self.state.fleet_lock {
            return;
        }
        if let Some(lock) = &self.config.rollout.lock {
            let id = &self.config.rollout.node.id;
            if let Err(err) = call(&self.http, lock, id, "steady-state") {
                log::warn!(
                    "cannot give the fleet lock slot back (tried again at the next check): {}",
                    chain(&err)
                );
                return;
            }
            log::info!("fleet lock slot given back at {}", lock.url);
        }
        self.state.fleet_lock = false;
        if let Err(err) = self.save_state() {
            log::warn!("{}", chain(&err));
        }
    }
}
