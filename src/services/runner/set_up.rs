//! Everything service mode opens before its loop (the control and notify
//! sockets, inotify, the signalfd, the agent), whether at a container's
//! start or when a self-update's new program resumes with what the previous
//! one kept open.

use super::*;

/// What a resumed PID 1 takes over from the previous one instead of
/// opening anew (see `resume`).
pub(super) struct Kept {
    pub(super) listener: Option<UnixListener>,
    pub(super) notify: Option<NotifySocket>,
    pub(super) agent: Option<AgentLink>,
}

/// Everything service mode opens before its loop, and the first
/// reading of the services directory; `kept` holds what a resume took
/// over. Returns the exit code on failure.
pub(super) fn set_up(
    config: ServicesConfig,
    inherited: Inherited,
    kept: Option<Kept>,
) -> Result<(Runner, Result<Listing, DirError>), i32> {
    // Before anything is spawned: no child ever sees moltd's secrets, and
    // every one learns where to say it is ready.
    let notify_path = ready::notify_path(&config.control);
    let mut environment = crate::secrets::without(std::env::vars_os(), &config.withheld);
    environment.retain(|(name, _)| name != "NOTIFY_SOCKET");
    environment.push(("NOTIFY_SOCKET".into(), notify_path.clone().into()));
    crate::sys::spawn::set_environment(environment);
    if let Err(err) = io::ensure_std_fds() {
        error!(
            "cannot open /dev/null for closed standard streams: {}",
            err.desc()
        );
        return Err(1);
    }
    let (personality, reaping, death) = match &config.main {
        Some(main) => (main.personality, main.reaping, main.parent_death_signal),
        None => (Personality::Moltd, Reaping::Subreaper, None),
    };
    let signals = init::prepare(personality, reaping, death, inherited)?;
    let dir = config
        .dir
        .as_ref()
        .map(|dir| std::path::absolute(dir).unwrap_or(dir.clone()));
    let listing = read_dir(dir.as_deref());
    // A missing directory may yet appear (a late volume, a mkdir): moltd
    // waits for it. One that cannot be read is a mistake to report.
    if let (Err(problem @ DirError::Unreadable(..)), None) = (&listing, &config.main) {
        error!("{problem}; give a command or --services DIR");
        return Err(1);
    }
    let inotify = dir.as_ref().and_then(|dir| {
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .inspect_err(|err| {
                error!(
                    "cannot create an inotify instance: {}; changes to the services directory {} will not be noticed",
                    err.desc(),
                    dir.display()
                )
            })
            .ok()
    });
    let devnull = match nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(err) => {
            error!("cannot open /dev/null: {}", err.desc());
            return Err(1);
        }
    };
    let resumed = kept.is_some();
    // Services wait for the app's first release; moltd's own need not.
    let held = config.updates_app() && !resumed;
    let kept = match kept {
        Some(kept) => kept,
        None => Kept {
            listener: open_control(&config.control),
            // Without it, services become ready by their other ways.
            notify: NotifySocket::bind(&notify_path)
                .inspect_err(|err| warn!("{err}"))
                .ok(),
            agent: match agent::wanted(&config).then(|| agent::prepare(&config)) {
                Some(Ok(link)) => Some(link),
                Some(Err(problem)) => {
                    error!("{problem}");
                    return Err(1);
                }
                None => None,
            },
        },
    };
    let runner = Runner {
        supervisor: Supervisor::new(config.settings),
        inherited: *signals.inherited(),
        signals,
        dir,
        devnull,
        inotify,
        watched: BTreeMap::new(),
        ancestor: None,
        listener: kept.listener,
        notify: kept.notify,
        ready_pipes: ReadyPipes::default(),
        control: config.control,
        clients: BTreeMap::new(),
        next_client: 0,
        io: BTreeMap::new(),
        sockets: sockets::Held::new(config.hold_sockets),
        exit: None,
        held,
        agent: kept.agent,
        trigger: None,
        updates: config.updates,
        reaped: 0,
        main: config.main,
        self_update: None,
    };
    Ok((runner, listing))
}
