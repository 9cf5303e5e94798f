//! The agent's Prometheus `/metrics`, scraped from inside the node
//! namespace: the agent listens on the node's loopback, never the
//! machine's.

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use anyhow::{Context, Result, bail};

use crate::node::Node;

/// Where the agent serves metrics unless configured otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9965";

/// Scrapes the agent's /metrics at its default address.
pub fn scrape(node: &Node) -> Result<String> {
    scrape_at(node, DEFAULT_ADDR)
}

/// Scrapes /metrics at `addr` inside the node namespace: the whole HTTP
/// answer, headers included.
pub fn scrape_at(node: &Node, addr: &'static str) -> Result<String> {
    node.ns
        .run_in(move || {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: weft\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("scrape thread panicked"))?
}

/// The value of the sample `name{labels}` in OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .with_context(|| format!("no sample {series} in:\n{text}"))
}

/// `promtool check metrics` (Debian's prometheus package, installed by
/// `cargo xtask setup`) must find nothing to complain about in a scrape
/// (headers are skipped).
pub fn promtool_accepts(response: &str) -> Result<()> {
    let body = response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running promtool (cargo xtask setup installs Debian's prometheus)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(body.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_labelled_sample() {
        let text = "# TYPE weft_nat_ports_used gauge\n\
                    weft_nat_ports_used{proto=\"tcp\"} 2\n\
                    weft_nat_ports_used{proto=\"udp\"} 1\n";
        assert_eq!(
            sample(text, r#"weft_nat_ports_used{proto="udp"}"#).unwrap(),
            1.0
        );
        assert!(sample(text, "weft_conntrack_entries").is_err());
    }
}
