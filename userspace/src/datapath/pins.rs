//! Pins on bpffs: removing them idempotently and listing a pin directory.

use std::{fs, io::ErrorKind, path::Path};

use crate::error::{Error, Result};

/// Removes the pin at `path`; absent is fine.
pub fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("cannot remove pin {}", path.display()),
            e,
        )),
    }
}

/// The names pinned in `dir`, sorted (none if it does not exist).
pub fn pins_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}
