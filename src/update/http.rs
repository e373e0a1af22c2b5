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
            let (api, scheme) = match &config.source {
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
            .header(USER_AGENT, concat!("moltd/", env!("CARGO_PKG_VERSION")));
        if let Some((value, origin)) = &self.auth {
            let same = reqwest::Url::parse(url).is_ok_and(|u| u.origin() == origin.origin());
            if same {
                request = request.header(AUTHORIZATION, value);
            }
        }
        request
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
    ///
    /// Deadlines are kept here rather than with reqwest's per-request
    /// timeout, which would replace the per-read stall timeout.
    pub fn read_limited(
        &self,
        mut response: Response,
        url: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + self.timeouts.document;
        let mut body = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            let failed = |source| Error::Download {
                url: url.to_string(),
                done: body.len() as u64,
                total: None,
                source,
            };
            if Instant::now() > deadline {
                return Err(failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "overall deadline passed",
                )));
            }
            let n = response.read(&mut chunk).map_err(failed)?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() as u64 > limit {
                return Err(Error::TooLarge {
                    what,
                    url: url.to_string(),
                    limit,
                });
            }
        }
    }
}
