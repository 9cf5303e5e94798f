//! The kernel objects besides map entries that the model describes: each
//! endpoint's veth pair (configured inside its container), the tunnel
//! mode's vxlan device, the gateway addresses on the node's loopback, the
//! host routes to endpoints, IPv4 forwarding, and which programs are
//! pinned and attached where.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use weft_common::maps::{
    PROG_FROM_CONTAINER, PROG_FROM_UPLINK, PROG_FROM_VXLAN, PROG_NAT_EGRESS, PROG_OVERLAY_ENCAP,
};

use crate::{
    datapath::paths::{UPLINK_LINK_PIN, VXLAN_LINK_PIN},
    model::{Mac, Model, naming::VXLAN_IFNAME},
};

/// An endpoint's veth pair: the host end answers as the gateway, the
/// container end is addressed and routed via the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointDevice {
    pub endpoint: String,
    pub host_ifname: String,
    pub netns: String,
    pub ifname: String,
    pub mac: Mac,
    pub gateway_mac: Mac,
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// The tunnel mode's collect-metadata vxlan device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub mac: Mac,
    pub mtu: u32,
}

/// A pinned TC program attached to TC ingress of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcLink {
    pub program: &'static str,
    pub ifname: String,
}

/// A host route to an endpoint through its veth, from the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub host_ifname: String,
    pub src: Ipv4Addr,
}

/// Everything besides map entries, by the name each object is known by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredNet {
    /// By host interface name.
    pub endpoints: BTreeMap<String, EndpointDevice>,
    pub vxlan: Option<VxlanDevice>,
    /// The gateway of every network with an endpoint, as /32 on `lo`.
    pub loopback_addrs: BTreeSet<Ipv4Addr>,
    /// By endpoint address.
    pub host_routes: BTreeMap<Ipv4Addr, HostRoute>,
    /// The node's `lo` must be up (it carries the gateway addresses).
    pub lo_up: bool,
    /// `net.ipv4.conf.all.forwarding` must be 1.
    pub forwarding: bool,
    /// TC programs that must be pinned.
    pub programs: BTreeSet<&'static str>,
    /// By link pin name (under `links/`).
    pub tc_links: BTreeMap<String, TcLink>,
    /// The interface the XDP early drop must be attached to.
    pub xdp: Option<String>,
}

/// The objects `model` describes.
pub fn render(model: &Model) -> DesiredNet {
    let mut d = DesiredNet::default();
    for ep in &model.endpoints {
        let Some(net) = model.network(&ep.network) else {
            continue;
        };
        d.endpoints.insert(
            ep.host_ifname.clone(),
            EndpointDevice {
                endpoint: ep.name.clone(),
                host_ifname: ep.host_ifname.clone(),
                netns: ep.netns.clone(),
                ifname: ep.ifname.clone(),
                mac: ep.mac,
                gateway_mac: net.gateway_mac(),
                mtu: ep.mtu,
                ip: ep.ip,
                prefix_len: net.subnet.prefix_len(),
                gateway: net.gateway,
            },
        );
        d.loopback_addrs.insert(net.gateway);
        d.host_routes.insert(
            ep.ip,
            HostRoute {
                host_ifname: ep.host_ifname.clone(),
                src: net.gateway,
            },
        );
        d.tc_links.insert(
            ep.host_ifname.clone(),
            TcLink {
                program: PROG_FROM_CONTAINER,
                ifname: ep.host_ifname.clone(),
            },
        );
    }
    if !d.endpoints.is_empty() {
        d.lo_up = true;
        d.programs
            .extend([PROG_FROM_CONTAINER, PROG_NAT_EGRESS, PROG_OVERLAY_ENCAP]);
        // Only a node with services pays for the load balancer's load.
        if !model.services.is_empty() {
            d.programs.insert(weft_common::maps::PROG_SERVICE);
        }
    }
    if let Some(node) = &model.node {
        d.forwarding = true;
        d.programs.insert(PROG_FROM_UPLINK);
        d.tc_links.insert(
            UPLINK_LINK_PIN.to_owned(),
            TcLink {
                program: PROG_FROM_UPLINK,
                ifname: node.uplink.clone(),
            },
        );
        if let Some(overlay) = &node.overlay {
            if overlay.vxlan_ifname.is_some() {
                d.vxlan = Some(VxlanDevice {
                    mac: overlay.vtep_mac,
                    mtu: overlay.mtu,
                });
                d.programs.insert(PROG_FROM_VXLAN);
                d.tc_links.insert(
                    VXLAN_LINK_PIN.to_owned(),
                    TcLink {
                        program: PROG_FROM_VXLAN,
                        ifname: VXLAN_IFNAME.to_owned(),
                    },
                );
            }
            if overlay.xdp {
                d.xdp = Some(node.uplink.clone());
            }
        }
    }
    d
}
