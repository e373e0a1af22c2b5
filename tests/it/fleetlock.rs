//! FleetLock against a loopback lock server that implements the protocol
//! (`POST /v1/pre-reboot` and `/v1/steady-state`, the
//! `fleet-lock-protocol: true` header, the node's id and group in the
//! body) with one slot: a replica takes the slot before it stops anything,
//! waits with the release staged while another holds it, and gives it back
//! after the switch, or at start after a switch cut short.

use crate::apply::{App, current, kill_leftovers, moltd, release, served, setup, ship, v1_and_v2};
use crate::feed::Feed;
use crate::rollout::settled;
use crate::util::Mode;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What the server saw: the operation, the node's id and group, and
/// whether it said yes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: String,
    pub id: String,
    pub group: String,
    pub granted: bool,
}

/// A FleetLock server with one slot per group.
pub struct LockServer {
    pub url: String,
    pub holder: Arc<Mutex<Option<String>>>,
    pub calls: Arc<Mutex<Vec<Call>>>,
}

impl LockServer {
    pub fn start() -> LockServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let holder: Arc<Mutex<Option<String>>> = Arc::default();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let (holder_in, calls_in) = (holder.clone(), calls.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (status, body) = answer(&stream, &holder_in, &calls_in);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        LockServer { url, holder, calls }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn refuse(kind: &str, value: &str) -> (u16, String) {
    (
        409,
        serde_json::json!({ "kind": kind, "value": value }).to_string(),
    )
}

/// One request: the protocol's checks, then the semaphore.
fn answer(
    stream: &std::net::TcpStream,
    holder: &Mutex<Option<String>>,
    calls: &Mutex<Vec<Call>>,
) -> (u16, String) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (mut length, mut protocol) = (0, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or_default();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "fleet-lock-protocol" => protocol = value.trim() == "true",
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    if method != "POST" || !protocol {
        return refuse("bad_request", "POST with fleet-lock-protocol: true");
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let params = &json["client_params"];
    let (Some(id), Some(group)) = (params["id"].as_str(), params["group"].as_str()) else {
        return refuse("bad_request", "client_params.id and group");
    };
    let mut holder = holder.lock().unwrap();
    let (op, granted) = match path {
        "/v1/pre-reboot" => {
            let free = holder.as_deref().is_none_or(|h| h == id);
            if free {
                *holder = Some(id.to_owned());
            }
            ("pre-reboot", free)
        }
        "/v1/steady-state" => {
            if holder.as_deref() == Some(id) {
                *holder = None;
            }
            ("steady-state", true)
        }
        _ => return (404, "{}".into()),
    };
    calls.lock().unwrap().push(Call {
        op: op.into(),
        id: id.into(),
        group: group.into(),
        granted,
    });
    match granted {
        true => (200, "{}".into()),
        false => refuse("failed_lock", "semaphore is full"),
    }
}

#[test]
fn a_switch_waits_for_the_fleet_lock_slot_and_gives_it_back() {
    let (dir, port) = setup("fleetlock_slot");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let lock = LockServer::start();
    *lock.holder.lock().unwrap() = Some("another-replica".into());
    let mut running = moltd(&dir, &feed, Mode::Pid1)
        .env("MOLTD_FLEETLOCK_URL", &lock.url)
        .env("MOLTD_FLEETLOCK_GROUP", "web")
        .env("MOLTD_NODE_ID", "web-0")
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    settled(&mut running);
    // The first boot stops nothing: no slot asked for.
    if !lock.calls().is_empty() {
        running.fail(&format!("calls at first boot: {:?}", lock.calls()));
    }
    feed.publish(release("2.0.0", App::Good));
    let reply = dir.moltd_client(&["update"]);
    let text = format!("{}{}", reply.stdout, reply.stderr);
    if !text.contains("refused (409): failed_lock: semaphore is full") {
        running.fail(&format!("reply: {text}"));
    }
    if current(&dir) != "v1.0.0" || served(port).as_deref() != Some("1.0.0") {
        running.fail("v1.0.0 should still run");
    }
    if !dir.join("app/releases/v2.0.0").is_dir() {
        running.fail("v2.0.0 should be staged");
    }
    *lock.holder.lock().unwrap() = None;
    let reply = dir.moltd_client(&["update"]);
    if !reply.stdout.contains("updated to v2.0.0") {
        running.fail(&format!("reply: {} {}", reply.stdout, reply.stderr));
    }
    let calls: Vec<(String, bool)> = lock
        .calls()
        .into_iter()
        .inspect(|c| assert_eq!((c.id.as_str(), c.group.as_str()), ("web-0", "web")))
        .map(|c| (c.op, c.granted))
        .collect();
    let expected = [
        ("pre-reboot", false),
        ("pre-reboot", true),
        ("steady-state", true),
    ]
    .map(|(op, granted)| (op.to_owned(), granted));
    if calls != expected || lock.holder.lock().unwrap().is_some() {
        running.fail(&format!("calls: {calls:?}"));
    }
}

#[test]
fn a_slot_held_by_a_switch_cut_short_is_given_back_at_start() {
    let (dir, port) = setup("fleetlock_crash");
    let feed = v1_and_v2();
    ship(&dir, "1.0.0");
    let lock = LockServer::start();
    // Killed, PID 1 and all, in the middle of the switch to v2.0.0.
    let first = moltd(&dir, &feed, Mode::Child)
        .env("MOLTD_FLEETLOCK_URL", &lock.url)
        .env("MOLTD_NODE_ID", "web-1")
        .env("MOLTD_TEST_CRASH_AT", "pid1:switching")
        .run();
    if first.signal != Some(9) || lock.holder.lock().unwrap().as_deref() != Some("web-1") {
        first.fail(&format!("not killed holding the slot: {:?}", lock.calls()));
    }
    kill_leftovers(&dir, &first);
    // The next start gives the slot back before anything else.
    let mut running = moltd(&dir, &feed, Mode::Child)
        .env("MOLTD_FLEETLOCK_URL", &lock.url)
        .env("MOLTD_NODE_ID", "web-1")
        .env("MOLTD_MODE", "stage")
        .spawn();
    running.wait_for("the slot to be given back", || {
        lock.holder.lock().unwrap().is_none()
    });
    running.wait_for("v1 to serve again", || {
        served(port).as_deref() == Some("1.0.0")
    });
    let calls = lock.calls();
    let ops: Vec<&str> = calls.iter().map(|c| c.op.as_str()).collect();
    if ops != ["pre-reboot", "steady-state"] || calls[0].group != "default" {
        running.fail(&format!("calls: {calls:?}"));
    }
}
