//! How command results are shown: aligned tables for people, JSON (keys are
//! a contract other tools rely on) for programs.

use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};
use weft_common::maps::{Counter, EndpointStats};

use crate::{
    mac::Mac,
    state::{Endpoint, Network, State},
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

/// A network as `network ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkView {
    pub name: String,
    pub id: u32,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub gateway_mac: Mac,
    pub flood: bool,
    /// Traffic to non-weft destinations is masqueraded out of the node's
    /// uplink (when one is set: `weft node set`).
    #[serde(default)]
    pub masquerade: bool,
    pub connected: Vec<String>,
    pub endpoints: usize,
    /// VXLAN network identifier on the overlay.
    #[serde(default)]
    pub vni: u32,
}

impl NetworkView {
    pub fn new(net: &Network, state: &State) -> Self {
        let connected: BTreeSet<String> = net.connected.iter().cloned().collect();
        Self {
            name: net.name.clone(),
            id: net.id,
            subnet: net.subnet.to_string(),
            gateway: net.gateway,
            gateway_mac: net.gateway_mac(),
            flood: net.flood,
            masquerade: net.masquerade,
            connected: connected.into_iter().collect(),
            endpoints: state.endpoints_of(&net.name).count(),
            vni: net.overlay_vni(),
        }
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.id.to_string(),
            self.subnet.clone(),
            self.vni.to_string(),
            self.gateway.to_string(),
            self.gateway_mac.to_string(),
            if self.flood { "yes" } else { "no" }.into(),
            if self.masquerade { "yes" } else { "no" }.into(),
            if self.connected.is_empty() {
                "-".into()
            } else {
                self.connected.join(",")
            },
            self.endpoints.to_string(),
        ]
    }
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
        let rows: Vec<_> = self.iter().map(NetworkView::row).collect();
        table(&NETWORK_HEADERS, &rows)
    }
}

/// `network inspect`: the network and its endpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: NetworkView,
    pub containers: Vec<Endpoint>,
}

impl Render for NetworkDetail {
    fn table(&self) -> String {
        let mut out = table(&NETWORK_HEADERS, &[self.network.row()]);
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
            ],
            &rows,
        )
    }
}

/// Entries serialized as a JSON object in their given order.
#[derive(Clone, Debug, Default)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Reads a JSON object back keeping its order (the CLI renders what the
/// agent sent exactly as it would have rendered it itself).
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for CounterView {
    fn from(c: Counter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct EndpointStatsView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl From<EndpointStats> for EndpointStatsView {
    fn from(s: EndpointStats) -> Self {
        Self {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
        }
    }
}

/// `weft stats`: counters summed over CPUs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsView {
    pub drops: Ordered<CounterView>,
    pub forwards: Ordered<CounterView>,
    pub endpoints: Ordered<EndpointStatsView>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
