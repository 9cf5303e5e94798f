//! Running child processes: every one bounded by a timeout, with stdin
//! closed (CI has none), and abandoned promptly on Ctrl-C.
//!
//! Ctrl-C reaches the whole foreground process group, so children die of it
//! by themselves; xtask's SIGINT/SIGTERM handler ([`install_signal_handlers`])
//! only records it, and every wait loop here turns that into an error. The
//! error unwinds through the RAII guards (namespaces, weft nodes, servers),
//! which clean up in `Drop`. Tests install no handler: nothing interrupts.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Record SIGINT/SIGTERM instead of dying, so cleanup code gets to run.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is
        // async-signal-safe; installing it has no other preconditions.
        unsafe { libc::signal(sig, handler) };
    }
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fail if the user asked us to stop.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep, waking up early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    Ok(())
}

/// The command line as a human would type it (for logs and errors).
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Wait for `child` at most `timeout`; kill it on timeout or Ctrl-C.
pub fn wait_timeout(child: &mut Child, what: &str, timeout: Duration) -> Result<ExitStatus> {
    wait_inner(child, what, timeout, Mode::Normal)
}

/// Whether a Ctrl-C aborts the command (normal work) or not (cleanup, which
/// must still run after the user pressed Ctrl-C).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Cleanup,
}

fn wait_inner(child: &mut Child, what: &str, timeout: Duration, mode: Mode) -> Result<ExitStatus> {
    let end = Instant::now() + timeout;
    // Most commands (`ip`, `sysctl`, `weft`) take a few milliseconds and
    // tests run thousands: poll fast first, then every 5 ms (a waitpid each).
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(status);
        }
        let stop = mode == Mode::Normal && interrupted();
        if stop || Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            if stop {
                bail!("interrupted while running `{what}`");
            }
            bail!(
                "`{what}` did not finish within {}s; killed",
                timeout.as_secs()
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Run with inherited stdout/stderr, echoing the command; fail on non-zero.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let what = show(cmd);
    println!("$ {what}");
    let status = status(cmd, timeout)?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Run with inherited stdout/stderr, without echo; return the exit status.
pub fn status(cmd: &mut Command, timeout: Duration) -> Result<ExitStatus> {
    let what = show(cmd);
    check_interrupted()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    wait_timeout(&mut child, &what, timeout)
}

/// Run capturing stdout and stderr; the status is returned, not checked.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    capture(cmd, timeout, true, Mode::Normal)
}

/// Like [`stdout`], but also runs after Ctrl-C: for cleanup in `Drop`.
pub fn cleanup(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = show(cmd);
    checked_stdout(&what, capture(cmd, timeout, true, Mode::Cleanup)?)
}

/// Run capturing stdout, stderr going to ours (progress of long builds stays
/// visible); the status is returned, not checked.
pub fn output_stdout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    capture(cmd, timeout, false, Mode::Normal)
}

fn capture(cmd: &mut Command, timeout: Duration, with_stderr: bool, mode: Mode) -> Result<Output> {
    let what = show(cmd);
    if mode == Mode::Normal {
        check_interrupted()?;
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if with_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    // Drain the pipes on threads so a chatty child can't block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = wait_inner(&mut child, &what, timeout, mode)?;
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Run capturing output; fail (quoting stderr) on non-zero; return stdout.
pub fn stdout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = show(cmd);
    checked_stdout(&what, output(cmd, timeout)?)
}

/// `out`'s stdout if `what` succeeded, else an error quoting its stderr.
fn checked_stdout(what: &str, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the command runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command, timeout: Duration) -> bool {
    output(cmd, timeout).is_ok_and(|o| o.status.success())
}

/// Build a `Command` from a program and its arguments.
pub fn cmd<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// A process running in the background (a server), killed when dropped.
pub struct Background {
    child: Child,
    what: String,
}

impl Background {
    /// Start `cmd` with stdout/stderr discarded.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let what = show(cmd);
        check_interrupted()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        Ok(Self { child, what })
    }

    /// Wait for it to exit by itself, at most `timeout` (then kill it).
    pub fn wait(mut self, timeout: Duration) -> Result<ExitStatus> {
        wait_timeout(&mut self.child, &self.what, timeout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether we run as root (namespaces, bpffs, apt-get need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
