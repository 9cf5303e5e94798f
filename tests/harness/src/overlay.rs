//! A weft overlay cluster for end-to-end tests and the overlay bench: N
//! weft nodes on one underlay ([`crate::underlay`]), the same networks (and
//! VNIs) on each, every node with a /24 pod CIDR of every network and every
//! other node added with `weft node add`, all in one encapsulation mode.

use anyhow::Result;

use crate::{
    netns::NetNs,
    underlay::{Underlay, UnderlayNode, VXLAN_OVERHEAD},
};

/// A network of the cluster: name, its /16 is `10.<octet>.0.0/16`, VNI.
#[derive(Clone, Copy, Debug)]
pub struct ClusterNet {
    pub name: &'static str,
    pub octet: u8,
    pub vni: u32,
}

impl ClusterNet {
    pub fn subnet(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// Node `i`'s (1-based) pod CIDR of this network.
    pub fn pod_cidr(&self, i: usize) -> String {
        format!("10.{}.{i}.0/24", self.octet)
    }
}

pub struct Cluster {
    /// Keeps the switch namespace alive as long as the nodes.
    pub underlay: Underlay,
    pub nodes: Vec<UnderlayNode>,
    pub nets: Vec<ClusterNet>,
}

impl Cluster {
    /// `count` nodes named `n1`, `n2`, ... encapsulating with `encap`
    /// (`tunnel` or `bpf`), on an underlay of MTU 1500.
    pub fn new(encap: &str, count: usize, nets: &[ClusterNet]) -> Result<Self> {
        Self::with_mtu(encap, count, nets, 1500)
    }

    /// [`Cluster::new`] on an underlay of MTU `mtu`.
    pub fn with_mtu(encap: &str, count: usize, nets: &[ClusterNet], mtu: u32) -> Result<Self> {
        let underlay = Underlay::new(mtu)?;
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(underlay.weft_node()?);
        }
        for (i, n) in nodes.iter().enumerate() {
            for net in nets {
                let vni = net.vni.to_string();
                n.node.weft(&[
                    "network",
                    "create",
                    net.name,
                    "--subnet",
                    &net.subnet(),
                    "--vni",
                    &vni,
                ])?;
            }
            let subnets = cluster_subnets(nets, i);
            n.set_overlay(
                encap,
                &subnets.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
        }
        let cluster = Self {
            underlay,
            nodes,
            nets: nets.to_vec(),
        };
        for i in 0..count {
            for j in 0..count {
                if i != j {
                    cluster.add_peer(i, j)?;
                }
            }
        }
        Ok(cluster)
    }

    /// `weft node add` of node `j` on node `i`, with all its pod CIDRs.
    pub fn add_peer(&self, i: usize, j: usize) -> Result<()> {
        let subnets = cluster_subnets(&self.nets, j);
        self.nodes[i].add_node(
            &format!("n{}", j + 1),
            self.nodes[j].underlay_ip,
            &subnets.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )
    }

    /// A container on node `i` (0-based) in `network`, with the overlay's
    /// MTU (the underlay's less VXLAN's 50 bytes); returns it and its IP.
    pub fn container(&self, i: usize, network: &str, name: &str) -> Result<(NetNs, String)> {
        self.container_with_mtu(i, network, name, Some(self.underlay.mtu - VXLAN_OVERHEAD))
    }

    /// A container on node `i` (0-based) in `network` with MTU `mtu`, or
    /// weft's default when `None`; returns it and its IP.
    pub fn container_with_mtu(
        &self,
        i: usize,
        network: &str,
        name: &str,
        mtu: Option<u32>,
    ) -> Result<(NetNs, String)> {
        let mtu = mtu.map(|m| m.to_string());
        let extra: Vec<&str> = mtu.iter().flat_map(|m| ["--mtu", m.as_str()]).collect();
        self.nodes[i].node.container_with(network, name, &extra)
    }
}

/// Node `i`'s (0-based) pod CIDR of every network, as `--subnet NET=CIDR`
/// takes them.
fn cluster_subnets(nets: &[ClusterNet], i: usize) -> Vec<String> {
    nets.iter()
        .map(|net| format!("{}={}", net.name, net.pod_cidr(i + 1)))
        .collect()
}
