//! Where weft keeps things: its bpffs pin directory and its state directory.
//!
//! Both are configurable so tests and several weft instances can share one
//! machine without seeing each other's maps or state.
//!
//! Pins must outlive the command: a bpffs that goes away takes the maps,
//! programs and TCX links with it. `ip netns exec` runs a command in a
//! private mount namespace with a fresh sysfs on `/sys`, so `/sys/fs/bpf`
//! there is an empty sysfs directory, and a bpffs mounted on it dies with
//! that namespace when the command exits. So a weft in such a namespace
//! first joins the mount namespace it was started from
//! ([`join_outliving_mount_namespace`]), where it sees what `weft --netns
//! NODE` run from there sees; and it never mounts bpffs in a private mount
//! namespace.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns},
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

    /// Makes sure the pin directory exists on a bpffs that outlives this
    /// command, mounting bpffs at `/sys/fs/bpf` first when the pin
    /// directory lives there and it is not mounted (fresh machines have the
    /// directory but no mount). In a private mount namespace (one
    /// [`join_outliving_mount_namespace`] could not leave) it refuses,
    /// changing nothing, unless the pin directory is on a bpffs the
    /// namespace weft came from shares.
    pub fn prepare_bpffs(&self) -> Result<()> {
        if let MountNamespace::Private(anchor) = mount_namespace()
            && !shares_bpffs(anchor, &self.bpffs)
        {
            return Err(Error::Invalid(format!(
                "weft runs in a private mount namespace (as under `ip netns exec`) and {} is not \
                 on a bpffs the mount namespace it came from shares: pins there would vanish \
                 with the command, and the datapath with them. Run `weft --netns NODE ...` \
                 instead of `ip netns exec NODE weft ...`, or mount bpffs on the host first \
                 (`mount -t bpf bpf {BPFFS_ROOT}`)",
                self.bpffs.display()
            )));
        }
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

/// Whose mount namespace this process runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MountNamespace {
    /// The one of the process it was started from (see [`anchor`]): what
    /// it mounts there outlives it.
    Anchor,
    /// Another one than that of process `.0` (`ip netns exec`,
    /// `unshare -m`, a sandboxed service): what is mounted only here goes
    /// away with it.
    Private(u32),
    /// No process to compare with could be inspected.
    Unknown,
}

/// The identity of process `pid`'s mount namespace, if it can be
/// inspected (root can, except where a sandbox hides a process).
fn mount_ns_id(pid: &str) -> Option<(u64, u64)> {
    fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The process whose mount namespace outlives this command: PID 1 where
/// it can be inspected, else the oldest ancestor that can (some sandboxes
/// hide PID 1). Not a parent: `ip netns exec` runs its command in a
/// namespace made for it, and a parent may be in there too.
fn anchor() -> Option<u32> {
    if mount_ns_id("1").is_some() {
        return Some(1);
    }
    let parent = |pid: u32| -> Option<u32> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("PPid:"))?;
        line["PPid:".len()..].trim().parse().ok()
    };
    let mut oldest = None;
    let mut pid = std::os::unix::process::parent_id();
    // Bounded: a pid chain cannot be longer than the pids there are.
    for _ in 0..4096 {
        if pid <= 1 {
            break;
        }
        if mount_ns_id(&pid.to_string()).is_some() {
            oldest = Some(pid);
        }
        match parent(pid) {
            Some(p) => pid = p,
            None => break,
        }
    }
    oldest
}

fn mount_namespace() -> MountNamespace {
    let Some(anchor) = anchor() else {
        return MountNamespace::Unknown;
    };
    match (mount_ns_id("self"), mount_ns_id(&anchor.to_string())) {
        (Some(own), Some(theirs)) if own == theirs => MountNamespace::Anchor,
        (Some(_), Some(_)) => MountNamespace::Private(anchor),
        _ => MountNamespace::Unknown,
    }
}

/// Whether `path` (or its nearest existing ancestor) is on a bpffs that
/// process `anchor` sees at the same path: the same filesystem, so pins
/// there outlive this mount namespace.
fn shares_bpffs(anchor: u32, path: &Path) -> bool {
    let ours = nearest_existing(path);
    let theirs = nearest_existing(
        &Path::new(&format!("/proc/{anchor}/root")).join(path.strip_prefix("/").unwrap_or(path)),
    );
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    is_bpffs(&ours) && dev(&ours).is_some() && dev(&ours) == dev(&theirs)
}

/// Joins the mount namespace weft was started from when it runs in a
/// private one where pin directory `bpffs` is not on a bpffs shared with
/// that namespace (`ip netns exec`): pins made or found there are the
/// ones a `weft --netns NODE` from outside uses, and a bpffs mounted there
/// stays. A private namespace that shares its bpffs (a sandboxed service)
/// is kept. Call it before any thread exists: `setns(CLONE_NEWNS)` refuses
/// a process whose threads share filesystem attributes. It resets the
/// working directory, which is restored by path, so relative paths mean
/// what they meant.
pub fn join_outliving_mount_namespace(bpffs: &Path) -> Result<()> {
    let MountNamespace::Private(anchor) = mount_namespace() else {
        return Ok(());
    };
    if shares_bpffs(anchor, bpffs) {
        return Ok(());
    }
    let path = format!("/proc/{anchor}/ns/mnt");
    let ns = fs::File::open(&path).map_err(|e| Error::io(format!("cannot open {path}"), e))?;
    let cwd = std::env::current_dir().ok();
    setns(&ns, CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::sys(
            format!(
                "weft runs in a private mount namespace (as under `ip netns exec`), where its \
                 pins would vanish with the command, and cannot join that of process {anchor}; \
                 run `weft --netns NODE ...` instead of `ip netns exec NODE weft ...`"
            ),
            e,
        )
    })?;
    log::info!("left a private mount namespace for that of process {anchor}");
    if let Some(cwd) = cwd
        && std::env::set_current_dir(&cwd).is_err()
    {
        log::warn!(
            "{} does not exist outside the private mount namespace; relative paths now start at /",
            cwd.display()
        );
    }
    Ok(())
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
