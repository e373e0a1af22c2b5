//! A real HTTP/1.1 server on 127.0.0.1 for the update tests, shaped like
//! GitHub's releases API (and Gitea's, and a manifest host), plus builders
//! for real tar.gz archives, including hostile ones.
//!
//! One thread per connection, `Connection: close` after every answer. Each
//! test decides the answers with a handler closure; [`Feed`] is the usual
//! one, with hooks to misbehave. Every request is recorded for assertions.
//! An [`Endpoint`] may name the server by a host name and speak TLS with a
//! certificate from a test CA ([`TestCa`]).

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer, with ways to misbehave.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Announce this Content-Length instead of the body's.
    pub content_length: Option<u64>,
    /// Send only this many body bytes, then close.
    pub cut_after: Option<usize>,
    /// Wait this long after the headers before sending the body.
    pub stall: Option<Duration>,
    /// Send the body this many bytes at a time, pausing this long before
    /// each piece: a slow link. Stops when the client hangs up.
    pub trickle: Option<(usize, Duration)>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            body: body.into(),
            ..Response::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A certificate authority made for one test, and a server certificate it
/// signed for one name (a host name or an IP address).
pub struct TestCa {
    /// The CA certificate, PEM: what a client must trust.
    pub pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        TestCa {
            pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

/// Where a server listens (always 127.0.0.1) and how URLs name it.
#[derive(Clone, Default)]
pub struct Endpoint {
    /// The host in URLs; `127.0.0.1` when `None`.
    pub host: Option<String>,
    /// Speak HTTPS with this CA's server certificate.
    pub tls: Option<Arc<TestCa>>,
}

pub struct Server {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        Server::start_at(&Endpoint::default(), handler)
    }

    pub fn start_at(
        endpoint: &Endpoint,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "{}://{}:{}",
            if endpoint.tls.is_some() {
                "https"
            } else {
                "http"
            },
            endpoint.host.as_deref().unwrap_or("127.0.0.1"),
            listener.local_addr().unwrap().port()
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = requests.clone();
        let tls = endpoint.tls.as_ref().map(|ca| ca.server.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        None => {
                            let stream = serve(stream, &*handler, &log);
                            let _ = stream.shutdown(std::net::Shutdown::Both);
                        }
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let mut stream = serve(
                                rustls::StreamOwned::new(connection, stream),
                                &*handler,
                                &log,
                            );
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    }
                });
            }
        });
        Server { url, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

/// Answers the one request on `stream` and hands the stream back to be
/// closed.
fn serve<S: Read + Write>(stream: S, handler: &Handler, log: &Mutex<Vec<Request>>) -> S {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return reader.into_inner();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let request = Request {
        path,
        headers,
        at: Instant::now(),
    };
    log.lock().unwrap().push(request.clone());
    let response = handler(&request);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", response.status);
    let length = response
        .content_length
        .unwrap_or(response.body.len() as u64);
    head.push_str(&format!("Content-Length: {length}\r\n"));
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = reader.into_inner();
    if stream.write_all(head.as_bytes()).is_err() {
        return stream;
    }
    if let Some(stall) = response.stall {
        let _ = stream.flush();
        std::thread::sleep(stall);
    }
    let body = match response.cut_after {
        Some(n) => &response.body[..n.min(response.body.len())],
        None => &response.body[..],
    };
    match response.trickle {
        Some((size, pause)) => {
            for piece in body.chunks(size.max(1)) {
                std::thread::sleep(pause);
                if stream
                    .write_all(piece)
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
        None => {
            let _ = stream.write_all(body);
        }
    }
    let _ = stream.flush();
    stream
}

/// Serves `data` honouring `Range: bytes=N-`, with an ETag and
/// `Accept-Ranges` when `ranges` is true.
pub fn serve_file(request: &Request, data: &[u8], ranges: bool) -> Response {
    let etag = format!("\"{}\"", &sha256_hex(data)[..16]);
    let start = request
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(start) if ranges && start < data.len() => Response::new(206, &data[start..])
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
            )
            .header("ETag", etag)
            .header("Accept-Ranges", "bytes"),
        _ => {
            let response = Response::new(200, data).header("ETag", etag);
            if ranges {
                response.header("Accept-Ranges", "bytes")
            } else {
                response
            }
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One asset of a fake release.
#[derive(Clone)]
pub struct FakeAsset {
    pub name: String,
    pub data: Vec<u8>,
    /// Publish the `digest` field (GitHub since 2025).
    pub digest: Option<String>,
    /// GitHub's `download_count`: part of the list, so of its ETags.
    pub downloads: u64,
}

impl FakeAsset {
    pub fn new(name: &str, data: Vec<u8>) -> FakeAsset {
        let digest = Some(format!("sha256:{}", sha256_hex(&data)));
        FakeAsset {
            name: name.into(),
            data,
            digest,
            downloads: 0,
        }
    }

    pub fn without_digest(mut self) -> FakeAsset {
        self.digest = None;
        self
    }
}

#[derive(Clone)]
pub struct FakeRelease {
    pub tag: String,
    pub prerelease: bool,
    pub draft: bool,
    pub assets: Vec<FakeAsset>,
    /// The release notes (`body`); by default a line naming the tag.
    pub notes: Option<String>,
    /// `published_at` (RFC 3339); none by default.
    pub published_at: Option<String>,
}

impl FakeRelease {
    pub fn new(tag: &str, assets: Vec<FakeAsset>) -> FakeRelease {
        FakeRelease {
            tag: tag.into(),
            prerelease: false,
            draft: false,
            assets,
            notes: None,
            published_at: None,
        }
    }
}

/// The GitHub (or Gitea) JSON for `releases`, with download URLs on
/// `base` (`/dl/<tag>/<name>`) and API asset URLs (`/assets/<tag>/<name>`).
pub fn releases_json(base: &str, releases: &[FakeRelease]) -> String {
    let list: Vec<serde_json::Value> = releases
        .iter()
        .map(|r| {
            let assets: Vec<serde_json::Value> = r
                .assets
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "name": a.name,
                        "size": a.data.len(),
                        "browser_download_url": format!("{base}/dl/{}/{}", r.tag, a.name),
                        "url": format!("{base}/assets/{}/{}", r.tag, a.name),
                        "digest": a.digest,
                        "download_count": a.downloads,
                    })
                })
                .collect();
            serde_json::json!({
                "tag_name": r.tag,
                "draft": r.draft,
                "prerelease": r.prerelease,
                "body": r.notes.clone().unwrap_or_else(|| format!("notes for {}", r.tag)),
                "html_url": format!("{base}/releases/{}", r.tag),
                "published_at": r.published_at,
                "assets": assets,
            })
        })
        .collect();
    serde_json::to_string(&list).unwrap()
}

/// A GitHub-shaped feed: `/repos/acme/app/releases` (pages by `per_page`
/// and `page` with `Link` headers, ETag and 304 per page) and
/// `/dl/<tag>/<name>` (with ranges). `hook` may answer first. Releases can be
/// published while it runs.
pub struct Feed {
    pub server: Server,
    releases: Arc<Mutex<Vec<FakeRelease>>>,
    max_per_page: Arc<Mutex<usize>>,
    downloading: Arc<AtomicBool>,
}

/// The value of `name` in a request path's query.
pub fn query_param<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// One page of `releases` as GitHub serves it: `per_page` (default 30, at
/// most `max`) from `page` (from 1), a `Link` header naming the next and
/// last pages when there are more, and an ETag of the page.
pub fn releases_page(
    request: &Request,
    base: &str,
    releases: &[FakeRelease],
    max: usize,
) -> Response {
    let param = |name, default| {
        query_param(&request.path, name)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let size = param("per_page", 30).clamp(1, max);
    let page = param("page", 1).max(1);
    let pages = releases.len().div_ceil(size).max(1);
    let from = ((page - 1) * size).min(releases.len());
    let to = (from + size).min(releases.len());
    let body = releases_json(base, &releases[from..to]);
    let etag = format!("\"{}\"", &sha256_hex(body.as_bytes())[..16]);
    if request.header("if-none-match") == Some(etag.as_str()) {
        return Response::new(304, "").header("ETag", etag);
    }
    let path = request.path.split('?').next().unwrap_or_default();
    let link =
        |n: usize, rel: &str| format!("<{base}{path}?per_page={size}&page={n}>; rel=\"{rel}\"");
    let response = Response::new(200, body).header("ETag", etag);
    if page < pages {
        response.header(
            "Link",
            format!("{}, {}", link(page + 1, "next"), link(pages, "last")),
        )
    } else {
        response
    }
}

pub type Hook = Box<dyn Fn(&Request, &str) -> Option<Response> + Send + Sync>;

impl Feed {
    pub fn start(releases: Vec<FakeRelease>) -> Feed {
        Feed::with_hook(releases, Box::new(|_, _| None))
    }

    /// `hook` gets every request and the server's base URL.
    pub fn with_hook(releases: Vec<FakeRelease>, hook: Hook) -> Feed {
        Feed::at(&Endpoint::default(), releases, hook)
    }

    /// A feed reached at `endpoint` (a host name, TLS).
    pub fn at(endpoint: &Endpoint, releases: Vec<FakeRelease>, hook: Hook) -> Feed {
        let base = Arc::new(Mutex::new(String::new()));
        let base_in = base.clone();
        let releases = Arc::new(Mutex::new(releases));
        let releases_in = releases.clone();
        // GitHub's largest page.
        let max_per_page = Arc::new(Mutex::new(100));
        let max_in = max_per_page.clone();
        let downloading = Arc::new(AtomicBool::new(false));
        let downloading_in = downloading.clone();
        let server = Server::start_at(endpoint, move |request| {
            let base = base_in.lock().unwrap().clone();
            if let Some(response) = hook(request, &base) {
                return response;
            }
            let mut releases = releases_in.lock().unwrap();
            if downloading_in.load(Ordering::SeqCst) {
                let assets = releases.iter_mut().flat_map(|r| &mut r.assets);
                assets.for_each(|a| a.downloads += 1);
            }
            if request.path.starts_with("/repos/acme/app/releases") {
                return releases_page(request, &base, &releases, *max_in.lock().unwrap());
            }
            let file = releases.iter().find_map(|r| {
                r.assets
                    .iter()
                    .find(|a| request.path == format!("/dl/{}/{}", r.tag, a.name))
            });
            match file {
                Some(asset) => serve_file(request, &asset.data, true),
                None => Response::new(404, r#"{"message":"Not Found"}"#),
            }
        });
        *base.lock().unwrap() = server.url.clone();
        Feed {
            server,
            releases,
            max_per_page,
            downloading,
        }
    }

    /// Counts a download of every asset before each request, as a fleet
    /// does between two checks: every page gets a new ETag, the same tags.
    pub fn downloading(&self) {
        self.downloading.store(true, Ordering::SeqCst);
    }

    /// Serves at most `size` releases a page, however many are asked for.
    pub fn max_per_page(&self, size: usize) {
        *self.max_per_page.lock().unwrap() = size;
    }

    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Replaces the release with the same tag, as re-uploading its assets
    /// does.
    pub fn republish(&self, release: FakeRelease) {
        let mut releases = self.releases.lock().unwrap();
        let slot = releases.iter_mut().find(|r| r.tag == release.tag);
        *slot.expect("a published tag") = release;
    }

    /// Deletes the release `tag`.
    pub fn remove(&self, tag: &str) {
        self.releases.lock().unwrap().retain(|r| r.tag != tag);
    }

    /// Adds a release; it is listed first, as GitHub lists the newest.
    pub fn publish(&self, release: FakeRelease) {
        self.releases.lock().unwrap().insert(0, release);
    }
}

/// One entry of a test archive. Paths and link targets are written into the
/// header as given, so hostile names are possible.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

/// A tar.gz of `entries`.
pub fn targz(entries: &[Entry]) -> Vec<u8> {
    gzip(&tar(entries))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (path, link, kind, data, mode): (&str, &str, tar::EntryType, &[u8], u32) = match entry {
            Entry::File(p, d, m) => (p, "", tar::EntryType::Regular, d, *m),
            Entry::Dir(p) => (p, "", tar::EntryType::Directory, b"", 0o755),
            Entry::Symlink(p, t) => (p, t, tar::EntryType::Symlink, b"", 0o777),
            Entry::HardLink(p, t) => (p, t, tar::EntryType::Link, b"", 0o644),
            Entry::CharDevice(p) => (p, "", tar::EntryType::Char, b"", 0o644),
            Entry::Fifo(p) => (p, "", tar::EntryType::Fifo, b"", 0o644),
        };
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A plausible release: `app-<version>/bin/app` (executable) and
/// `app-<version>/VERSION`.
pub fn app_archive(version: &str) -> Vec<u8> {
    let top = format!("app-{version}");
    let bin = format!("{top}/bin/app");
    let file = format!("{top}/VERSION");
    let script = format!("#!/bin/sh\necho {version}\n");
    targz(&[
        Entry::Dir(&top),
        Entry::File(&bin, script.as_bytes(), 0o755),
        Entry::File(&file, version.as_bytes(), 0o644),
    ])
}

/// The default asset name for this machine.
pub fn asset_name(version: &str) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("app-{version}-linux-{arch}.tar.gz")
}

/// A release `v<version>` with the app archive under its default name.
pub fn app_release(version: &str) -> FakeRelease {
    FakeRelease::new(
        &format!("v{version}"),
        vec![FakeAsset::new(&asset_name(version), app_archive(version))],
    )
}

/// `len` bytes that do not compress (xorshift), so an archive of them is as
/// large on the wire as unpacked.
pub fn noise(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
