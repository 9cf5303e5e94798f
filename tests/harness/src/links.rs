//! The links every topology is made of, created inside the run's
//! namespaces with `ip`: veth pairs between two namespaces, Linux bridges,
//! addresses and routes. Links die with the namespace they sit in, so the
//! namespace guards are the only cleanup.

use anyhow::Result;

use crate::netns::NetNs;

impl NetNs {
    /// A veth pair, `here` in this namespace and `there` in `peer`, both of
    /// MTU `mtu` (the kernel's default when `None`); neither is up.
    pub fn add_veth(&self, here: &str, peer: &NetNs, there: &str, mtu: Option<u32>) -> Result<()> {
        let mtu = mtu.map(|m| m.to_string());
        let mtu_args: Vec<&str> = mtu.iter().flat_map(|m| ["mtu", m.as_str()]).collect();
        let mut argv = vec!["ip", "link", "add", here];
        argv.extend(&mtu_args);
        argv.extend(["type", "veth", "peer", "name", there]);
        argv.extend(&mtu_args);
        argv.extend(["netns", peer.name()]);
        self.exec(&argv).map(drop)
    }

    /// A Linux bridge `name` of MTU `mtu` (the kernel's default when
    /// `None`), up.
    pub fn add_bridge(&self, name: &str, mtu: Option<u32>) -> Result<()> {
        let mtu = mtu.map(|m| m.to_string());
        let mut argv = vec!["ip", "link", "add", name];
        if let Some(mtu) = &mtu {
            argv.extend(["mtu", mtu]);
        }
        argv.extend(["type", "bridge"]);
        self.exec(&argv)?;
        self.exec(&["ip", "link", "set", name, "up"]).map(drop)
    }

    /// Puts `dev` on `bridge` and brings it up.
    pub fn enslave(&self, dev: &str, bridge: &str) -> Result<()> {
        self.exec(&["ip", "link", "set", dev, "master", bridge])?;
        self.exec(&["ip", "link", "set", dev, "up"]).map(drop)
    }

    /// Gives `dev` the address `cidr` and brings it up.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.exec(&["ip", "addr", "add", cidr, "dev", dev])?;
        self.exec(&["ip", "link", "set", dev, "up"]).map(drop)
    }

    /// The default route via `gateway`.
    pub fn add_default_route(&self, gateway: &str) -> Result<()> {
        self.exec(&["ip", "route", "add", "default", "via", gateway])
            .map(drop)
    }

    /// An uplink from this namespace to `peer`, its next hop: a veth pair,
    /// `here` with `here_ip`/24 in this namespace and `there` with
    /// `there_ip`/24 in `peer`, both up, and this namespace's default route
    /// via `there_ip`.
    pub fn uplink_to(
        &self,
        (here, here_ip): (&str, &str),
        peer: &NetNs,
        (there, there_ip): (&str, &str),
    ) -> Result<()> {
        self.add_veth(here, peer, there, None)?;
        self.add_addr(here, &format!("{here_ip}/24"))?;
        peer.add_addr(there, &format!("{there_ip}/24"))?;
        self.add_default_route(there_ip)
    }
}

/// Plugs `container` into `bridge` of `host` the way Docker and Flannel's
/// `cni0` do: a veth `host_end` on the bridge, `eth0` in the container with
/// `cidr`, both of MTU `mtu`, up, the default route via `gateway` if any.
pub fn plug_container(
    host: &NetNs,
    bridge: &str,
    host_end: &str,
    container: &NetNs,
    (cidr, gateway): (&str, Option<&str>),
    mtu: Option<u32>,
) -> Result<()> {
    host.add_veth(host_end, container, "eth0", mtu)?;
    host.enslave(host_end, bridge)?;
    container.add_addr("eth0", cidr)?;
    if let Some(gateway) = gateway {
        container.add_default_route(gateway)?;
    }
    Ok(())
}
