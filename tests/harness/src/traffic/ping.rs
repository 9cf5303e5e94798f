//! ICMP echo with `ping`: how many of a count got an answer.

use anyhow::{Result, bail};

use crate::netns::NetNs;

impl NetNs {
    /// How many of `count` pings to `ip` got an answer (0.2 s apart, 1 s
    /// each to answer).
    pub fn ping(&self, ip: &str, count: u32) -> Result<u32> {
        let out = self.exec_unchecked(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            ip,
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        match received(&text) {
            Some(n) => Ok(n),
            None => bail!(
                "could not read ping's summary in {}: {text}{}",
                self.name(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// The `N received` of ping's summary line.
fn received(summary: &str) -> Option<u32> {
    summary
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary() {
        let out = "--- 10.1.0.3 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n";
        assert_eq!(received(out), Some(2));
        assert_eq!(received("ping: connect: Network is unreachable"), None);
    }
}
