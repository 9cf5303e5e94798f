//! `weft ct ls|gc` and `weft nat ls`: masquerade's connections, their
//! collection, and NAT port use. Read from the pinned `WEFT_CT`; nothing
//! is loaded.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use weft_common::maps::{
    CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_TCP_CLOSED, CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT,
    CT_TCP_SYN_SENT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    conntrack::{self, GcResult},
    error::Result,
    output::Render,
    paths::Paths,
    state,
};

/// One end of a tuple.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    /// ICMP: the echo identifier.
    pub sport: u16,
    pub dst: Ipv4Addr,
    /// ICMP: 0.
    pub dport: u16,
}

/// One masqueraded connection, as `ct ls -o json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnView {
    /// `tcp`, `udp`, `icmp`.
    pub proto: String,
    /// As the container sent it.
    pub original: Tuple,
    /// As it left the uplink (node address, NAT port).
    pub translated: Tuple,
    /// TCP: `syn_sent`, `established`, `fin_wait`, `closed`; others
    /// `active`. `expired` once both entries are past their timeout.
    pub state: String,
    /// `snat` (masqueraded), `dnat` (to a published port) or `hairpin`
    /// (a container to a published port through the node's address).
    pub kind: String,
    /// Seconds since the connection was made (for connections migrated
    /// from a table without creation times: since their last packet then).
    pub age_seconds: u64,
    /// Seconds since the connection's last packet, either way.
    pub idle_seconds: u64,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        other => other.to_string(),
    }
}

fn tuple(t: (u32, [u8; 2], u32, [u8; 2])) -> Tuple {
    Tuple {
        src: Ipv4Addr::from(t.0.to_ne_bytes()),
        sport: u16::from_be_bytes(t.1),
        dst: Ipv4Addr::from(t.2.to_ne_bytes()),
        dport: u16::from_be_bytes(t.3),
    }
}

/// Every connection in the table, each once.
pub fn list(paths: &Paths) -> Result<Vec<ConnView>> {
    let entries = conntrack::snapshot(paths)?;
    let now = conntrack::now_ns();
    Ok(conntrack::connections(&entries, now)
        .into_iter()
        .map(|c| ConnView {
            proto: proto_name(c.proto),
            original: tuple(c.original),
            translated: tuple(c.translated),
            state: if c.expired {
                "expired".into()
            } else if c.proto == IPPROTO_TCP {
                match c.tcp_state {
                    CT_TCP_SYN_SENT => "syn_sent",
                    CT_TCP_ESTABLISHED => "established",
                    CT_TCP_FIN_WAIT => "fin_wait",
                    CT_TCP_CLOSED => "closed",
                    _ => "none",
                }
                .into()
            } else {
                "active".into()
            },
            kind: if c.flags & CT_FLAG_HAIRPIN != 0 {
                "hairpin"
            } else if c.flags & CT_FLAG_DNAT != 0 {
                "dnat"
            } else {
                "snat"
            }
            .into(),
            age_seconds: now.saturating_sub(c.created_ns) / 1_000_000_000,
            idle_seconds: now.saturating_sub(c.last_seen_ns) / 1_000_000_000,
            packets_orig: c.packets_orig,
            bytes_orig: c.bytes_orig,
            packets_reply: c.packets_reply,
            bytes_reply: c.bytes_reply,
        })
        .collect())
}

impl Render for Vec<ConnView> {
    fn table(&self) -> String {
        let t = |t: &Tuple| format!("{}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport);
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|c| {
                vec![
                    c.proto.clone(),
                    c.kind.clone(),
                    t(&c.original),
                    t(&c.translated),
                    c.state.clone(),
                    c.age_seconds.to_string(),
                    c.idle_seconds.to_string(),
                    format!("{}/{}", c.packets_orig, c.bytes_orig),
                    format!("{}/{}", c.packets_reply, c.bytes_reply),
                ]
            })
            .collect();
        crate::output::table(
            &[
                "PROTO",
                "KIND",
                "ORIGINAL",
                "TRANSLATED",
                "STATE",
                "AGE S",
                "IDLE S",
                "OUT PKTS/BYTES",
                "IN PKTS/BYTES",
            ],
            &rows,
        )
    }
}

/// `ct gc`.
impl Render for GcResult {
    fn table(&self) -> String {
        format!(
            "conntrack gc: removed {} expired entr{}, {} left\n",
            self.removed,
            if self.removed == 1 { "y" } else { "ies" },
            self.remaining
        )
    }
}

/// Collects expired pairs; `older_than_s` also collects pairs idle longer
/// than that many seconds (tests, or to free ports at once).
pub fn gc(paths: &Paths, older_than_s: Option<u64>) -> Result<GcResult> {
    conntrack::gc(paths, older_than_s.map(|s| s.saturating_mul(1_000_000_000)))
}

/// NAT port use of one protocol.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortUse {
    pub proto: String,
    /// Distinct NAT ports held (a port is reused towards different
    /// destinations, so connections can outnumber it).
    pub used: usize,
    pub connections: usize,
    pub range_size: u32,
}

/// `nat ls`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NatView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    pub range_size: u32,
    pub protocols: Vec<PortUse>,
    /// Connections in the conntrack table (all kinds, published ports
    /// included) against the limit past which new ones are refused.
    #[serde(default)]
    pub conntrack: ConntrackFill,
}

/// How full the conntrack table is, in connections.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ConntrackFill {
    pub connections: u64,
    pub limit: u64,
}

/// Port use by protocol, for the node's address and range.
pub fn nat(paths: &Paths) -> Result<NatView> {
    let st = state::read(paths)?;
    let Some(node) = st.node else {
        return Ok(NatView {
            ip: None,
            ports: None,
            range_size: 0,
            protocols: Vec::new(),
            conntrack: ConntrackFill::default(),
        });
    };
    let size = u32::from(node.port_max - node.port_min) + 1;
    let entries = conntrack::snapshot(paths)?;
    let used = conntrack::ports_used(
        &entries,
        crate::datapath::ip_be(node.ip),
        (node.port_min, node.port_max),
    );
    let protocols = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]
        .into_iter()
        .map(|p| {
            let (used, connections) = used.get(&p).copied().unwrap_or((0, 0));
            PortUse {
                proto: proto_name(p),
                used,
                connections,
                range_size: size,
            }
        })
        .collect();
    Ok(NatView {
        ip: Some(node.ip),
        ports: Some(format!("{}-{}", node.port_min, node.port_max)),
        range_size: size,
        protocols,
        conntrack: ConntrackFill {
            connections: conntrack::connection_count(&entries),
            limit: crate::ct_budget::effective_limit(node.conntrack_max),
        },
    })
}

impl Render for NatView {
    fn table(&self) -> String {
        let Some(ip) = self.ip else {
            return "no node uplink set: nothing is masqueraded\n".into();
        };
        let rows: Vec<Vec<String>> = self
            .protocols
            .iter()
            .map(|p| {
                vec![
                    p.proto.clone(),
                    format!("{}/{}", p.used, p.range_size),
                    p.connections.to_string(),
                ]
            })
            .collect();
        let mut out = format!(
            "masquerade address {ip}, ports {}\n",
            self.ports.as_deref().unwrap_or("-")
        );
        out.push_str(&crate::output::table(
            &["PROTO", "PORTS USED", "CONNECTIONS"],
            &rows,
        ));
        out.push_str(&format!(
            "conntrack: {} of {} connections\n",
            self.conntrack.connections, self.conntrack.limit
        ));
        out
    }
}
