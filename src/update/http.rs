//! The HTTP client: TLS, timeouts, identification and the token.
//!
//! TLS is rustls on ring with Mozilla's roots compiled in, so moltd works in
//! images without a CA store; `SSL_CERT_FILE` (a PEM bundle) and
//! `SSL_CERT_DIR` (folders of PEM files, `:`-separated) add private CAs
//! (GitHub Enterprise behind a company CA). Names are resolved by hickory,
//! which reads `/etc/hosts` and `/etc/resolv.conf` itself. A static glibc
//! binary cannot load NSS modules; whether `getaddrinfo` still works then
//! depends on the glibc it was linked with (Debian 12's has `files` and
//! `dns` built in) and on the image's `nsswitch.conf`. The token is only sent to the
//! origin of the configured API; redirects to another host or port (GitHub
//! sends private assets to a storage host) drop it, which reqwest's redirect
//! policy guarantees.

use super::Error;
use super::config::{Config, Source, Timeouts};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub struct Http {
    client: Client,
    /// `Authorization` value and the origin it may go to.
    auth: Option<(String, reqwest::Url)>,
    pub timeouts: Timeouts,
}

/// Adds the PEM certificates in `path` to `roots`; `origin` names the
/// variable it came from, for the log.
fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path, origin: &str) {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    match CertificateDer::pem_file_iter(path) {
        Ok(certs) => {
            let (added, ignored) = roots.add_parsable_certificates(certs.flatten());
            log::debug!(
                "{origin} {}: {added} certificates added, {ignored} ignored",
                path.display()
            );
        }
        Err(err) => log::warn!("cannot read {origin} {}: {err}", path.display()),
    }
}

pub(crate) fn tls_config() -> rustls::ClientConfig {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        add_pem_file(&mut roots, Path::new(&path), "SSL_CERT_FILE");
    }
    // OpenSSL's layout: hashed names (`<hash>.0`) or any PEM files, each
    // read in full; files that hold no certificate are skipped.
    for dir in std::env::var_os("SSL_CERT_DIR")
        .iter()
        .flat_map(std::env::split_paths)
    {
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
                files.sort();
                for file in files.iter().filter(|f| f.is_file()) {
                    add_pem_file(&mut roots, file, "SSL_CERT_DIR");
                }
            }
            Err(err) => log::warn!("cannot read SSL_CERT_DIR {}: {err}", dir.display()),
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Http {
    pub fn new(config: &Config) -> Result<Http, Error> {
        let client = Client::builder()
            .tls_backend_preconfigured(tls_config())
            // The default with the feature; said here because scratch images
            // depend on it (see the module comment).
            .hickory_dns(true)
            .connect_timeout(config.timeouts.connect)
            // The blocking client applies this to every read: a stall.
            .timeout(config.timeouts.stall)
            .build()
            .map_err(Error::Client)?;
        let auth = config.token.as_ref().and_then(|token| {
            let (api, scheme) = match config.token_source()? {
                Source::GitHub { api, .. } => (api, "Bearer"),
                Source::Gitea { api, .. } => (api, "token"),
                Source::Manifest { url } => (url, "Bearer"),
            };
            Some((format!("{scheme} {token}"), reqwest::Url::parse(api).ok()?))
        });
        Ok(Http {
            client,
            auth,
            timeouts: config.timeouts,
        })
    }

    /// A GET that identifies moltd and carries the token when `url` belongs
    /// to the configured origin.
    pub fn get(&self, url: &str) -> RequestBuilder {
        let mut request = self
            .client
            .get(url)
            .header(USER_AGENT, format!("moltd/{}", crate::version::version()));
        if let Some((value, origin)) = &self.auth {
            let same = reqwest::Url::parse(url).is_ok_and(|u| u.origin() == origin.origin());
            if same {
                request = request.header(AUTHORIZATION, value);
            }
        }
        request
    }

    /// A POST that identifies moltd, without the token (it belongs to the
    /// release API only).
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.client
            .post(url)
            .header(USER_AGENT, concat!("moltd/", env!("CARGO_PKG_VERSION")))
    }

    /// Sends a request, turning transport failures into [`Error::Transport`].
    /// A redirect that comes back as the answer is one reqwest would not
    /// follow (a `Location` to `file:` or another scheme): an
    /// [`Error::Redirect`] that names it, not a bare status.
    pub fn send(&self, request: RequestBuilder, url: &str) -> Result<Response, Error> {
        let response = request.send().map_err(|source| Error::Transport {
            url: url.to_string(),
            source,
        })?;
        let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
        match response.headers().get(LOCATION) {
            Some(location) if redirect => Err(Error::Redirect {
                url: url.to_string(),
                location: String::from_utf8_lossy(location.as_bytes()).into_owned(),
            }),
            _ => Ok(response),
        }
    }

    /// A GET with `Accept: accept` that must answer 2xx.
    pub fn get_ok(&self, url: &str, accept: &str) -> Result<Response, Error> {
        let response = self.send(self.get(url).header(ACCEPT, accept), url)?;
        if !response.status().is_success() {
            return Err(Error::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
                message: String::new(),
            });
        }
        Ok(response)
    }

    /// Fetches a small document (a checksum file, a signature) in full,
    /// failing on any non-2xx answer or past the size limit.
    pub fn document(&self, url: &str, accept: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let response = self.get_ok(url, accept)?;
        self.read_limited(response, url, limit, "document")
    }

    /// Reads a body up to `limit` bytes (more is an [`Error::TooLarge`])
    /// within the overall document deadline.
    pub fn read_limited(
        &self,
        response: Response,
        url: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Error> {
        let mut body = self.body(response, url, limit, what);
        let mut bytes = Vec::new();
        match body.read_to_end(&mut bytes) {
            Ok(_) => Ok(bytes),
            Err(err) => Err(body.failure(err)),
        }
    }

    /// A body to read as it arrives, up to `limit` bytes and within the
    /// overall document deadline, so that a parser can stream it instead of
    /// holding it whole.
    pub fn body<'u>(
        &self,
        response: Response,
        url: &'u str,
        limit: u64,
        what: &'static str,
    ) -> Body<'u> {
        Body {
            response,
            url,
            limit,
            what,
            done: 0,
            // Kept here rather than with reqwest's per-request timeout, which
            // would replace the per-read stall timeout.
            deadline: Instant::now() + self.timeouts.document,
            failure: None,
        }
    }
}

/// A response body that fails past its byte limit or its deadline; the
/// typed reason waits in [`Body::failure`], since `Read` can only return an
/// `io::Error` (and a parser wraps that in its own error).
pub struct Body<'u> {
    response: Response,
    url: &'u str,
    limit: u64,
    what: &'static str,
    done: u64,
    deadline: Instant,
    failure: Option<Error>,
}

impl Body<'_> {
    /// Why reading failed: the limit, the deadline or the transfer, or
    /// `err` itself when the body was not to blame.
    pub fn failure(&mut self, err: io::Error) -> Error {
        match self.failure.take() {
            Some(failure) => failure,
            None => self.download_error(err),
        }
    }

    fn fail(&mut self, err: Error) -> io::Error {
        let text = err.to_string();
        self.failure = Some(err);
        io::Error::other(text)
    }

    fn download_error(&self, source: io::Error) -> Error {
        Error::Download {
            url: self.url.to_string(),
            done: self.done,
            total: None,
            source,
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() > self.deadline {
            let late = io::Error::new(io::ErrorKind::TimedOut, "overall deadline passed");
            let err = self.download_error(late);
            return Err(self.fail(err));
        }
        // One byte past the limit tells a body of exactly `limit` from a
        // larger one.
        let room = (self.limit - self.done.min(self.limit) + 1).min(buf.len() as u64) as usize;
        let n = match self.response.read(&mut buf[..room]) {
            Ok(n) => n,
            Err(source) => {
                let err = self.download_error(source);
                return Err(self.fail(err));
            }
        };
        self.done += n as u64;
        if self.done > self.limit {
            let err = Error::TooLarge {
                what: self.what,
                url: self.url.to_string(),
                limit: self.limit,
            };
            return Err(self.fail(err));
        }
        Ok(n)
    }
}
