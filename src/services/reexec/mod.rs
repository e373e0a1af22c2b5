//! PID 1 replaces itself with another moltd binary, keeping every service
//! running: `moltd self-update [--force] FILE`, the agent's `self-update`
//! frame, and the boot record.
//!
//! The steps (ARCHITECTURE.md, "PID 1 replaces itself"), each one here or
//! in the loop's side (`runner::self_update`, `runner::resume`):
//!
//! 1. **Check** ([`check_binary`]): a regular, executable ELF file for the
//!    machine of `/proc/self/exe`.
//! 2. **Freeze** ([`state`]): the supervisor, pipes, sockets and agent as
//!    tab-separated lines in a memfd.
//! 3. **Self-test** ([`self_test`]): FILE runs as a child of the loop, like
//!    a hook, as `FILE self-test FROM [force]` with the memfd on fd 3; it
//!    reads the state as a resume would and refuses a version not newer
//!    than FROM unless forced. Killed after [`SELF_TEST_TIMEOUT`].
//! 4. **Keep** ([`boot::keep`]): FILE copied under `.moltd/bin/` and
//!    recorded as `current`, for the next container start.
//! 5. **Exec** ([`exec_new`]): close-on-exec cleared on exactly the
//!    descriptors the state names; `FILE --resume FD ARGS...`. The signal
//!    mask and pending signals survive `execve`: a signal that comes in the
//!    gap waits, blocked, for the new signalfd.
//! 6. **Resume**: the new program reads the state first, adopts every
//!    slot, reaps, and answers. If it cannot, [`fall_back`] (also its panic
//!    hook) execs the previous binary, kept open in the state, with the
//!    same state and `--fallback WHY`.
//!
//! Before the exec, any failure leaves the old PID 1 as it was.

pub mod boot;
pub mod state;

use crate::sys::exec;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use state::State;

/// How long a self-test may run before it is killed and the update refused.
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The flag a resuming program is started with, then the state's
/// descriptor.
pub const RESUME_FLAG: &str = "--resume";
/// After [`RESUME_FLAG`] and the descriptor: this program is the previous
/// binary, taking back a state the new one could not resume, and why.
pub const FALLBACK_FLAG: &str = "--fallback";
/// The subcommand of the self-test.
pub const SELF_TEST: &str = "self-test";
/// The line a self-test that passed prints, then its version.
pub const SELF_TEST_OK: &str = "moltd-self-test\tok\t";
/// The descriptor a self-test reads the state from.
pub const SELF_TEST_FD: RawFd = 3;

/// Why a self-update was refused (nothing changed) or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file", .0.display())]
    NotFile(PathBuf),
    #[error("{} is not executable", .0.display())]
    NotExecutable(PathBuf),
    #[error("{} is not an ELF executable", .0.display())]
    NotElf(PathBuf),
    #[error("{} is for another machine (ELF class {}, machine {}; this one is class {}, machine {})", path.display(), found.0, found.1, expected.0, expected.1)]
    WrongMachine {
        path: PathBuf,
        found: (u8, u16),
        expected: (u8, u16),
    },
    #[error("a self-update is already under way")]
    UnderWay,
    #[error("not now: {0}")]
    Busy(String),
    #[error("cannot start its self-test: {0}")]
    SelfTestStart(String),
    #[error("its self-test failed ({status}): {output}")]
    SelfTestFailed { status: String, output: String },
    #[error("its self-test did not finish within {}s and was killed", SELF_TEST_TIMEOUT.as_secs())]
    SelfTestHung,
    #[error("cannot write the state: {0}")]
    State(#[source] std::io::Error),
    #[error("cannot exec {}: {}", path.display(), errno.desc())]
    Exec {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    /// Test builds only: the variant, and so its text, stays out of the
    /// shipped binary (CI checks that it holds no `MOLTD_TEST`).
    #[cfg(feature = "test-hooks")]
    #[error("MOLTD_TEST_CRASH_AT={0}: stopped there")]
    Crash(String),
}

/// The ELF class and machine of the file at `path` (bytes 4 and 18-19 of
/// its header, in its own byte order).
fn elf_machine(path: &Path) -> Result<Option<(u8, u16)>, std::io::Error> {
    let mut header = [0u8; 20];
    let mut file = File::open(path)?;
    if file.read_exact(&mut header).is_err() || header[..4] != *b"\x7fELF" {
        return Ok(None);
    }
    let machine = [header[18], header[19]];
    let machine = match header[5] {
        2 => u16::from_be_bytes(machine),
        _ => u16::from_le_bytes(machine),
    };
    Ok(Some((header[4], machine)))
}

/// Step 1: FILE is a regular executable ELF file for this machine.
pub fn check_binary(path: &Path) -> Result<(), Refusal> {
    let unreadable = |source| Refusal::Unreadable {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Refusal::NotFile(path.to_owned()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Refusal::NotExecutable(path.to_owned()));
    }
    let found = elf_machine(path)
        .map_err(unreadable)?
        .ok_or_else(|| Refusal::NotElf(path.to_owned()))?;
    let own = Path::new("/proc/self/exe");
    let expected = elf_machine(own)
        .map_err(|source| Refusal::Unreadable {
            path: own.to_owned(),
            source,
        })?
        .ok_or_else(|| Refusal::NotElf(own.to_owned()))?;
    if found != expected {
        return Err(Refusal::WrongMachine {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Whether version `new` is newer than `old` (semantic versions, a
/// leading `v` allowed); versions that do not parse are never newer.
pub fn newer(new: &str, old: &str) -> bool {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    match (parse(new), parse(old)) {
        (Some(new), Some(old)) => new > old,
        _ => false,
    }
}

/// Steps 2 and 6: the state into a new memfd, close-on-exec until the
/// exec.
pub fn write_state(state: &State) -> Result<File, Refusal> {
    let file = exec::memfd(c"moltd-state").map_err(|e| Refusal::State(e.into()))?;
    file.write_all_at(state.encode().as_bytes(), 0)
        .map_err(Refusal::State)?;
    Ok(file)
}

/// The whole state in `file`, from its start whatever its offset.
pub fn read_state(file: &File) -> Result<State, String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match file.read_at(&mut buf, bytes.len() as u64) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the state: {err}")),
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| "the state is not UTF-8".to_owned())?;
    State::decode(&text).map_err(|err| err.to_string())
}

/// `moltd self-test FROM [force]`, run by the PID 1 that asks: reads the
/// state on [`SELF_TEST_FD`] as a resume would (adopting nothing), and
/// refuses a version not newer than FROM unless forced. Prints
/// [`SELF_TEST_OK`] and its version when it passes.
pub fn self_test(args: &[OsString]) -> i32 {
    let (from, force) = match args {
        [from] => (from, false),
        [from, force] if force == "force" => (from, true),
        _ => {
            eprintln!("moltd: error: usage: moltd self-test FROM [force]");
            return 2;
        }
    };
    let from = from.to_string_lossy();
    let outcome = exec::adopt(SELF_TEST_FD)
        .map_err(|err| format!("no state on descriptor {SELF_TEST_FD}: {}", err.desc()))
        .map(File::from)
        .and_then(|file| read_state(&file))
        .and_then(|state| {
            crate::sys::signals::Inherited::decode(&state.signals)
                .ok_or("the state's signals do not read")?;
            crate::services::machine::check_frozen(&state.slots)?;
            Ok(state)
        });
    let version = crate::version::version();
    let outcome = outcome.and_then(|state| match (force, newer(version, &from)) {
        (true, _) | (false, true) => Ok(state),
        (false, false) => Err(format!(
            "moltd {version} is not newer than the running {from} (--force takes it anyway)"
        )),
    });
    hold_at("self-test:hold");
    match outcome {
        Ok(_) => {
            println!("{SELF_TEST_OK}{version}");
            0
        }
        Err(problem) => {
            eprintln!("{problem}");
            1
        }
    }
}

/// moltd's arguments as first given, without the resume flags this
/// program may have been started with.
pub fn original_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == RESUME_FLAG) {
        args.drain(..args.len().min(2));
        if args.first().is_some_and(|a| a == FALLBACK_FLAG) {
            args.drain(..args.len().min(2));
        }
    }
    args
}

fn cstrings(args: impl IntoIterator<Item = OsString>) -> Vec<CString> {
    args.into_iter()
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect()
}

/// The argv of a resume: argv[0], the flag, the state's descriptor, maybe
/// the fallback's reason, then the original arguments.
fn resume_argv(state: RawFd, fallback: Option<&str>) -> Vec<CString> {
    let argv0 = std::env::args_os().next().unwrap_or_else(|| "moltd".into());
    let mut args = vec![argv0, RESUME_FLAG.into(), state.to_string().into()];
    if let Some(why) = fallback {
        args.extend([FALLBACK_FLAG.into(), why.replace('\n', " ").into()]);
    }
    args.extend(original_args());
    cstrings(args)
}

fn environment() -> Vec<CString> {
    cstrings(std::env::vars_os().map(|(name, value)| {
        let mut entry = name;
        entry.push("=");
        entry.push(value);
        entry
    }))
}

/// At a container start: execs the recorded binary in place of this one,
/// with the same arguments. Returns only on failure.
pub fn exec_recorded(path: &Path) -> nix::errno::Errno {
    let program = CString::new(path.as_os_str().as_encoded_bytes().to_vec()).unwrap_or_default();
    exec::exec(&program, &cstrings(std::env::args_os()), &environment())
}

/// Step 5: keeps exactly the state's descriptors (and the state) open and
/// execs `path` to resume. Returns only on failure, with every descriptor
/// close-on-exec again.
pub fn exec_new(path: &Path, file: &File, state: &State) -> Refusal {
    let fds = state.fds();
    let keep = |on: bool| {
        for fd in fds.iter().copied().chain([file.as_raw_fd()]) {
            let _ = exec::keep_open_raw(fd, on);
        }
    };
    keep(true);
    let argv = resume_argv(file.as_raw_fd(), None);
    let program = CString::new(path.as_os_str().as_encoded_bytes().to_vec()).unwrap_or_default();
    let errno = exec::exec(&program, &argv, &environment());
    keep(false);
    Refusal::Exec {
        path: path.to_owned(),
        errno,
    }
}

/// Execs the previous binary (open on `previous`) to take back the state
/// on `state_fd`: what a program that cannot resume does, and its panic
/// hook. Returns only if even that fails.
pub fn fall_back(previous: RawFd, state_fd: RawFd, fds: &[RawFd], why: &str) {
    log::error!("cannot resume: {why}; going back to the previous moltd");
    for &fd in fds.iter().chain([&state_fd]) {
        let _ = exec::keep_open_raw(fd, true);
    }
    let argv = resume_argv(state_fd, Some(why));
    let errno = exec::exec_raw_file(previous, &argv, &environment());
    log::error!("cannot exec the previous moltd: {}", errno.desc());
}

/// Installs the panic hook of a resume: a panic before the loop runs execs
/// the previous binary with the same state.
pub fn fall_back_on_panic(previous: RawFd, state_fd: RawFd, fds: Vec<RawFd>) {
    std::panic::set_hook(Box::new(move |info| {
        fall_back(
            previous,
            state_fd,
            &fds,
            &format!(
                "the new moltd panicked: {}",
                info.to_string().replace('\n', " ")
            ),
        )
    }));
}

/// The resume went through: panics are panics again.
pub fn resumed() {
    let _ = std::panic::take_hook();
}

/// Test builds only (`MOLTD_TEST_CRASH_AT`): whether to stop at `step`.
fn crash_here(step: &str) -> bool {
    cfg!(feature = "test-hooks")
        && std::env::var_os("MOLTD_TEST_CRASH_AT").is_some_and(|at| at == step)
}

/// A step before the exec: with `MOLTD_TEST_CRASH_AT` naming it (test
/// builds only), the self-update fails there, as a crash would be seen from
/// outside: an error, and the old PID 1 runs on.
pub fn crash_point(step: &str) -> Result<(), Refusal> {
    #[cfg(feature = "test-hooks")]
    if crash_here(step) {
        return Err(Refusal::Crash(step.to_owned()));
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = step;
    Ok(())
}

/// A step of the resume: with `MOLTD_TEST_CRASH_AT` naming it (test builds
/// only), the new program panics there, unless it is the previous one
/// taking the state back.
pub fn crash_on_resume(step: &str, fallback: bool) {
    if !fallback && crash_here(step) {
        panic!("crash point {step}");
    }
}

/// Test builds only: with `MOLTD_TEST_CRASH_AT` naming `step`
/// (`resume:hold`: before the resume reaps or reads a signal;
/// `self-test:hold`: before the self-test exits), waits up to 30 s for a
/// file `<step's name>.go` in `MOLTD_APP_DIR`, so that a test can make
/// children die and signals arrive at that moment, however fast the rest.
pub fn hold_at(step: &str) {
    if !crash_here(step) {
        return;
    }
    let name = format!("{}.go", step.split(':').next().unwrap_or(step));
    let go = crate::update::config::app_dir(&|name| std::env::var_os(name)).join(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
