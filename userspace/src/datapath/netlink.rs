//! rtnetlink operations weft needs: veths, link settings, addresses, routes.
//!
//! A [`Netlink`] talks to the namespace of the thread that opened it, so open
//! one per namespace, after entering it (see [`super::netns`]).

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteScope},
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use weft_api::Mac;

use crate::error::{Error, Result, netlink_errno};

/// A netlink connection in the current thread's network namespace.
pub struct Netlink {
    handle: Handle,
}

/// Settings applied to an existing link in one request.
#[derive(Default, Debug, Clone)]
pub struct LinkSettings<'a> {
    pub name: Option<&'a str>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
}

impl Netlink {
    /// Opens a connection; must be called inside a tokio runtime.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("cannot open a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The ifindex of `name`, or `None` if there is no such link.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::netlink(format!("cannot look up link {name}"), e)),
        }
    }

    /// The ifindex of `name`, which must exist.
    pub async fn require_link(&self, name: &str) -> Result<u32> {
        self.link_index(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("link {name} does not exist")))
    }

    /// Creates a veth pair `name` <-> `peer` in this namespace.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot create veth pair {name}/{peer}"), e))
    }

    /// Creates a veth pair: `host` here with `host_mac` and `mtu`, its peer
    /// named `peer` directly in the namespace open as `peer_ns`, with
    /// `peer_mac` and `mtu`; both down. Creating the peer there, rather than
    /// moving it, spares the move's network-namespace synchronization
    /// (tens of milliseconds).
    pub async fn add_veth_into(
        &self,
        host: &str,
        host_mac: Mac,
        peer: &str,
        peer_mac: Mac,
        peer_ns: RawFd,
        mtu: u32,
    ) -> Result<()> {
        let mut msg = LinkVeth::new(host, peer)
            .address(host_mac.octets().to_vec())
            .mtu(mtu)
            .build();
        for attr in &mut msg.attributes {
            let LinkAttribute::LinkInfo(infos) = attr else {
                continue;
            };
            for info in infos {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))) = info {
                    peer_msg.attributes.extend([
                        LinkAttribute::Address(peer_mac.octets().to_vec()),
                        LinkAttribute::Mtu(mtu),
                        LinkAttribute::NetNsFd(peer_ns),
                    ]);
                }
            }
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot create veth pair {host}/{peer}"), e))
    }

    /// Deletes link `index` (for a veth, the peer goes with it).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot delete link #{index}"), e))
    }

    /// Deletes link `name` if it exists; returns whether it did.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link_index(name).await? {
            Some(index) => match self.delete_link(index).await {
                Ok(()) => Ok(true),
                // Raced with the kernel removing it (e.g. its peer's netns died).
                Err(_) if self.link_index(name).await?.is_none() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// Moves link `index` into the namespace open as `ns_fd`.
    pub async fn move_to_netns(&self, index: u32, ns_fd: RawFd) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).setns_by_fd(ns_fd).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot move link #{index} to the container"), e))
    }

    /// Renames and/or sets MAC and MTU of link `index` (rename needs it down).
    pub async fn configure_link(&self, index: u32, settings: &LinkSettings<'_>) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index);
        if let Some(name) = settings.name {
            msg = msg.name(name);
        }
        if let Some(mac) = settings.mac {
            msg = msg.address(mac.octets().to_vec());
        }
        if let Some(mtu) = settings.mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot configure link #{index}"), e))
    }

    /// Sets link `index` administratively up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot bring link #{index} up"), e))
    }

    /// Sets link `index` administratively down (rollback of [`Self::set_up`]).
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot set link #{index} down"), e))
    }

    /// Whether link `index` is administratively up.
    pub async fn is_up(&self, index: u32) -> Result<bool> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.flags.contains(LinkFlags::Up)),
            Ok(None) => Ok(false),
            Err(e) => Err(Error::netlink(format!("cannot look up link #{index}"), e)),
        }
    }

    /// Whether link `index` carries `ip` (any prefix length).
    pub async fn has_address(&self, index: u32, ip: Ipv4Addr) -> Result<bool> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(|e| Error::netlink("cannot list addresses", e))?
        {
            let found = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(x)) | AddressAttribute::Address(IpAddr::V4(x)) if *x == ip)
            });
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds `ip/prefix_len` to link `index`.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot add address {ip}/{prefix_len}"), e))
    }

    /// Removes `ip/prefix_len` from link `index`; absent is fine.
    pub async fn del_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(ip, prefix_len)
            .build();
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(Error::netlink(
                format!("cannot remove address {ip}/{prefix_len}"),
                e,
            )),
        }
    }

    /// Adds a scope-link host route to `dst` through link `index` with
    /// preferred source `src`.
    pub async fn add_host_route(&self, dst: Ipv4Addr, index: u32, src: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .pref_source(src)
            .build();
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot add route to {dst}/32"), e))
    }

    /// Adds the default route via `gateway` through link `index`.
    pub async fn add_default_route(&self, gateway: Ipv4Addr, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot add default route via {gateway}"), e))
    }

    /// The MAC of link `index`, if it has one.
    pub async fn link_mac(&self, index: u32) -> Result<Option<Mac>> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(|e| Error::netlink(format!("cannot read link #{index}"), e))?
            .ok_or_else(|| Error::NotFound(format!("link #{index} does not exist")))?;
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac),
            _ => None,
        }))
    }

    /// The IPv4 default routes of the main table: (gateway, output ifindex).
    pub async fn default_routes(&self) -> Result<Vec<(Option<Ipv4Addr>, Option<u32>)>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = routes
            .try_next()
            .await
            .map_err(|e| Error::netlink("cannot list routes", e))?
        {
            if msg.header.destination_prefix_length != 0
                || msg.header.table != RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let gateway = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let oif = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            out.push((gateway, oif));
        }
        Ok(out)
    }

    /// The MTU of link `index`.
    pub async fn link_mtu(&self, index: u32) -> Result<u32> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(|e| Error::netlink(format!("cannot read link #{index}"), e))?
            .ok_or_else(|| Error::NotFound(format!("link #{index} does not exist")))?;
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .ok_or_else(|| Error::Invalid(format!("link #{index} reports no MTU")))
    }

    /// Creates a collect-metadata (`external`) vxlan device `name` on UDP
    /// port `port`, without learning, with zero UDP checksums and outer
    /// source ports in `sports`, MAC `mac` and MTU `mtu`, and sets it up:
    /// `ip link add NAME address MAC mtu MTU type vxlan external dstport
    /// PORT srcport MIN MAX nolearning noudpcsum`.
    pub async fn add_vxlan_external(
        &self,
        name: &str,
        port: u16,
        sports: (u16, u16),
        mac: Mac,
        mtu: u32,
    ) -> Result<()> {
        let msg = LinkMessageBuilder::<LinkVxlan>::new(name)
            .collect_metadata(true)
            .port(port)
            .port_range(sports.0, sports.1)
            .learning(false)
            .udp_csum(false)
            .address(mac.octets().to_vec())
            .mtu(mtu)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("cannot create vxlan device {name}"), e))
    }
}
