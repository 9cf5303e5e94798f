//! A node's state directory (`--state-dir`: `state.json`, locks, the agent
//! socket), unique to the run and removed on drop, so no run ever reads or
//! writes a real install's `/var/lib/weft`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::run::state_dir_path;

/// A directory path weft creates on first use and this guard removes.
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// A run-unique path under /tmp (see [`crate::run`]); not created.
    pub fn new() -> Self {
        Self {
            path: state_dir_path(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path)
            && err.kind() != io::ErrorKind::NotFound
        {
            eprintln!("warning: removing {}: {err}", self.path.display());
        }
    }
}
