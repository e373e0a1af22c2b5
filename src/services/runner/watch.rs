//! The services directory, followed with inotify: its folders are watched
//! for services appearing, vanishing or changing; while the directory is
//! missing, its nearest existing ancestor is watched for its creation
//! (inotify cannot filter by name, so events there for anything but the
//! next folder on the way are dropped without a rescan; a renamed ancestor
//! takes its watch along, so IN_MOVE_SELF drops it and the path is
//! followed anew).

use super::Runner;
use crate::services::machine::Event;
use crate::services::scan::{self, Listing};
use log::{debug, info, warn};
use nix::sys::inotify::{AddWatchFlags, Inotify, InotifyEvent, WatchDescriptor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Drops the watches on `dir` and everything below it.
pub(super) fn unwatch_under(
    inotify: &Inotify,
    watched: &mut BTreeMap<PathBuf, WatchDescriptor>,
    dir: &Path,
) {
    watched.retain(|path, wd| {
        let under = path.starts_with(dir);
        if under {
            let _ = inotify.rm_watch(*wd);
        }
        !under
    });
}

/// Why the services directory could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirError {
    /// It does not exist (yet): its nearest existing ancestor is watched.
    #[error("services directory {} does not exist; waiting for it to appear", .0.display())]
    Missing(PathBuf),
    #[error("services directory {}: {}", .0.display(), .1)]
    Unreadable(PathBuf, std::io::Error),
}

/// Reads the services directory; without one there are no services.
pub(super) fn read_dir(dir: Option<&Path>) -> Result<Listing, DirError> {
    let Some(dir) = dir else {
        return Ok(Listing::default());
    };
    scan::scan(dir).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => DirError::Missing(dir.to_owned()),
        _ => DirError::Unreadable(dir.to_owned(), err),
    })
}

impl Runner {
    pub(super) fn on_inotify(&mut self) {
        let events = match &self.inotify {
            Some(inotify) => inotify.read_events().unwrap_or_default(),
            None => return,
        };
        let relevant = events.iter().any(|event| self.concerns_services(event));
        for event in &events {
            // A folder moved away keeps its watch (on the inode, now
            // elsewhere): drop it, so that whatever takes its path (`mv new
            // svc`, a renamed ancestor) is watched anew.
            if event.mask.contains(AddWatchFlags::IN_MOVE_SELF) {
                if let Some(inotify) = &self.inotify {
                    let _ = inotify.rm_watch(event.wd);
                }
                self.forget_watch(event.wd);
            }
            // The kernel dropped this watch (its folder was deleted): a
            // folder of the same name is watched again when it appears.
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.forget_watch(event.wd);
            }
        }
        // While held, the scan on release reads the directory anyway.
        if relevant && !self.held {
            self.handle(Event::DirChanged);
        }
    }

    /// Forgets a watch that no longer follows its path.
    pub(super) fn forget_watch(&mut self, gone: WatchDescriptor) {
        self.watched.retain(|_, wd| *wd != gone);
        if self.ancestor.as_ref().is_some_and(|(_, wd)| *wd == gone) {
            self.ancestor = None;
        }
    }

    /// Whether an inotify event may change the services. The watch on the
    /// ancestor of a missing services directory reports every entry made in
    /// it (`/run`, `/tmp`: inotify cannot filter by name; `IN_ONLYDIR` only
    /// refuses to watch a non-directory), so there only the next folder on
    /// the way counts; anything else would cost a settle delay and a rescan.
    pub(super) fn concerns_services(&self, event: &InotifyEvent) -> bool {
        let Some((ancestor, wd)) = &self.ancestor else {
            return true;
        };
        let lost = AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_MOVE_SELF;
        if event.wd != *wd || event.mask.intersects(lost) {
            return true;
        }
        let next = self
            .dir
            .as_deref()
            .and_then(|dir| dir.strip_prefix(ancestor).ok())
            .and_then(|rest| rest.components().next());
        event.name.as_deref() == next.map(|c| c.as_os_str())
    }

    /// Watches a folder for entries appearing, vanishing or changing mode,
    /// and for itself being removed or moved away (the services directory
    /// itself may be, and is then waited for again).
    pub(super) fn watch(&mut self, path: &Path) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        match inotify.add_watch(path, flags) {
            Ok(wd) => {
                self.watched.insert(path.to_owned(), wd);
                true
            }
            Err(err) => {
                debug!("cannot watch {}: {}", path.display(), err.desc());
                false
            }
        }
    }

    /// Watches every folder in the listing. A folder or directory watched
    /// only now may have changed before its watch existed, so the directory
    /// is then read again (once, unless that read finds new folders too).
    pub(super) fn watch_folders(&mut self, mut listing: Listing, mut reread: bool) -> Listing {
        self.watched.retain(|path, _| path.exists());
        loop {
            let mut added = false;
            for folder in &listing.folders {
                if !self.watched.contains_key(folder) {
                    added |= self.watch(folder);
                }
            }
            if !(added || reread) {
                return listing;
            }
            reread = false;
            match read_dir(self.dir.as_deref()) {
                Ok(fresh) => listing = fresh,
                Err(_) => return listing,
            }
        }
    }

    /// Reads the services directory and watches its folders.
    pub(super) fn scan(&mut self) -> Result<Listing, String> {
        let listing = read_dir(self.dir.as_deref());
        self.watch_listing(listing)
    }

    /// Watches what a read of the services directory found: its folders, or,
    /// while it is missing, the place it will appear in. A directory that
    /// appeared after the read is read now; one watched only now is read
    /// again after its folders are watched (one read for both).
    pub(super) fn watch_listing(
        &mut self,
        listing: Result<Listing, DirError>,
    ) -> Result<Listing, String> {
        let listing = match (listing, self.follow_dir()) {
            (Err(_), true) => read_dir(self.dir.as_deref()).map(|l| (l, false)),
            (listing, just_watched) => listing.map(|l| (l, just_watched)),
        };
        listing
            .map(|(l, reread)| self.watch_folders(l, reread))
            .map_err(|err| err.to_string())
    }

    /// Watches the services directory while it exists, and its nearest
    /// existing ancestor while it does not, so that it is picked up when it
    /// appears without looking for it on a timer. Returns whether the
    /// directory itself has just been watched.
    pub(super) fn follow_dir(&mut self) -> bool {
        let (Some(dir), Some(inotify)) = (self.dir.clone(), &self.inotify) else {
            return false;
        };
        loop {
            if dir.is_dir() {
                if let Some((_, wd)) = self.ancestor.take() {
                    let _ = inotify.rm_watch(wd);
                    info!("services directory {} appeared", dir.display());
                }
                if self.watched.contains_key(&dir) {
                    return false;
                }
                // A new directory at this path (created, or moved in): the
                // watches on folders of the old one (moved away) are stale.
                unwatch_under(inotify, &mut self.watched, &dir);
                return self.watch(&dir);
            }
            // Whatever was watched inside it is gone (or moved away, still
            // watched): what comes back is new.
            unwatch_under(inotify, &mut self.watched, &dir);
            let Some(ancestor) = dir.ancestors().skip(1).find(|a| a.is_dir()) else {
                return false;
            };
            if self
                .ancestor
                .as_ref()
                .is_some_and(|(path, _)| path == ancestor)
            {
                return false;
            }
            if let Some((_, wd)) = self.ancestor.take() {
                let _ = inotify.rm_watch(wd);
            }
            // IN_MOVE_SELF: a renamed ancestor takes its watch along, and the
            // path must be followed anew.
            let flags = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR;
            match inotify.add_watch(ancestor, flags) {
                Ok(wd) => self.ancestor = Some((ancestor.to_owned(), wd)),
                Err(err) => {
                    warn!(
                        "cannot watch {}: {}; {} will not be noticed when it appears",
                        ancestor.display(),
                        err.desc(),
                        dir.display()
                    );
                    return false;
                }
            }
            // Look again: it, or a folder on the way, may have been created
            // before the watch existed.
        }
    }
}
