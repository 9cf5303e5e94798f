//! Who may write a node's kernel state and store: one engine at a time.
//! The agent holds the writer lock for its life; a command run without an
//! agent holds it for its one change. A second agent is refused; a
//! command run in-process while an agent owns the node is refused with
//! what to do instead, and waits for another in-process command.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use crate::{
    datapath::paths::Paths,
    error::{Error, Result},
};

/// An exclusive `flock`, released on drop (or when the process dies).
pub struct Held {
    _lock: Flock<File>,
}

fn open(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

fn agent_lock_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("agent.lock")
}

fn writer_lock_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("writer.lock")
}

/// The node's agent lock, or an error naming the agent that holds it.
pub fn agent(paths: &Paths) -> Result<Held> {
    paths.prepare_state_dir()?;
    let path = agent_lock_path(paths);
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lock =
        Flock::lock(open(&path)?, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            Error::Conflict(format!(
                "another weft agent already runs for this node (pid {}, lock {}: {errno}); \
                 stop it first",
                holder.trim(),
                path.display()
            ))
        })?;
    lock.set_len(0)
        .and_then(|()| write!(lock, "{}", std::process::id()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(Held { _lock: lock })
}

/// Whether an agent holds the node's agent lock now.
fn agent_running(paths: &Paths) -> Result<Option<String>> {
    let path = agent_lock_path(paths);
    if !path.exists() {
        return Ok(None);
    }
    match Flock::lock(open(&path)?, FlockArg::LockExclusiveNonblock) {
        Ok(_free) => Ok(None),
        Err((_, Errno::EWOULDBLOCK)) => Ok(Some(
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        )),
        Err((_, errno)) => Err(Error::sys(format!("cannot lock {}", path.display()), errno)),
    }
}

/// The writer lock. `agent`: the agent waits for in-process commands to
/// finish; a command refuses to run beside an agent.
pub fn writer(paths: &Paths, agent: bool) -> Result<Held> {
    paths.prepare_state_dir()?;
    let path = writer_lock_path(paths);
    let file = open(&path)?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(Held { _lock: lock }),
        Err((file, Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => {
            return Err(Error::sys(format!("cannot lock {}", path.display()), errno));
        }
    };
    if !agent && let Some(pid) = agent_running(paths)? {
        return Err(Error::Unavailable(format!(
            "a weft agent (pid {pid}) owns this node's datapath: run the command without \
             --direct (or WEFT_DIRECT) so the agent makes the change, or stop the agent first"
        )));
    }
    Flock::lock(file, FlockArg::LockExclusive)
        .map(|lock| Held { _lock: lock })
        .map_err(|(_, errno)| Error::sys(format!("cannot lock {}", path.display()), errno))
}
