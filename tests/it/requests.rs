//! Update requests as every surface builds them: the command line, a raw
//! line on the control socket, and `POST /update`. A check changes
//! nothing, so "check" with "force" is refused on each, and refused before
//! the updater sees it: a hand-edited tree stays unaccepted.

use crate::apply::{App, current, free_port, moltd, release, served, setup, wait_for_state};
use crate::feed::*;
use crate::observe::http;
use crate::util::{Mode, Running, TestDir};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Sends `line` on the control socket as it is; returns the whole reply.
fn raw_request(dir: &TestDir, line: &str) -> String {
    let mut stream = UnixStream::connect(dir.control_socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// moltd serving v1 with a newer v2 in the feed and a hand edit in v1,
/// which suspends updates until `--force`; HTTP on `listen`.
fn hand_edited<'a>(dir: &'a TestDir, feed: &Feed, port: u16, listen: u16) -> Running<'a> {
    let mut running = moltd(dir, feed, Mode::Pid1)
        .env("MOLTD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("MOLTD_API_TOKEN", "right-token")
        .spawn();
    running.wait_for("v1 to serve", || served(port).as_deref() == Some("1.0.0"));
    wait_for_state(&mut running, dir, "idle");
    feed.publish(release("2.0.0", App::Good));
    dir.write("app/releases/v1.0.0/www/version", "1.0.0-hotfix");
    running
}

/// The refused request changed nothing: the edit still suspends updates
/// and v1 runs; the meaningful request (`--force`) still goes through.
fn nothing_accepted(running: &mut Running, dir: &TestDir, port: u16) {
    let check = dir.moltd_client(&["update", "--check"]);
    if check.code != Some(1) || !check.stderr.contains("www/version was modified") {
        running.fail(&format!("the hand-edited tree was accepted: {check:?}"));
    }
    if current(dir) != "v1.0.0" || served(port).as_deref() != Some("1.0.0-hotfix") {
        running.fail("the running release changed");
    }
    let forced = dir.moltd_client(&["update", "--force"]);
    if forced.code != Some(0) || served(port).as_deref() != Some("2.0.0") {
        running.fail(&format!("--force did not update: {forced:?}"));
    }
}

/// What the socket and HTTP say to check with force.
const REFUSED: &str = "bad request: check and force do not go together";

/// The bug: `moltd update --check --force` sent a plain check over the
/// socket, dropping `--force` without a word.
#[test]
fn update_check_force_is_a_usage_error() {
    let (dir, port) = setup("requests_cli");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = hand_edited(&dir, &feed, port, free_port());
    let cli = dir.moltd_client(&["update", "--check", "--force"]);
    if cli.code != Some(1)
        || !cli
            .stderr
            .contains("--check and --force do not go together")
    {
        running.fail(&format!("the command line took --check --force: {cli:?}"));
    }
    nothing_accepted(&mut running, &dir, port);
}

/// A check-with-force line on the socket got a bare `error\tbad request`
/// that did not say why.
#[test]
fn check_with_force_on_the_socket_is_a_bad_request_that_says_why() {
    let (dir, port) = setup("requests_socket");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let mut running = hand_edited(&dir, &feed, port, free_port());
    let socket = raw_request(&dir, "update\tcheck\tforce\n");
    if socket != format!("error\n{REFUSED} (a check changes nothing)\n") {
        running.fail(&format!("the socket took check with force: {socket:?}"));
    }
    nothing_accepted(&mut running, &dir, port);
}

/// The bug: `POST /update?check&force` accepted the hand-edited tree as
/// the installed release, then only checked.
#[test]
fn post_update_check_force_is_refused_and_accepts_nothing() {
    let (dir, port) = setup("requests_http");
    let feed = Feed::start(vec![release("1.0.0", App::Good)]);
    let listen = free_port();
    let mut running = hand_edited(&dir, &feed, port, listen);
    let http = http(listen, "POST", "/update?check&force", Some("right-token"));
    if !http
        .as_ref()
        .is_some_and(|(code, body)| *code == 400 && body.contains(REFUSED))
    {
        running.fail(&format!("POST /update?check&force: {http:?}"));
    }
    nothing_accepted(&mut running, &dir, port);
}
