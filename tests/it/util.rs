//! Shared test plumbing: a temp dir per test, a builder that runs moltd as
//! PID 1 of a new PID namespace or as a plain subreaper, and bounded waits.
//!
//! Every failure message carries the command line, moltd's output so far and
//! a listing of the test's directory.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails. Generous: the
/// suite must pass on a busy two-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A directory that belongs to one test.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("it")
            .join(format!("{name}-{}-{unique}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file, creating parent folders.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    /// Writes an executable script.
    pub fn script(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.write(name, contents);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Reads a file, empty if it does not exist yet.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }

    /// A symlink to moltd under another name (`tini`, `dumb-init`, `sv`).
    pub fn moltd_as(&self, name: &str) -> PathBuf {
        let link = self.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(moltd_bin(), &link).unwrap();
        }
        link
    }

    /// The control socket of a moltd started in this directory.
    pub fn control_socket(&self) -> PathBuf {
        self.join("control.sock")
    }

    /// Runs `sv ARGS` (moltd through a symlink named `sv`) against the moltd
    /// started in this directory.
    pub fn sv(&self, args: &[&str]) -> Client {
        self.client(Command::new(self.moltd_as("sv")).args(args))
    }

    /// Runs `moltd ARGS` as a client (`moltd status`, `moltd sv ...`).
    pub fn moltd_client(&self, args: &[&str]) -> Client {
        self.client(Command::new(moltd_bin()).args(args))
    }

    /// Starts `moltd ARGS` as a client without waiting for it, its output
    /// piped (for `wait_with_output`).
    pub fn moltd_client_background(&self, args: &[&str]) -> Child {
        self.client_env(Command::new(moltd_bin()).args(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client")
    }

    /// Starts `sv ARGS` without waiting for it, its stdout piped (for
    /// [`wait_child`] and `wait_with_output`), in a process group of its own
    /// like a shell's job, so that a Ctrl-C can be sent to the group.
    pub fn sv_background(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        self.client_env(Command::new(self.moltd_as("sv")).args(args))
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sv")
    }

    fn client_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("MOLTD_CONTROL", self.control_socket())
            .env_remove("SVWAIT")
            .current_dir(self.path())
    }

    fn client(&self, command: &mut Command) -> Client {
        let output = self.client_env(command).output().expect("run the client");
        Client {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Every file below the directory, for failure messages.
    pub fn listing(&self) -> String {
        fn walk(dir: &Path, out: &mut String) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.path());
            for entry in entries {
                let path = entry.path();
                let meta = fs::symlink_metadata(&path).ok();
                let size = meta.as_ref().map_or(0, |m| m.len());
                let _ = writeln!(out, "  {} ({size} bytes)", path.display());
                if meta.is_some_and(|m| m.is_dir()) {
                    walk(&path, out);
                }
            }
        }
        let mut out = String::new();
        walk(&self.path, &mut out);
        out
    }
}

pub fn moltd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moltd"))
}

/// How moltd is started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`).
    Pid1,
    /// A plain child of the test: not PID 1, so it must be a subreaper to reap.
    Child,
}

/// A moltd command line to run.
pub struct Moltd<'a> {
    dir: &'a TestDir,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    mode: Mode,
    broken_output: bool,
    /// Run `program` (a path inside this root) under `chroot`.
    root: Option<PathBuf>,
}

impl<'a> Moltd<'a> {
    pub fn new(dir: &'a TestDir, mode: Mode) -> Moltd<'a> {
        Moltd {
            dir,
            program: moltd_bin(),
            args: Vec::new(),
            env: Vec::new(),
            mode,
            broken_output: false,
            root: None,
        }
    }

    /// Runs `program`, a path inside `root`, with `root` as its root file
    /// system (`chroot`; in a user namespace when the tests are not root).
    pub fn chroot(mut self, root: &Path, program: &str) -> Self {
        self.root = Some(root.to_path_buf());
        self.program = program.into();
        self
    }

    /// Runs this build of moltd (the static one) instead of the tests' own.
    pub fn program(mut self, program: &Path) -> Self {
        self.program = program.to_path_buf();
        self
    }

    /// Runs moltd through a symlink with this name.
    pub fn named(mut self, name: &str) -> Self {
        self.program = self.dir.moltd_as(name);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sends moltd's stdout and stderr into a pipe nobody reads.
    pub fn broken_output(mut self) -> Self {
        self.broken_output = true;
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self) -> Command {
        let unprivileged = !nix::unistd::geteuid().is_root();
        let unshare = |c: &mut Command| {
            if unprivileged {
                c.args(["--user", "--map-root-user"]);
            }
        };
        let mut command = match (self.mode, &self.root) {
            (Mode::Pid1, root) => {
                let mut c = Command::new("unshare");
                unshare(&mut c);
                // --kill-child: if unshare dies, so does the namespace.
                c.args(["--pid", "--kill-child", "--mount-proc", "--"]);
                if let Some(root) = root {
                    c.arg("chroot").arg(root);
                }
                c.arg(&self.program);
                c
            }
            (Mode::Child, None) => Command::new(&self.program),
            (Mode::Child, Some(root)) => {
                let mut c = Command::new("unshare");
                unshare(&mut c);
                c.arg("--").arg("chroot").arg(root).arg(&self.program);
                c
            }
        };
        command.args(&self.args).current_dir(self.dir.path());
        // Keep the suite's own settings from leaking into moltd.
        for key in [
            "VERBOSE",
            "MOLTD_LOG",
            "TINI_SUBREAPER",
            "TINI_VERBOSITY",
            "DUMB_INIT_SETSID",
            "MOLTD_SERVICES",
            "SVWAIT",
            "MOLTD_BACKOFF_MAX",
        ] {
            command.env_remove(key);
        }
        // Nor its update settings (tests point moltd at their own feed).
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            let update_var = name.starts_with("MOLTD_")
                || [
                    "GH_USER",
                    "GH_REPO",
                    "GH_TOKEN",
                    "GITHUB_TOKEN",
                    "GITHUB_API_URL",
                    "SSL_CERT_FILE",
                    "SSL_CERT_DIR",
                ]
                .contains(&name.as_ref())
                || name == "SLEEP";
            if update_var {
                command.env_remove(&key);
            }
        }
        // Never the machine's /run/moltd: each test has its own socket.
        command.env("MOLTD_CONTROL", self.dir.control_socket());
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn describe(&self) -> String {
        let command = self.command();
        let mut text = String::new();
        for (key, value) in command.get_envs() {
            let _ = write!(
                text,
                "{}={} ",
                key.to_string_lossy(),
                value.map_or("(unset)".into(), |v| v.to_string_lossy())
            );
        }
        text.push_str(&command.get_program().to_string_lossy());
        for arg in command.get_args() {
            let _ = write!(text, " {:?}", arg);
        }
        text
    }

    /// Starts moltd with stdin from /dev/null and output into the test dir.
    pub fn spawn(self) -> Running<'a> {
        let (stdout, stderr): (Stdio, Stdio) = if self.broken_output {
            // A pipe whose reading end is already closed: every write fails.
            let (reader, writer) = nix::unistd::pipe().unwrap();
            drop(reader);
            (writer.try_clone().unwrap().into(), writer.into())
        } else {
            (
                fs::File::create(self.dir.join("moltd.stdout"))
                    .unwrap()
                    .into(),
                fs::File::create(self.dir.join("moltd.stderr"))
                    .unwrap()
                    .into(),
            )
        };
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.describe()));
        Running {
            dir: self.dir,
            description: self.describe(),
            mode: self.mode,
            child,
            exited: None,
        }
    }

    /// Runs moltd to completion.
    pub fn run(self) -> Finished {
        self.spawn().wait()
    }
}

/// What a client command printed.
#[derive(Debug)]
pub struct Client {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// How a finished moltd ended.
pub struct Finished {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    context: String,
}

impl Finished {
    /// Fails the test with the full context unless moltd exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.code != Some(code) {
            panic!(
                "expected exit code {code}, got {:?} (signal {:?})\n{}",
                self.code, self.signal, self.context
            );
        }
        self
    }

    pub fn expect_stderr_contains(&self, text: &str) -> &Self {
        if !self.stderr.contains(text) {
            panic!("stderr lacks {text:?}\n{}", self.context);
        }
        self
    }

    pub fn expect_stdout_contains(&self, text: &str) -> &Self {
        if !self.stdout.contains(text) {
            panic!("stdout lacks {text:?}\n{}", self.context);
        }
        self
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}", self.context)
    }
}

/// A moltd that is running.
pub struct Running<'a> {
    dir: &'a TestDir,
    description: String,
    mode: Mode,
    child: Child,
    exited: Option<std::process::ExitStatus>,
}

impl Running<'_> {
    /// moltd's pid as seen from the test (not 1, even in PID-1 mode).
    pub fn moltd_pid(&mut self) -> i32 {
        match self.mode {
            Mode::Child => self.child.id() as i32,
            Mode::Pid1 => {
                let unshare = self.child.id();
                let mut found = None;
                self.wait_for("moltd to start inside the namespace", || {
                    let children =
                        fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"));
                    found = children
                        .ok()
                        .and_then(|c| c.split_whitespace().next()?.parse().ok());
                    found.is_some()
                });
                found.unwrap()
            }
        }
    }

    /// moltd's children as seen from the test, the update agent apart.
    pub fn children(&mut self) -> (Vec<i32>, Option<i32>) {
        let moltd = self.moltd_pid();
        let listed = fs::read_to_string(format!("/proc/{moltd}/task/{moltd}/children"));
        let (agents, others) = listed
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .partition::<Vec<i32>, _>(|pid| is_agent(*pid));
        (others, agents.first().copied())
    }

    /// The update agent's pid once one runs that is not `previous` (a
    /// restarted one).
    pub fn agent_pid(&mut self, previous: Option<i32>) -> i32 {
        let moltd = self.moltd_pid();
        let mut found = None;
        self.wait_for("the update agent to run", || {
            let listed = fs::read_to_string(format!("/proc/{moltd}/task/{moltd}/children"));
            found = listed
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok())
                .find(|pid| is_agent(*pid) && Some(*pid) != previous);
            found.is_some()
        });
        found.unwrap()
    }

    /// Sends a signal to moltd.
    pub fn signal(&mut self, signal: i32) {
        let pid = self.moltd_pid();
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { nix::libc::kill(pid, signal) } != 0 {
            self.fail(&format!("cannot send signal {signal} to moltd ({pid})"));
        }
    }

    /// Polls `condition` until it holds, failing the test after [`TIMEOUT`].
    pub fn wait_for(&mut self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !condition() {
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}"));
            }
            if self.exited.is_none() {
                self.exited = self.child.try_wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `sv status SERVICE` prints a line starting with `prefix`
    /// (`run:`, `down:`), and returns that line.
    pub fn wait_for_sv(&mut self, service: &str, prefix: &str) -> String {
        let dir = self.dir;
        let mut line = String::new();
        self.wait_for(
            &format!("sv status {service} to start with {prefix:?}"),
            || {
                line = dir.sv(&["status", service]).stdout;
                line.starts_with(prefix)
            },
        );
        line
    }

    /// Waits until the test dir's file `name` contains `text`.
    pub fn wait_for_file(&mut self, name: &str, text: &str) {
        let dir = self.dir;
        self.wait_for(&format!("{name} to contain {text:?}"), || {
            dir.read(name).contains(text)
        });
    }

    /// Waits for moltd (or unshare around it) to exit.
    pub fn wait(mut self) -> Finished {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self
                .exited
                .take()
                .or_else(|| self.child.try_wait().unwrap())
            {
                break status;
            }
            if Instant::now() > deadline {
                self.fail("timed out waiting for moltd to exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        let mut finished = Finished {
            code: status.code(),
            signal: status.signal(),
            stdout: self.dir.read("moltd.stdout"),
            stderr: self.dir.read("moltd.stderr"),
            context: String::new(),
        };
        finished.context = self.context();
        finished
    }

    /// Whether moltd has exited.
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited.is_some()
    }

    fn context(&self) -> String {
        format!(
            "exit status so far: {:?}\ncommand: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- {} ---\n{}",
            self.exited,
            self.description,
            self.dir.read("moltd.stdout"),
            self.dir.read("moltd.stderr"),
            self.dir.path().display(),
            self.dir.listing()
        )
    }

    pub fn fail(&mut self, why: &str) -> ! {
        let context = self.context();
        self.kill();
        panic!("{why}\n{context}")
    }

    /// Kills moltd (and in PID-1 mode its whole namespace) and collects it.
    fn kill(&mut self) {
        if self.has_exited() {
            return;
        }
        // Killing PID 1 of the namespace takes everything in it along.
        if self.mode == Mode::Pid1 {
            let pid = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()));
            if let Some(pid) = pid
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse::<i32>().ok())
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The state letter of a process (`R`, `S`, `T`, `Z`), from /proc.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits for a process the test started itself, killing it and failing the
/// test after [`TIMEOUT`].
pub fn wait_child(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` is an update agent (`moltd agent`).
pub fn is_agent(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"moltd\0agent\0")
}

/// Polls `condition` until it holds, failing the test after [`TIMEOUT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the shell command `command` in `dir` under `script(1)`, so that it
/// leads a session with a terminal on stdin. `SHELL=/bin/sh`: script runs
/// the command with `$SHELL -c`, and the suite's own shell may not exec the
/// last command (moltd would then not lead the session).
pub fn under_script(dir: &TestDir, command: &str) -> Child {
    Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux")
}
