//! weft's saved state: what networks and endpoints exist on this node.
//!
//! The kernel holds the datapath; `state.json` holds the names and choices
//! that cannot be read back from it (network names, which netns an endpoint
//! lives in, ...). It is replaced atomically (temp file, fsync, rename, fsync
//! of the directory) so a crash leaves the old or the new file, never half of
//! one, and every mutating command holds an exclusive `flock` on `lock` for
//! its whole run so concurrent `weft` invocations serialize.

use std::{
    fs::{self, File, OpenOptions},
    io::{ErrorKind, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    mac::Mac,
    paths::Paths,
};

/// Version of the state file layout.
pub const STATE_VERSION: u32 = 1;

/// Everything weft remembers about this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    /// Next network id to hand out; ids are never reused within one file so
    /// stale kernel state can never be mistaken for a new network.
    pub next_network_id: u32,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    /// The node's uplink for masquerade (`weft node set`); absent in state
    /// files written before masquerade existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeUplink>,
    /// Endpoints the agent is adding right now (see [`Reservation`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
    /// Published ports (`weft publish`); absent in older state files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Other nodes of the overlay (`weft node add`), with their pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_nodes: Vec<RemoteNode>,
}

/// A port published on the node's address to an endpoint's port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Publication {
    pub endpoint: String,
    pub proto: crate::cmd::publish::Proto,
    pub host_port: u16,
    pub container_port: u16,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            next_network_id: 1,
            networks: Vec::new(),
            endpoints: Vec::new(),
            node: None,
            reservations: Vec::new(),
            publications: Vec::new(),
            remote_nodes: Vec::new(),
        }
    }
}

/// An endpoint being added while the state lock is not held (the agent
/// adds endpoints of different networks concurrently): its name, address,
/// host interface and counter slot are taken until the add commits or
/// fails, so no other add, by the agent or a direct `weft` command, picks
/// them. The agent clears leftovers of a crashed predecessor at start.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reservation {
    pub endpoint: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub stats_slot: u32,
}

/// How this node encapsulates overlay traffic.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Tunnel metadata and the collect-metadata vxlan device.
    Tunnel,
    /// Outer headers written by the program.
    Bpf,
}

/// A node's pod CIDR of one network: a slice of the network's
/// cluster-wide subnet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodSubnet {
    pub network: String,
    pub cidr: Ipv4Net,
}

/// This node's side of the overlay (`weft node set --encap`); its underlay
/// is the uplink, its underlay address the uplink's `ip`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeOverlay {
    pub encap: Encap,
    pub vtep_mac: Mac,
    /// Largest inner packet: the uplink's MTU minus VXLAN's 50 bytes.
    pub mtu: u32,
    /// Tunnel mode: the collect-metadata vxlan device weft created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_ifname: Option<String>,
    #[serde(default)]
    pub vxlan_ifindex: u32,
    /// The XDP early drop is attached to the underlay (`--xdp`).
    #[serde(default)]
    pub xdp: bool,
}

/// Another node of the overlay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    pub subnets: Vec<PodSubnet>,
}

/// The node's uplink: where masqueraded traffic leaves, with which address
/// and NAT port range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeUplink {
    /// Interface name in the node namespace.
    pub uplink: String,
    pub uplink_ifindex: u32,
    /// The address masqueraded traffic leaves with (one of the uplink's).
    pub ip: Ipv4Addr,
    /// NAT port range, inclusive.
    pub port_min: u16,
    pub port_max: u16,
    /// Connections the conntrack table may hold (`--conntrack-max`); `None`:
    /// `weft_common::maps::CT_DEFAULT_LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u32>,
    /// `net.ipv4.conf.all.forwarding` before `node set` turned it on, so
    /// `node unset` and `teardown` put it back; `None` if it was on already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_before: Option<String>,
    /// The overlay, when `node set --encap` turned it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<NodeOverlay>,
    /// This node's pod CIDRs (`node set --subnet`): endpoints get their
    /// addresses there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<PodSubnet>,
}

/// A weft network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub flood: bool,
    /// Masquerade traffic to non-weft destinations out of the node's uplink.
    /// Networks from state files older than masquerade read as `false`,
    /// as their datapath entries were written without it.
    #[serde(default)]
    pub masquerade: bool,
    /// Names of the networks this one routes to (always symmetric).
    pub connected: Vec<String>,
    /// VXLAN network identifier on the overlay; 0 (state files from before
    /// the overlay) means the network id.
    #[serde(default)]
    pub vni: u32,
}

impl Network {
    pub fn gateway_mac(&self) -> Mac {
        Mac::gateway(self.id)
    }

    /// The VNI the overlay carries this network with.
    pub fn overlay_vni(&self) -> u32 {
        if self.vni == 0 { self.id } else { self.vni }
    }
}

/// A container endpoint; also its JSON form in command output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub ifname: String,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub mtu: u32,
    /// Index of the endpoint's counters in the per-CPU stats array.
    pub stats_slot: u32,
}

impl State {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn network_mut(&mut self, name: &str) -> Option<&mut Network> {
        self.networks.iter_mut().find(|n| n.name == name)
    }

    /// The network `name`, or an error saying how to list the existing ones.
    pub fn require_network(&self, name: &str) -> Result<&Network> {
        self.network(name).ok_or_else(|| {
            Error::NotFound(format!(
                "network '{name}' does not exist (see `weft network ls`)"
            ))
        })
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Whether an endpoint named `name` exists or is being added.
    pub fn endpoint_name_taken(&self, name: &str) -> bool {
        self.endpoint(name).is_some() || self.reservations.iter().any(|r| r.endpoint == name)
    }

    /// The endpoint (existing or being added) that holds address `ip`.
    pub fn ip_holder(&self, ip: Ipv4Addr) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.ip == ip)
            .map(|e| e.name.as_str())
            .or_else(|| {
                self.reservations
                    .iter()
                    .find(|r| r.ip == ip)
                    .map(|r| r.endpoint.as_str())
            })
    }

    /// This node's pod CIDR of network `name`, if it has one.
    pub fn own_subnet(&self, network: &str) -> Option<Ipv4Net> {
        self.node
            .as_ref()?
            .subnets
            .iter()
            .find(|s| s.network == network)
            .map(|s| s.cidr)
    }

    /// The endpoints attached to network `name`, in creation order.
    pub fn endpoints_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.network == network)
    }
}

/// Reads the state without locking (read-only commands); a missing file is
/// an empty state.
pub fn read(paths: &Paths) -> Result<State> {
    read_file(&paths.state_file())
}

fn read_file(path: &Path) -> Result<State> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::CorruptState {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// The state, read under the exclusive lock, which is held until drop.
pub struct Locked {
    _lock: Flock<File>,
    path: PathBuf,
    pub state: State,
}

impl Locked {
    /// Takes the lock (waiting for other weft commands) and reads the state.
    pub fn acquire(paths: &Paths) -> Result<Self> {
        paths.prepare_state_dir()?;
        let lock_path = paths.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("cannot open lock file {}", lock_path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            Error::sys(format!("cannot lock {}", lock_path.display()), errno)
        })?;
        let path = paths.state_file();
        let state = read_file(&path)?;
        Ok(Self {
            _lock: lock,
            path,
            state,
        })
    }

    /// Atomically replaces the saved state with `new`.
    pub fn commit(&mut self, new: State) -> Result<()> {
        write_atomic(&self.path, &new)?;
        self.state = new;
        Ok(())
    }

    /// Removes the state file (teardown); absent is fine.
    pub fn remove(&mut self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot remove {}", self.path.display()),
                    e,
                ));
            }
        }
        self.state = State::default();
        Ok(())
    }
}

fn write_atomic(path: &Path, state: &State) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".state.json.{}.tmp", std::process::id()));
    let result = (|| {
        let mut json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_lock() {
        let dir = std::env::temp_dir().join(format!("weft-state-test-{}", std::process::id()));
        let paths = Paths::new("/nonexistent", &dir);
        let mut locked = Locked::acquire(&paths).unwrap();
        assert_eq!(locked.state, State::default());
        let mut s = State::default();
        s.networks.push(Network {
            name: "a".into(),
            id: 1,
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 1, 0, 1),
            flood: false,
            masquerade: true,
            connected: vec![],
            vni: 0,
        });
        locked.commit(s.clone()).unwrap();
        drop(locked);
        assert_eq!(read(&paths).unwrap(), s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_without_node_or_masquerade_still_reads() {
        let old = r#"{"version":1,"next_network_id":2,"networks":[{"name":"a","id":1,
            "subnet":"10.1.0.0/24","gateway":"10.1.0.1","flood":false,"connected":[]}],
            "endpoints":[]}"#;
        let st: State = serde_json::from_str(old).unwrap();
        assert_eq!(st.node, None);
        assert!(!st.networks[0].masquerade);
    }
}
