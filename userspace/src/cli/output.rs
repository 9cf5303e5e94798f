//! How answers are shown: aligned tables for people, JSON (keys are a
//! contract other tools rely on) for programs.

use std::fmt::Write as _;

use serde::Serialize;
use weft_api::{
    records::Endpoint,
    views::{
        ClusterStatusView, ConnView, CounterView, GcResult, NatView, NetworkDetail, NetworkView,
        NodeEntry, NodeView, Ordered, PublishView, StatsView, StatusView, Tuple,
    },
};

/// `-o table|json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// A command result that can be printed both ways.
pub trait Render: Serialize {
    /// The human-readable form, ending in a newline.
    fn table(&self) -> String;
}

/// `value` in `format`, ending in a newline.
pub fn render<T: Render>(format: Format, value: &T) -> String {
    match format {
        Format::Table => value.table(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize output: {e}\"}}"));
            s.push('\n');
            s
        }
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn network_row(n: &NetworkView) -> Vec<String> {
    vec![
        n.name.clone(),
        n.id.to_string(),
        n.subnet.clone(),
        n.vni.to_string(),
        n.gateway.to_string(),
        n.gateway_mac.to_string(),
        if n.flood { "yes" } else { "no" }.into(),
        if n.masquerade { "yes" } else { "no" }.into(),
        if n.connected.is_empty() {
            "-".into()
        } else {
            n.connected.join(",")
        },
        n.endpoints.to_string(),
    ]
}

const NETWORK_HEADERS: [&str; 10] = [
    "NAME",
    "ID",
    "SUBNET",
    "VNI",
    "GATEWAY",
    "GATEWAY MAC",
    "FLOOD",
    "MASQUERADE",
    "CONNECTED",
    "ENDPOINTS",
];

impl Render for Vec<NetworkView> {
    fn table(&self) -> String {
        let rows: Vec<_> = self.iter().map(network_row).collect();
        table(&NETWORK_HEADERS, &rows)
    }
}

impl Render for NetworkDetail {
    fn table(&self) -> String {
        let mut out = table(&NETWORK_HEADERS, &[network_row(&self.network)]);
        out.push('\n');
        if self.containers.is_empty() {
            out.push_str("no endpoints\n");
        } else {
            out.push_str(&self.containers.table());
        }
        out
    }
}

/// `endpoint add`: one line saying what was made.
impl Render for Endpoint {
    fn table(&self) -> String {
        format!(
            "endpoint {}: {} on {}, mac {}, host veth {}\n",
            self.name, self.ip, self.network, self.mac, self.host_ifname
        )
    }
}

/// A runtime's container id as `podman ps` shows it: 64 hex digits cut to
/// 12, anything else (containerd's `NAMESPACE-ID`) whole.
fn short_id(id: &str) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_owned()
    } else {
        id.to_owned()
    }
}

impl Render for Vec<Endpoint> {
    fn table(&self) -> String {
        let rows: Vec<_> = self
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.network.clone(),
                    e.netns.clone(),
                    e.ip.to_string(),
                    e.mac.to_string(),
                    e.ifname.clone(),
                    e.host_ifname.clone(),
                    e.host_ifindex.to_string(),
                    e.mtu.to_string(),
                    e.container_id.as_deref().map_or("-".to_owned(), short_id),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "NETWORK",
                "NETNS",
                "IP",
                "MAC",
                "IFNAME",
                "HOST IFNAME",
                "HOST IFINDEX",
                "MTU",
                "CONTAINER",
            ],
            &rows,
        )
    }
}

impl Render for StatsView {
    fn table(&self) -> String {
        let counters = |title: &str, entries: &Ordered<CounterView>| {
            let rows: Vec<_> = entries
                .0
                .iter()
                .map(|(k, c)| vec![k.clone(), c.packets.to_string(), c.bytes.to_string()])
                .collect();
            table(&[title, "PACKETS", "BYTES"], &rows)
        };
        let mut out = counters("DROPPED", &self.drops);
        out.push('\n');
        out.push_str(&counters("FORWARDED", &self.forwards));
        out.push('\n');
        let rows: Vec<_> = self
            .endpoints
            .0
            .iter()
            .map(|(k, s)| {
                vec![
                    k.clone(),
                    s.tx_packets.to_string(),
                    s.tx_bytes.to_string(),
                    s.rx_packets.to_string(),
                    s.rx_bytes.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ENDPOINT",
                "TX PACKETS",
                "TX BYTES",
                "RX PACKETS",
                "RX BYTES",
            ],
            &rows,
        ));
        out
    }
}

impl Render for NodeView {
    fn table(&self) -> String {
        match (&self.uplink, self.ip, self.port_min, self.port_max) {
            (Some(uplink), Some(ip), Some(min), Some(max)) => {
                let mut out = format!(
                    "uplink: {uplink} (ifindex {})\nmasquerade address: {ip}\nNAT ports: \
                     {min}-{max} ({} ports)\nuplink program attached: {}\nIPv4 forwarding: {}\n",
                    self.uplink_ifindex.unwrap_or(0),
                    self.port_range_size.unwrap_or(0),
                    if self.attached { "yes" } else { "no" },
                    if self.forwarding { "on" } else { "off" },
                );
                match &self.overlay {
                    Some(o) => out.push_str(&format!(
                        "overlay: {} encapsulation, underlay {uplink} {ip}, VTEP MAC {}, inner \
                         MTU {}, XDP early drop {}\n",
                        o.encap.name(),
                        o.vtep_mac,
                        o.mtu,
                        if o.xdp { "on" } else { "off" }
                    )),
                    None => out.push_str("overlay: off\n"),
                }
                for s in &self.subnets {
                    out.push_str(&format!("pod subnet: {} {}\n", s.network, s.cidr));
                }
                out
            }
            _ => "no node uplink set: masquerade is off (`weft node set --uplink IF --ip IP`)\n"
                .to_owned(),
        }
    }
}

impl Render for NodeEntry {
    fn table(&self) -> String {
        vec![self.clone()].table()
    }
}

impl Render for Vec<NodeEntry> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|n| {
                let subnets: Vec<String> = n
                    .subnets
                    .iter()
                    .map(|s| format!("{}={} (vni {})", s.network, s.cidr, s.vni))
                    .collect();
                vec![
                    n.name.clone(),
                    n.underlay_ip.to_string(),
                    n.vtep_mac.to_string(),
                    if subnets.is_empty() {
                        "-".into()
                    } else {
                        subnets.join(", ")
                    },
                    n.source.name().to_owned(),
                ]
            })
            .collect();
        table(
            &["NAME", "UNDERLAY", "VTEP MAC", "POD SUBNETS", "SOURCE"],
            &rows,
        )
    }
}

impl Render for PublishView {
    fn table(&self) -> String {
        format!(
            "published {}:{}/{} -> {} {} ({}:{})\n",
            self.host_ip.map_or("*".to_owned(), |ip| ip.to_string()),
            self.host_port,
            self.proto,
            if self.service { "service" } else { "endpoint" },
            self.endpoint,
            self.container_ip,
            self.container_port
        )
    }
}

impl Render for Vec<PublishView> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|p| {
                vec![
                    p.endpoint.clone(),
                    p.proto.to_string(),
                    format!(
                        "{}:{}",
                        p.host_ip.map_or("*".to_owned(), |ip| ip.to_string()),
                        p.host_port
                    ),
                    format!("{}:{}", p.container_ip, p.container_port),
                ]
            })
            .collect();
        table(&["ENDPOINT", "PROTO", "HOST", "CONTAINER"], &rows)
    }
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
        table(
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
        out.push_str(&table(&["PROTO", "PORTS USED", "CONNECTIONS"], &rows));
        out.push_str(&format!(
            "conntrack: {} of {} connections\n",
            self.conntrack.connections, self.conntrack.limit
        ));
        out
    }
}

impl Render for StatusView {
    fn table(&self) -> String {
        let mut out = format!("agent: {}", self.agent);
        if let Some(pid) = self.pid {
            out.push_str(&format!(" (pid {pid})"));
        }
        out.push('\n');
        out.push_str(&format!(
            "networks: {}\nendpoints: {}\nroutes: {}\nflows: {}\nprogram id: {}\n\
             kernel matches state: {}\n",
            self.networks,
            self.endpoints,
            self.routes,
            self.flows,
            self.program_id
                .map_or("not loaded".into(), |id| id.to_string()),
            if self.kernel_matches_state {
                "yes".to_owned()
            } else {
                format!("no: {}", self.drift)
            }
        ));
        out
    }
}

fn ports_text(ports: &[weft_api::records::ServicePort]) -> String {
    ports
        .iter()
        .map(|p| format!("{}/{}->{}", p.port, p.proto, p.target))
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_text(s: &weft_api::views::ServiceView) -> String {
    let mut parts: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(s.backends.iter().cloned());
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

impl Render for weft_api::views::ServiceView {
    fn table(&self) -> String {
        format!(
            "service {} (id {}): {} ports {} backends {} active, {} terminating, {} unhealthy\n",
            self.name,
            self.id,
            self.vip,
            ports_text(&self.ports),
            self.active,
            self.terminating,
            self.unhealthy
        )
    }
}

impl Render for Vec<weft_api::views::ServiceView> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.vip.to_string(),
                    ports_text(&s.ports),
                    selector_text(s),
                    format!("{}/{}", s.active, s.active + s.terminating + s.unhealthy),
                    s.affinity_timeout
                        .map_or("-".into(), |t| format!("client-ip:{t}")),
                ]
            })
            .collect();
        table(
            &["NAME", "VIP", "PORTS", "BACKENDS BY", "ACTIVE", "AFFINITY"],
            &rows,
        )
    }
}

impl Render for weft_api::views::ServiceDetail {
    fn table(&self) -> String {
        let mut out = self.service.table();
        let rows: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|b| {
                vec![
                    b.endpoint.clone(),
                    b.ip.to_string(),
                    b.state.clone(),
                    format!("{}/{}", b.slots, self.maglev_size),
                    b.connections.to_string(),
                    b.new_connections.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "BACKEND",
                "IP",
                "STATE",
                "MAGLEV SLOTS",
                "CONNECTIONS",
                "NEW",
            ],
            &rows,
        ));
        if self.refused > 0 {
            out.push_str(&format!("refused (no backend): {}\n", self.refused));
        }
        out
    }
}

impl Render for weft_api::records::ServiceConfig {
    fn table(&self) -> String {
        format!(
            "service range {}, Maglev table size {}\n",
            self.range, self.maglev_size
        )
    }
}

impl Render for ClusterStatusView {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster: schema {} prefix {} node {} ({})",
            self.schema,
            self.prefix,
            self.node,
            if self.connected {
                "connected"
            } else {
                "NOT connected"
            }
        );
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "  etcd {}: {}",
                e.url,
                match &e.error {
                    None => "healthy".to_owned(),
                    Some(err) => format!("unhealthy ({err})"),
                }
            );
        }
        let _ = writeln!(
            out,
            "lease: {} (TTL {} s, {} left)",
            self.lease_id.map_or("-".into(), |id| format!("{id:x}")),
            self.lease_ttl_seconds,
            self.lease_ttl_left_seconds
                .map_or("?".into(), |s| format!("{s} s"))
        );
        for s in &self.subnets {
            let _ = writeln!(out, "  holds {}={}", s.network, s.cidr);
        }
        let _ = writeln!(
            out,
            "remote nodes: {}; revision {}; skipped entries {}",
            self.remote_nodes, self.revision, self.skipped
        );
        if let Some(e) = &self.last_error {
            let _ = writeln!(out, "last error: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
