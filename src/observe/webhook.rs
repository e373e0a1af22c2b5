//! The webhook (`MOLTD_WEBHOOK`): a JSON POST when an update is available,
//! applied, failed or rolled back.
//!
//! Notices queue on a channel and a thread of their own delivers them, with
//! retries and exponential backoff, so a slow or absent receiver never holds
//! up an update. Uses the updater's HTTP client stack (reqwest, rustls with
//! the same roots); no second HTTP library.

use crate::update::status::{self, Status};
use serde::Serialize;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, SystemTime};

/// Attempts per notice before it is dropped.
const ATTEMPTS: u32 = 6;
/// The first wait between attempts; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body.
#[derive(Debug, Serialize)]
pub struct Notice {
    event: status::Notice,
    from: Option<String>,
    to: Option<String>,
    reason: Option<String>,
    host: String,
    time: String,
}

impl Notice {
    /// Describes `event` from the status at the moment it happened.
    pub fn new(event: status::Notice, s: &Status) -> Notice {
        let (from, to, reason) = match event {
            status::Notice::Available => (
                s.current.clone(),
                s.available.as_ref().map(|a| a.tag.clone()),
                None,
            ),
            status::Notice::Applied => (s.previous.clone(), s.current.clone(), None),
            status::Notice::Failed => (s.current.clone(), s.target.clone(), s.last_error.clone()),
            // The release that failed its check, and the one running again.
            status::Notice::RolledBack => {
                (s.target.clone(), s.current.clone(), s.last_error.clone())
            }
        };
        Notice {
            event,
            from,
            to,
            reason,
            host: crate::update::rollout::host_name(),
            time: status::rfc3339(SystemTime::now()),
        }
    }
}

/// Starts the delivery thread; notices go to the returned sender.
pub fn start(url: String) -> Result<Sender<Notice>, String> {
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(crate::update::http::tls_config())
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot set up the webhook client: {err}"))?;
    let (notices, queue) = mpsc::channel::<Notice>();
    super::spawn("webhook", move || {
        for notice in queue {
            deliver(&client, &url, &notice);
        }
    })?;
    Ok(notices)
}

fn deliver(client: &reqwest::blocking::Client, url: &str, notice: &Notice) {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("User-Agent", format!("moltd/{}", crate::version::version()))
            .body(serde_json::to_vec(notice).unwrap_or_default())
            .send();
        let problem = match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("status {}", response.status().as_u16()),
            // Without the URL: its path is usually the credential.
            Err(err) => crate::update::chain(&err.without_url()),
        };
        if attempt == ATTEMPTS {
            log::warn!("webhook gave up after {ATTEMPTS} attempts: {problem}");
            return;
        }
        log::info!(
            "webhook attempt {attempt} failed: {problem}; retrying in {}s",
            wait.as_secs()
        );
        std::thread::sleep(wait);
        wait *= 2;
    }
}
