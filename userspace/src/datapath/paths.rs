//! Where weft keeps things: its bpffs pin directory and its state directory.
//!
//! Both are configurable so tests and several weft instances can share one
//! machine without seeing each other's maps or state.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::error::{Error, Result};

/// The uplink's link pin in `links/`: the kernel's `dev_valid_name`
/// rejects ':', so no endpoint veth is ever called this.
pub const UPLINK_LINK_PIN: &str = ":uplink";
/// The link pin of `weft_from_vxlan` on the tunnel mode's vxlan device, a
/// name no interface can have either.
pub const VXLAN_LINK_PIN: &str = ":vxlan";

/// Default pin directory on bpffs.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/weft";
/// Default directory of `state.json` and the lock file.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/weft";
/// Where bpffs is conventionally mounted; weft mounts it there when missing.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The directories one weft instance owns.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Pin directory: `maps/`, `progs/`, `links/` live below it.
    pub bpffs: PathBuf,
    /// Holds `state.json` and `lock`.
    pub state_dir: PathBuf,
}

impl Paths {
    pub fn new(bpffs: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bpffs: bpffs.into(),
            state_dir: state_dir.into(),
        }
    }

    /// Pinned maps, one file per map name.
    pub fn maps_dir(&self) -> PathBuf {
        self.bpffs.join("maps")
    }

    /// Pinned programs, one file per program name.
    pub fn progs_dir(&self) -> PathBuf {
        self.bpffs.join("progs")
    }

    /// Pinned TCX links, one file per host-side interface name.
    pub fn links_dir(&self) -> PathBuf {
        self.bpffs.join("links")
    }

    /// The pin of program `name`.
    pub fn prog_pin(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// The pin of the TCX link attached to `host_ifname`.
    pub fn link_pin(&self, host_ifname: &str) -> PathBuf {
        self.links_dir().join(host_ifname)
    }

    /// The pin of the TCX link on the node's uplink, among the endpoints'
    /// (so whatever moves every pinned link, like a layout migration, moves
    /// it too) under [`UPLINK_LINK_PIN`], a name no interface can have.
    pub fn uplink_link_pin(&self) -> PathBuf {
        self.links_dir().join(UPLINK_LINK_PIN)
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }

    /// Makes sure the pin directory exists on a bpffs, mounting bpffs at
    /// `/sys/fs/bpf` first when the pin directory lives there and it is not
    /// mounted (fresh machines have the directory but no mount).
    pub fn prepare_bpffs(&self) -> Result<()> {
        let under_root = self.bpffs.starts_with(BPFFS_ROOT);
        if under_root && !is_bpffs(Path::new(BPFFS_ROOT)) {
            mount_bpffs(Path::new(BPFFS_ROOT))?;
        }
        let anchor = nearest_existing(&self.bpffs);
        if !is_bpffs(&anchor) {
            return Err(Error::Invalid(format!(
                "{} is not on a bpf filesystem; pass --bpffs a directory under {BPFFS_ROOT} \
                 or mount one (`mount -t bpf bpf DIR`)",
                self.bpffs.display()
            )));
        }
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Creates the state directory if needed.
    pub fn prepare_state_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.state_dir).map_err(|e| {
            Error::io(
                format!(
                    "cannot create state directory {}; pass --state-dir a writable directory",
                    self.state_dir.display()
                ),
                e,
            )
        })
    }
}

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> Result<()> {
    fs::create_dir_all(at).map_err(|e| Error::io(format!("cannot create {}", at.display()), e))?;
    mount(
        Some("bpf"),
        at,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!(
                "cannot mount bpffs at {}; mount it yourself (`mount -t bpf bpf {}`)",
                at.display(),
                at.display()
            ),
            e,
        )
    })
}

/// `path` or its closest ancestor that exists.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}
