//! What operators see from outside: the HTTP listener (`MOLTD_LISTEN`:
//! health, status, metrics, update and rollback), the node-exporter
//! textfile (`MOLTD_METRICS_FILE`) and the webhook (`MOLTD_WEBHOOK`).
//!
//! Why snapshots: the event loop must never block, so it never serves a
//! client itself and never holds a lock across I/O. After each wake-up it
//! publishes a small [`Services`] value (only when it changed) into
//! [`Shared`]; the updater's status is already a shared copy. The listener,
//! the file writer and the webhook each run on a thread of their own, copy
//! what they need under a short lock, and do their I/O without it.
//!
//! Why no timer: the metrics file is rewritten when something it shows
//! changed (the loop's snapshot or the updater's status), so an idle moltd
//! stays asleep; RSS (PID 1's and the agent's) is read at each write and
//! each scrape, and the uptime is PID 1's.

mod metrics;
mod server;

pub use server::BACKLOG;
mod webhook;

use crate::control::{Phase, UpdateReply, UpdateRequest};
use crate::update::state::write_atomically;
use crate::update::status::{Hook, Status};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The observability settings, read from the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `MOLTD_LISTEN`: the HTTP listener's address.
    pub listen: Option<SocketAddr>,
    /// `MOLTD_API_TOKEN` (or `MOLTD_API_TOKEN_FILE`): enables `POST /update`
    /// and `POST /rollback`.
    pub api_token: Option<Secret>,
    /// `MOLTD_METRICS_FILE`: the node-exporter textfile.
    pub metrics_file: Option<PathBuf>,
    /// `MOLTD_WEBHOOK`: where update notices are posted.
    pub webhook: Option<String>,
}

/// A bad observability setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bad {var} {value:?}: expected {expected}")]
    Bad {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Secret(#[from] crate::secrets::Error),
}

impl Config {
    /// Reads and checks the settings (a parameter, so tests need no
    /// process environment).
    pub fn from_env(env: crate::Env) -> Result<Config, ConfigError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.to_string_lossy().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let listen = match var("MOLTD_LISTEN") {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| ConfigError::Bad {
                var: "MOLTD_LISTEN",
                value: text,
                expected: "an address and port such as 127.0.0.1:9090 or [::]:9090",
            })?),
        };
        let webhook = match var("MOLTD_WEBHOOK") {
            None => None,
            Some(url) => {
                let scheme = reqwest::Url::parse(&url).map(|u| u.scheme().to_owned());
                if !matches!(scheme.as_deref(), Ok("https" | "http")) {
                    return Err(ConfigError::Bad {
                        var: "MOLTD_WEBHOOK",
                        value: url,
                        expected: "an https:// URL",
                    });
                }
                Some(url)
            }
        };
        Ok(Config {
            listen,
            api_token: crate::secrets::read(env, "MOLTD_API_TOKEN")?.map(Secret),
            metrics_file: var("MOLTD_METRICS_FILE").map(PathBuf::from),
            webhook,
        })
    }
}

/// A token that is never printed, and compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

impl Secret {
    /// True when `given` is the secret. The time taken depends only on the
    /// lengths, never on where the first difference is.
    pub fn matches(&self, given: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = u8::from(secret.len() != given.len());
        for (i, byte) in given.iter().enumerate() {
            diff |= byte ^ secret.get(i).copied().unwrap_or(!byte);
        }
        diff == 0
    }
}

/// One service as the metrics and the health check see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub name: String,
    pub phase: Phase,
    pub restarts: u32,
    pub essential: bool,
}

/// What the event loop publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    pub list: Vec<ServiceState>,
    pub shutting_down: bool,
    /// Processes reaped since moltd started.
    pub reaped: u64,
}

impl Services {
    /// moltd is not shutting down and every essential service runs.
    pub fn healthy(&self) -> bool {
        !self.shutting_down
            && self
                .list
                .iter()
                .filter(|s| s.essential)
                .all(|s| s.phase == Phase::Running)
    }
}

/// How `POST /update` and `POST /rollback` reach the updater: answers at
/// once what cannot run now (an update in progress), else waits for the
/// updater's reply (as long as its download and health check). Blocking:
/// called on a thread of its own. Given by whoever runs the updater, so
/// this module needs nothing of it but the control types.
pub type Ask = Box<dyn Fn(UpdateRequest) -> UpdateReply + Send + Sync>;

/// What the observer threads read.
struct Shared {
    services: Mutex<Services>,
    update: OnceLock<Arc<Mutex<Status>>>,
    ask: OnceLock<Ask>,
    started: Instant,
}

impl Shared {
    fn services(&self) -> Services {
        self.services.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self) -> Option<Status> {
        let status = self.update.get()?;
        status.lock().ok().map(|s| s.clone())
    }

    /// The updater's reply to `request`; `None` when no updater runs.
    fn ask(&self, request: UpdateRequest) -> Option<UpdateReply> {
        self.ask.get().map(|ask| ask(request))
    }

    /// `GET /status`: the updater's status document when there is an
    /// updater, with `services` (name, state, restarts, essential) and
    /// `healthy` (as `/healthz`) added; those two alone without one.
    fn status(&self) -> Vec<u8> {
        let services = self.services();
        let mut document = match self.update().map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(update))) => update,
            _ => serde_json::Map::new(),
        };
        let list = services.list.iter().map(|s| {
            serde_json::json!({
                "name": s.name,
                "state": s.phase.word(),
                "restarts": s.restarts,
                "essential": s.essential,
            })
        });
        document.insert("services".into(), list.collect());
        document.insert("healthy".into(), services.healthy().into());
        serde_json::to_vec_pretty(&document).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        metrics::render(
            &self.services(),
            self.update().as_ref(),
            self.started.elapsed(),
        )
    }
}

/// The event loop's handle on the observers.
pub struct Observer {
    shared: Arc<Shared>,
    /// Wakes the metrics file writer; one pending wake-up is enough.
    file: Option<SyncSender<()>>,
    notices: Option<Sender<webhook::Notice>>,
    last: Services,
}

impl Observer {
    /// Starts the threads the configuration asks for. Failing to listen
    /// is an error: the operator asked for the endpoint.
    pub fn start(
        config: &Config,
        listener: Option<std::net::TcpListener>,
    ) -> Result<Observer, String> {
        let shared = Arc::new(Shared {
            services: Mutex::new(Services::default()),
            update: OnceLock::new(),
            ask: OnceLock::new(),
            // moltd's start: PID 1's, not this agent's, which may have
            // been restarted since.
            started: crate::sys::process::parent_age()
                .and_then(|age| Instant::now().checked_sub(age))
                .unwrap_or_else(Instant::now),
        });
        if let Some(listener) = listener {
            server::start(listener, config.api_token.clone(), shared.clone())?;
        }
        let file = match &config.metrics_file {
            None => None,
            Some(path) => {
                let (wake, woken) = sync_channel(1);
                let (shared, path) = (shared.clone(), path.clone());
                spawn("metrics-file", move || write_metrics(&shared, &path, woken))?;
                let _ = wake.try_send(());
                Some(wake)
            }
        };
        let notices = config.webhook.clone().map(webhook::start).transpose()?;
        Ok(Observer {
            shared,
            file,
            notices,
            last: Services::default(),
        })
    }

    /// Connects the updater: its status for `/status` and the metrics, how
    /// to ask it for `POST /update`, and the hook that feeds the metrics
    /// file and the webhook.
    pub fn attach_updater(&self, status: Arc<Mutex<Status>>, ask: Ask) -> Hook {
        let _ = self.shared.update.set(status);
        let _ = self.shared.ask.set(ask);
        let file = self.file.clone();
        let notices = self.notices.clone();
        Box::new(move |status, notice| {
            if let Some(file) = &file {
                let _ = file.try_send(());
            }
            if let (Some(notices), Some(notice)) = (&notices, notice) {
                let _ = notices.send(webhook::Notice::new(notice, status));
            }
        })
    }

    /// Publishes the loop's view if it changed since the last call.
    pub fn publish(&mut self, services: Services) {
        if services == self.last {
            return;
        }
        if let Ok(mut shared) = self.shared.services.lock() {
            *shared = services.clone();
        }
        self.last = services;
        if let Some(file) = &self.file {
            let _ = file.try_send(());
        }
    }
}

/// Starts a named thread with a small stack (they only format text).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .map(drop)
        .map_err(|err| format!("cannot start the {name} thread: {err}"))
}

/// The metrics file writer: asleep until something changed.
fn write_metrics(shared: &Shared, path: &std::path::Path, woken: Receiver<()>) {
    let mut warned = false;
    while woken.recv().is_ok() {
        match write_atomically(path, shared.metrics().as_bytes()) {
            Ok(()) => warned = false,
            Err(err) if !warned => {
                log::warn!("cannot write the metrics file {}: {err}", path.display());
                warned = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        Config::from_env(&env)
    }

    #[test]
    fn settings() {
        assert_eq!(parse(&[]).unwrap(), Config::default());
        let config = parse(&[
            ("MOLTD_LISTEN", "127.0.0.1:9090"),
            ("MOLTD_API_TOKEN", "s3cret"),
            ("MOLTD_WEBHOOK", "https://hooks.example/x"),
            ("MOLTD_METRICS_FILE", "/m/moltd.prom"),
        ])
        .unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(format!("{:?}", config.api_token), "Some(Secret(hidden))");
        for (var, value) in [("MOLTD_LISTEN", "localhost"), ("MOLTD_WEBHOOK", "ftp://x/")] {
            let err = parse(&[(var, value)]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Bad { var: v, .. } if v == var),
                "{err}"
            );
        }
    }

    #[test]
    fn secret_comparison() {
        let secret = Secret("token".into());
        assert!(secret.matches(b"token"));
        for wrong in ["", "toke", "tokens", "Token", "tokem"] {
            assert!(!secret.matches(wrong.as_bytes()), "{wrong}");
        }
    }

    #[test]
    fn health() {
        let service = |phase, essential| ServiceState {
            name: "s".into(),
            phase,
            restarts: 0,
            essential,
        };
        let mut services = Services {
            list: vec![
                service(Phase::CrashLoop, false),
                service(Phase::Running, true),
            ],
            ..Services::default()
        };
        assert!(services.healthy());
        services.list.push(service(Phase::Backoff, true));
        assert!(!services.healthy());
        services.list.pop();
        services.shutting_down = true;
        assert!(!services.healthy());
    }
}
