//! Network namespaces: naming them, entering them, running work inside them.
//!
//! `setns(2)` switches only the calling thread, and netlink sockets belong to
//! the namespace of the thread that opened them. So the node namespace is
//! entered on the main thread before any runtime or thread exists, and work in
//! a container namespace runs on a dedicated OS thread with its own runtime
//! and its own netlink connection.

use std::{
    fs::File,
    future::Future,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// Where `ip netns add NAME` puts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of namespace `spec`: a path if it contains `/`, else a name in
/// `/run/netns`.
pub fn resolve(spec: &str) -> PathBuf {
    if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new(NETNS_RUN_DIR).join(spec)
    }
}

/// Opens namespace `spec`, with an error naming where it looked.
pub fn open(spec: &str) -> Result<File> {
    if spec.is_empty() {
        return Err(Error::Invalid(
            "network namespace name is empty; give a name in /run/netns or a path".into(),
        ));
    }
    let path = resolve(spec);
    File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!(
                "network namespace '{spec}' does not exist (looked in {})",
                path.display()
            ))
        } else {
            Error::io(
                format!("cannot open network namespace {}", path.display()),
                e,
            )
        }
    })
}

/// Switches the calling thread into namespace `spec`. Call it on the main
/// thread before creating threads or runtimes: they inherit it.
pub fn enter(spec: &str) -> Result<()> {
    let ns = open(spec)?;
    setns(&ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys(format!("cannot enter network namespace '{spec}'"), e))
}

/// Runs `work` on a new OS thread inside namespace `ns`, on that thread's own
/// current-thread tokio runtime, and returns its result.
pub fn run_in<F, Fut, T>(ns: &File, work: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::sys("cannot enter the container's network namespace", e))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        Error::io("cannot start a runtime in the container namespace", e)
                    })?;
                rt.block_on(work())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "the container namespace worker panicked",
                    std::io::Error::other("panic"),
                ))
            })
    })
}

/// Disables IPv6 on `ifname` in the calling thread's namespace so the
/// interface sends no ND/MLD noise. weft networks are IPv4-only.
///
/// `/proc/sys/net` resolves against the opening thread's namespace.
pub fn disable_ipv6(ifname: &str) -> std::io::Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    )
}
