//! Per-network locks, so changes to different networks run concurrently
//! while changes to one network run one at a time.
//!
//! Each network has a lock file `<state dir>/locks/network-<name>` taken with
//! an exclusive `flock` for a whole endpoint add or remove (and a network
//! removal): the flood list is read, changed and written back in the
//! kernel, and addresses are handed out per network. The state's own lock
//! (`state::Locked`) is taken after it, never before (one order, no
//! deadlock). `flock` locks belong to the open file, so two requests in one
//! process exclude each other like two processes do. Lock files are never
//! removed: deleting one while a request waits on it would let a third take
//! a fresh file at the same path.

use std::fs::{File, OpenOptions};

use nix::fcntl::{Flock, FlockArg};

use crate::{
    error::{Error, Result},
    paths::Paths,
};

/// An exclusive hold on one lock, released on drop.
pub struct ObjectLock {
    _lock: Flock<File>,
}

/// Waits for and takes the lock of network `name`. Names outside the
/// validated alphabet are hex-encoded, so any name maps to one file.
pub fn network(paths: &Paths, name: &str) -> Result<ObjectLock> {
    take(paths, "network-", name)
}

/// Waits for and takes the lock that makes loading and pinning the
/// program on first use happen once when endpoints of two networks are
/// added together.
pub fn programs(paths: &Paths) -> Result<ObjectLock> {
    take(paths, "", "programs")
}

fn take(paths: &Paths, prefix: &str, name: &str) -> Result<ObjectLock> {
    paths.prepare_state_dir()?;
    let dir = paths.state_dir.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let safe: String = if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        name.to_owned()
    } else {
        name.bytes().map(|b| format!("%{b:02x}")).collect()
    };
    let path = dir.join(format!("{prefix}{safe}"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::sys(format!("cannot lock {}", path.display()), errno))?;
    Ok(ObjectLock { _lock: lock })
}
