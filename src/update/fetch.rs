//! The one streaming pass: socket → SHA-256 (and minisign) → gunzip → tar →
//! staging folder.
//!
//! Nothing is written to disk but the unpacked files themselves, so a
//! release needs its unpacked size once, not archive plus tree. The digest is
//! only known at the end of the stream, which is why the tree stays in a
//! staging folder until [`super::staging::Staging::commit`].
//!
//! [`Download`] is the byte source. It enforces the download size limit and
//! the overall deadline, feeds the hashers and the progress reporter, and
//! when the connection drops it asks for the rest with a `Range` request
//! (guarded by `If-Range`) where the server accepts ranges, invisibly to the
//! gunzip and tar readers above it. Errors it meets are kept in the struct,
//! since the readers above only pass an `io::Error` along: the caller
//! reports the network's own error, not "corrupt gzip".
//!
//! The error reported is the first cause that stopped the pass. When
//! unpacking stops early (a cap, a refused entry, the space reserve, a full
//! disk), the rest is not downloaded and no digest is compared: the digest
//! of part of a file says nothing. Only an archive that does not parse is
//! read to the end, because wrong bytes are then the likelier cause, and a
//! digest mismatch says so.
//!
//! Like gzip(1) and tar, bytes after the last gzip member that do not start
//! another member are ignored (tape padding, a signature appended by a
//! build tool); they are still downloaded and hashed.

use super::Error;
use super::config::{Limits, Timeouts};
use super::error::Cap;
use super::http::Http;
use super::staging::Room;
use super::unpack::{Unpacked, single_file, unpack};
use super::verify::Expected;
use flate2::bufread::GzDecoder;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, ACCEPT_RANGES, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Range requests after a dropped connection, per download.
const RESUMES: u32 = 3;

/// What to download and how to check it.
pub struct Request<'a> {
    pub url: &'a str,
    /// `application/octet-stream` for GitHub's API asset URLs.
    pub accept: &'a str,
    /// The size the feed announced.
    pub size: Option<u64>,
    pub name: &'a str,
    pub expected: Option<&'a Expected>,
    pub signature: Option<(
        &'a minisign_verify::PublicKey,
        &'a minisign_verify::Signature,
    )>,
    /// The variable that set the key, for messages.
    pub key_var: &'static str,
    /// Set by another thread to stop the download (a rollback).
    pub cancel: &'a AtomicBool,
}

/// What the downloaded bytes are.
#[derive(Clone, Copy, Debug)]
pub enum Content<'a> {
    /// A `.tar.gz`, unpacked with this many leading folders stripped (a
    /// single top folder when `None`).
    Archive { strip: Option<usize> },
    /// One program, written as this file of the tree.
    File(&'a Path),
}

/// Called with bytes done and bytes total while the download runs.
pub type Progress<'p> = &'p mut dyn FnMut(u64, Option<u64>);

struct Download<'a, 'p> {
    http: &'a Http,
    url: &'a str,
    name: &'a str,
    accept: &'a str,
    response: Response,
    done: u64,
    total: Option<u64>,
    ranges: bool,
    validator: Option<String>,
    resumes: u32,
    deadline: Instant,
    timeout: Duration,
    cancel: &'a AtomicBool,
    limit: u64,
    sha256: Sha256,
    minisign: Option<minisign_verify::StreamVerifier<'a>>,
    progress: Progress<'p>,
    failure: Option<Error>,
}

impl Download<'_, '_> {
    fn fail(&mut self, error: Error) -> io::Error {
        let text = error.to_string();
        self.failure.get_or_insert(error);
        io::Error::other(text)
    }

    fn download_error(&self, source: io::Error) -> Error {
        Error::Download {
            url: self.url.to_string(),
            done: self.done,
            total: self.total,
            source,
        }
    }

    /// Replaces a dropped response with one for the remaining bytes.
    fn resume(&mut self, cause: io::Error) -> Result<(), Error> {
        if !self.ranges || self.resumes == 0 {
            return Err(self.download_error(cause));
        }
        self.resumes -= 1;
        log::warn!(
            "download of {} interrupted after {} bytes ({cause}); resuming",
            self.url,
            self.done
        );
        let mut request = self
            .http
            .get(self.url)
            .header(ACCEPT, self.accept)
            .header(RANGE, format!("bytes={}-", self.done));
        if let Some(validator) = &self.validator {
            request = request.header(IF_RANGE, validator);
        }
        let response = self.http.send(request, self.url)?;
        let start = format!("bytes {}-", self.done);
        let resumed = response.status().as_u16() == 206
            && response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&start));
        if !resumed {
            let why = format!(
                "{cause}; resuming got http {} instead of the rest",
                response.status().as_u16()
            );
            return Err(self.download_error(io::Error::other(why)));
        }
        self.response = response;
        Ok(())
    }
}

impl Read for Download<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Checked at every read: a trickling download ends at the next
            // bytes that arrive, a stalled one at the stall timeout.
            if self.cancel.load(Ordering::Relaxed) {
                return Err(self.fail(Error::Cancelled));
            }
            if Instant::now() > self.deadline {
                let timeout = self.timeout;
                return Err(self.fail(Error::Deadline(timeout)));
            }
            let interrupted = match self.response.read(buf) {
                Ok(0) if self.total.is_some_and(|t| self.done < t) => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed early")
                }
                Ok(n) => {
                    self.done += n as u64;
                    if self.done > self.limit {
                        let error = Error::Limit {
                            asset: self.name.to_string(),
                            cap: Cap::Download,
                            limit: self.limit,
                        };
                        return Err(self.fail(error));
                    }
                    self.sha256.update(&buf[..n]);
                    if let Some(verifier) = &mut self.minisign {
                        verifier.update(&buf[..n]);
                    }
                    (self.progress)(self.done, self.total);
                    return Ok(n);
                }
                Err(err) => err,
            };
            if let Err(error) = self.resume(interrupted) {
                return Err(self.fail(error));
            }
        }
    }
}

/// The gzip members of a stream, one after the other; the end of the data
/// is the end of the input, or bytes that do not start another member.
struct Gunzip<R: BufRead> {
    member: Option<GzDecoder<R>>,
}

impl<R: BufRead> Gunzip<R> {
    fn new(input: R) -> Gunzip<R> {
        Gunzip {
            member: Some(GzDecoder::new(input)),
        }
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(member) = &mut self.member else {
                return Ok(0);
            };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member ended, its CRC and length checked: is another
            // one next? (gzip's magic is 1f 8b.)
            let next = member.get_mut().fill_buf()?;
            let another = next.first() == Some(&0x1f) && next.get(1).is_none_or(|b| *b == 0x8b);
            let input = self.member.take().map(GzDecoder::into_inner);
            self.member = input.filter(|_| another).map(GzDecoder::new);
        }
    }
}

/// Downloads `request` and unpacks it into `tree` within `room`, checking
/// digest and signature at the end of the stream. On error the caller
/// discards `tree`.
#[allow(clippy::too_many_arguments)]
pub fn fetch_and_unpack(
    http: &Http,
    request: &Request,
    tree: &Path,
    room: &mut Room,
    limits: &Limits,
    timeouts: &Timeouts,
    content: Content,
    progress: Progress,
) -> Result<Unpacked, Error> {
    let url = request.url;
    let response = http.get_ok(url, request.accept)?;
    let total = response.content_length();
    if let (Some(announced), Some(sent)) = (request.size, total) {
        if announced != sent {
            return Err(Error::WrongLength {
                url: url.to_string(),
                expected: announced,
                actual: sent,
            });
        }
    }
    let needed = total.or(request.size).unwrap_or(0);
    if needed > limits.download {
        return Err(Error::Limit {
            asset: request.name.to_string(),
            cap: Cap::Download,
            limit: limits.download,
        });
    }
    let headers = response.headers();
    let ranges = headers
        .get(ACCEPT_RANGES)
        .is_some_and(|v| v.as_bytes() == b"bytes");
    let validator = headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let minisign = match request.signature {
        Some((key, signature)) => {
            Some(
                key.verify_stream(signature)
                    .map_err(|source| Error::BadSignature {
                        asset: request.name.to_string(),
                        var: request.key_var,
                        source,
                    })?,
            )
        }
        None => None,
    };
    let mut download = Download {
        http,
        url,
        name: request.name,
        accept: request.accept,
        response,
        done: 0,
        total,
        ranges,
        validator,
        resumes: RESUMES,
        deadline: Instant::now() + timeouts.download,
        timeout: timeouts.download,
        cancel: request.cancel,
        limit: limits.download,
        sha256: Sha256::new(),
        minisign,
        progress,
        failure: None,
    };

    let strip = match content {
        Content::Archive { strip } => strip,
        Content::File(name) => {
            let written = single_file(&mut download, tree, room, limits, name, request.name);
            return finish(download, written, request);
        }
    };
    let mut gunzip = Gunzip::new(BufReader::with_capacity(64 * 1024, &mut download));
    let unpacked =
        unpack(&mut gunzip, tree, room, limits, strip, request.name).and_then(|unpacked| {
            // Past tar's end marker: the rest must still be read, to hash
            // every byte, but it counts against the unpacked limit like any
            // other.
            let left = limits.unpacked.saturating_sub(unpacked.bytes);
            let rest =
                io::copy(&mut (&mut gunzip).take(left + 1), &mut io::sink()).map_err(|source| {
                    Error::BadArchive {
                        asset: request.name.to_string(),
                        source,
                    }
                })?;
            if rest > left {
                return Err(Error::Limit {
                    asset: request.name.to_string(),
                    cap: Cap::Unpacked,
                    limit: limits.unpacked,
                });
            }
            Ok(unpacked)
        });
    drop(gunzip);
    finish(download, unpacked, request)
}

/// Ends the pass once the bytes were taken: the network's error first, then
/// the digest of the whole download (read to its end unless unpacking
/// stopped early), then the signature.
fn finish(
    mut download: Download,
    unpacked: Result<Unpacked, Error>,
    request: &Request,
) -> Result<Unpacked, Error> {
    if let Some(error) = download.failure.take() {
        return Err(error);
    }
    match &unpacked {
        // The archive was read to its end: hash what follows it too.
        // A broken archive may just be the wrong bytes: read the rest, and
        // report a digest mismatch first if that is what it is.
        Ok(_) | Err(Error::BadArchive { .. }) => {
            let drained = io::copy(&mut download, &mut io::sink());
            if let Some(error) = download.failure.take() {
                return Err(error);
            }
            if let Err(source) = drained {
                return Err(download.download_error(source));
            }
        }
        // Stopped early by a cap, a refused entry or the disk: that is the
        // cause, whatever the digest of the rest would be.
        Err(_) => return unpacked,
    }
    let actual = hex(&download.sha256.finalize_reset());
    if let Some(expected) = request.expected {
        if actual != expected.sha256 {
            return Err(Error::DigestMismatch {
                asset: request.name.to_string(),
                actual,
                expected: expected.sha256.clone(),
                origin: expected.origin.clone(),
            });
        }
    }
    let unpacked = unpacked?;
    if let Some(verifier) = &mut download.minisign {
        verifier.finalize().map_err(|source| Error::BadSignature {
            asset: request.name.to_string(),
            var: request.key_var,
            source,
        })?;
    }
    Ok(unpacked)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
