//! The listening sockets PID 1 holds for services with a `listen` file.
//!
//! They are bound once, before the first start of `run` that needs them, and
//! kept while the definition names them, so that between two lives of
//! `run` (a crash restart, an update) new connections wait in the kernel's
//! backlog instead of being refused. Each start of `run` gets them by
//! systemd's protocol (`sd_listen_fds(3)`): descriptors 3.. in file order,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` (written by the child,
//! see [`crate::sys::spawn::Options::listen_pid`]).

use crate::services::scan::{Address, Listen, ListenError, Listing};
use crate::sys::io;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Every service's bound sockets, by address.
pub(super) struct Held {
    services: BTreeMap<String, Vec<(Address, OwnedFd)>>,
    /// `MOLTD_HELD_SOCKETS=off`: `listen` files are ignored, for apps that
    /// bind their ports themselves.
    enabled: bool,
}

/// What one start of `run` is given.
pub(super) struct Passed<'a> {
    /// To install as 3, 4, ...
    pub(super) fds: Vec<BorrowedFd<'a>>,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES`.
    pub(super) environment: Vec<CString>,
}

impl Held {
    pub(super) fn new(enabled: bool) -> Held {
        Held {
            services: BTreeMap::new(),
            enabled,
        }
    }

    /// The sockets of `service` for a start of its `run`: those already held
    /// are kept, new ones bound, those its `listen` file no longer names
    /// closed. The error (a bad `listen` file, an address that cannot be
    /// bound) names the file and line; sockets bound before it stay held.
    pub(super) fn for_start(
        &mut self,
        service: &str,
        dir: &Path,
        listen: &Result<Vec<Listen>, ListenError>,
    ) -> Result<Passed<'_>, String> {
        let listen = match self.enabled {
            true => listen.as_ref().map_err(ToString::to_string)?.as_slice(),
            false => &[],
        };
        let held = self.services.entry(service.to_owned()).or_default();
        // Closed first: a line whose options changed names the same port.
        held.retain(|(address, _)| listen.iter().any(|l| &l.address == address));
        for socket in listen {
            if held.iter().any(|(address, _)| address == &socket.address) {
                continue;
            }
            let bound = match &socket.address {
                Address::Tcp(addr) => io::listen_tcp(*addr),
                Address::Unix { path, mode, owner } => io::listen_unix(path, *mode, *owner),
            };
            let fd = bound.map_err(|err| {
                let reason = match err.raw_os_error() {
                    Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_owned(),
                    None => err.to_string(),
                };
                format!(
                    "cannot listen on {} ({} line {}): {}",
                    socket.address,
                    dir.join("listen").display(),
                    socket.line,
                    reason.to_lowercase()
                )
            })?;
            held.push((socket.address.clone(), fd));
        }
        let held = &*held;
        let fds = listen
            .iter()
            .filter_map(|l| held.iter().find(|(a, _)| a == &l.address))
            .map(|(_, fd)| fd.as_fd())
            .collect();
        let names: Vec<&str> = listen
            .iter()
            .map(|l| l.name.as_deref().unwrap_or(service))
            .collect();
        let environment = if listen.is_empty() {
            Vec::new()
        } else {
            // Names and numbers hold no NUL (scan checks the names; a
            // service's name comes from a file name).
            [
                format!("LISTEN_FDS={}", listen.len()),
                format!("LISTEN_FDNAMES={}", names.join(":")),
            ]
            .into_iter()
            .filter_map(|entry| CString::new(entry).ok())
            .collect()
        };
        Ok(Passed { fds, environment })
    }

    /// After a scan: closes the sockets a readable `listen` file no longer
    /// names (a broken file changes nothing until it is fixed).
    pub(super) fn keep_named(&mut self, listing: &Listing) {
        for def in &listing.services {
            if let (Some(held), Ok(listen)) = (self.services.get_mut(&def.name), &def.listen) {
                held.retain(|(address, _)| listen.iter().any(|l| &l.address == address));
            }
        }
    }

    /// Every held socket, for a self-update's state.
    pub(super) fn all(&self) -> impl Iterator<Item = (&str, &Address, BorrowedFd<'_>)> {
        self.services.iter().flat_map(|(service, held)| {
            held.iter()
                .map(move |(address, fd)| (service.as_str(), address, fd.as_fd()))
        })
    }

    /// A socket the previous PID 1 held, taken back (see `runner::resume`).
    pub(super) fn adopt(&mut self, service: &str, address: Address, fd: OwnedFd) {
        let held = self.services.entry(service.to_owned()).or_default();
        held.push((address, fd));
    }

    /// The service was forgotten (its folder removed and its programs
    /// down): its sockets are closed.
    pub(super) fn forget(&mut self, service: &str) {
        self.services.remove(service);
    }
}
