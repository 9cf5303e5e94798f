//! Pin directories on bpffs, unique to the run and removed on drop: every
//! pin a test or a node makes lives in one, never in `/sys/fs/bpf/weft`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::run::pin_dir_path;

const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// A directory on bpffs that is removed, with everything pinned in it, on drop.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Creates a run-unique directory under /sys/fs/bpf (see
    /// [`crate::run`]), mounting bpffs first if needed.
    pub fn new() -> io::Result<Self> {
        ensure_bpffs()?;
        let path = pin_dir_path();
        fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unlinking a pin drops the kernel object once nothing else holds it.
        if let Err(err) = fs::remove_dir_all(&self.path)
            && err.kind() != io::ErrorKind::NotFound
        {
            eprintln!("warning: removing {}: {err}", self.path.display());
        }
    }
}

/// Mounts bpffs on /sys/fs/bpf unless one is already there (a fresh
/// machine has the directory but nothing mounted on it).
pub fn ensure_bpffs() -> io::Result<()> {
    if is_bpffs(Path::new(BPFFS_ROOT))? {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS_ROOT])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mounting bpffs on {BPFFS_ROOT} failed ({status}); are we root?"
        )))
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is a
    // writable statfs buffer that outlives the call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // f_type is a signed word whose width varies by architecture.
    Ok(stat.f_type as u64 == BPF_FS_MAGIC)
}
