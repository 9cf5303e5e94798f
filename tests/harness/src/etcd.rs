//! A real etcd (Debian's `etcd-server` 3.4) for cluster tests and the
//! cluster bench: every member in a namespace of its own plugged into the
//! run's underlay switch, listening on its underlay address and on that
//! namespace's loopback, data in a run-unique directory under /tmp. Members
//! are SIGKILLed and the data removed on drop, also when a test fails.
//!
//! Writes the tests make "as another node would" go through `etcdctl` in a
//! member's namespace; the bench's bulk writes through etcd's JSON gateway
//! (`/v3/kv/txn`) over one connection from a thread in that namespace.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{netns::NetNs, proc, run::state_dir_path, underlay::Underlay};

/// Client port of every member (each has its own address).
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long a member (or a cluster) may take to be healthy.
const READY: Duration = Duration::from_secs(20);
const ETCDCTL: Duration = Duration::from_secs(20);

/// One member.
pub struct Member {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    child: Option<Child>,
}

/// An etcd cluster of one or more members.
pub struct Etcd {
    pub members: Vec<Member>,
    data: PathBuf,
    token: String,
    /// Flags every member gets beside the harness's own.
    extra: Vec<String>,
}

impl Etcd {
    /// One member on `underlay`.
    pub fn single(underlay: &Underlay) -> Result<Self> {
        Self::new(underlay, 1)
    }

    /// `count` members on `underlay`, started and healthy.
    pub fn new(underlay: &Underlay, count: usize) -> Result<Self> {
        Self::with_flags(underlay, count, &[])
    }

    /// [`Etcd::new`], each member also given `extra` flags (the bench's
    /// larger transactions and quota).
    pub fn with_flags(underlay: &Underlay, count: usize, extra: &[&str]) -> Result<Self> {
        let data = state_dir_path();
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating etcd's data dir {}", data.display()))?;
        let mut members = Vec::new();
        for i in 0..count {
            let ns = NetNs::new("wtetcd")?;
            let ip = underlay.plug(&ns)?;
            members.push(Member {
                name: format!("m{}", i + 1),
                ns,
                ip,
                child: None,
            });
        }
        let token = data
            .file_name()
            .map_or("weft".into(), |n| n.to_string_lossy().into_owned());
        let mut etcd = Self {
            members,
            data,
            token,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 0..count {
            etcd.spawn(i)?;
        }
        etcd.wait_healthy(None)?;
        Ok(etcd)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let dir = self.data.join(&m.name);
        let log = std::fs::File::create(self.data.join(format!("{}.log", m.name)))?;
        let client = format!(
            "http://{}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}",
            m.ip
        );
        let advertise = format!("http://{}:{CLIENT_PORT}", m.ip);
        let peer = format!("http://{}:{PEER_PORT}", m.ip);
        let dir_text = dir.to_string_lossy().into_owned();
        let mut args = vec![
            "etcd",
            "--name",
            &m.name,
            "--data-dir",
            &dir_text,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &advertise,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial,
            "--initial-cluster-token",
            &self.token,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--listen-metrics-urls",
            "",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let child =
            m.ns.command(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd (is etcd-server installed? `cargo xtask setup`)")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Every member's client URL, comma-separated (what `--etcd` takes).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}:{CLIENT_PORT}", m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of a running member.
    fn live(&self) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.child.is_some())
            .context("no etcd member runs")
    }

    /// SIGKILLs member `i` (its data stays).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.members[i].child.is_none() {
            self.spawn(i)?;
        }
        self.wait_healthy(Some(i))
    }

    /// Waits until member `only` (or every running one) reports healthy.
    pub fn wait_healthy(&self, only: Option<usize>) -> Result<()> {
        let end = Instant::now() + READY;
        for (i, m) in self.members.iter().enumerate() {
            if only.is_some_and(|o| o != i) || m.child.is_none() {
                continue;
            }
            loop {
                let out = m.ns.exec_unchecked(&[
                    "env",
                    "ETCDCTL_API=3",
                    "etcdctl",
                    "--endpoints",
                    &format!("http://127.0.0.1:{CLIENT_PORT}"),
                    "--command-timeout=1s",
                    "endpoint",
                    "health",
                ])?;
                if out.status.success() {
                    break;
                }
                if Instant::now() > end {
                    bail!(
                        "etcd member {} not healthy within {} s: {}{}",
                        m.name,
                        READY.as_secs(),
                        String::from_utf8_lossy(&out.stderr),
                        self.log(i)
                    );
                }
                proc::sleep(Duration::from_millis(100))?;
            }
        }
        Ok(())
    }

    /// Member `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.data.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default()
    }

    /// `etcdctl ARGS` against a running member (all endpoints given, so a
    /// dead one is skipped), failing unless it succeeds; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        self.ctl_stdin(args, None)
    }

    /// [`Etcd::ctl`] with `input` on stdin.
    pub fn ctl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let i = self.live()?;
        let endpoints = self.urls();
        let mut argv = vec![
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            &endpoints,
            "--command-timeout=5s",
        ];
        argv.extend(args);
        let mut cmd = self.members[i].ns.command(&argv);
        let out = match input {
            None => proc::output(&mut cmd, ETCDCTL)?,
            Some(text) => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().context("starting etcdctl")?;
                child
                    .stdin
                    .take()
                    .context("etcdctl stdin")?
                    .write_all(text.as_bytes())?;
                child.wait_with_output()?
            }
        };
        if !out.status.success() {
            bail!(
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        self.ctl(&["put", key, value]).map(drop)
    }

    /// Puts `key` on a new lease of `ttl` seconds; returns the lease id.
    pub fn put_leased(&self, key: &str, value: &str, ttl: u32) -> Result<String> {
        let out = self.ctl(&["lease", "grant", &ttl.to_string()])?;
        // "lease 694d7a... granted with TTL(5s)"
        let id = out
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("etcdctl lease grant printed {out}"))?
            .to_owned();
        self.ctl(&["put", "--lease", &id, key, value])?;
        Ok(id)
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        self.ctl(&["del", key]).map(drop)
    }

    /// Keys and values under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let out = self.ctl(&["get", "--prefix", prefix])?;
        let lines: Vec<&str> = out.lines().collect();
        Ok(lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect())
    }

    /// The store's revision now.
    pub fn revision(&self) -> Result<i64> {
        let out = self.ctl(&[
            "get",
            "--prefix",
            "/",
            "--keys-only",
            "-w",
            "json",
            "--limit",
            "1",
        ])?;
        let v: Value = serde_json::from_str(&out)?;
        v["header"]["revision"]
            .as_i64()
            .with_context(|| format!("no revision in {out}"))
    }

    /// Compacts the history up to `revision`.
    pub fn compact(&self, revision: i64) -> Result<()> {
        self.ctl(&["compaction", "--physical", &revision.to_string()])
            .map(drop)
    }

    /// Runs many puts over etcd's JSON gateway, 128 per transaction (etcd's
    /// default limit), from a thread in a member's namespace; `lease` 0
    /// for none. Returns how long it took.
    pub fn put_many(&self, kvs: Vec<(String, String)>, lease: i64) -> Result<Duration> {
        self.put_batched(kvs, lease, 128)
    }

    /// [`Etcd::put_many`] with `per_txn` puts per transaction (at most the
    /// members' `--max-txn-ops`).
    pub fn put_batched(
        &self,
        kvs: Vec<(String, String)>,
        lease: i64,
        per_txn: usize,
    ) -> Result<Duration> {
        let i = self.live()?;
        let handle = self.members[i].ns.run_in(move || {
            let started = Instant::now();
            let mut conn = Gateway::connect()?;
            for chunk in kvs.chunks(per_txn.max(1)) {
                let ops: Vec<Value> = chunk
                    .iter()
                    .map(|(k, v)| {
                        json!({"requestPut": {"key": b64(k.as_bytes()), "value": b64(v.as_bytes()), "lease": lease.to_string()}})
                    })
                    .collect();
                conn.post("/v3/kv/txn", &json!({ "success": ops }))?;
            }
            Ok(started.elapsed())
        })?;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("put_many thread panicked"))?
    }

    /// Deletes `keys` over the gateway, 128 per transaction.
    pub fn delete_many(&self, keys: Vec<String>) -> Result<Duration> {
        let i = self.live()?;
        let handle = self.members[i].ns.run_in(move || {
            let started = Instant::now();
            let mut conn = Gateway::connect()?;
            for chunk in keys.chunks(128) {
                let ops: Vec<Value> = chunk
                    .iter()
                    .map(|k| json!({"requestDeleteRange": {"key": b64(k.as_bytes())}}))
                    .collect();
                conn.post("/v3/kv/txn", &json!({ "success": ops }))?;
            }
            Ok(started.elapsed())
        })?;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("delete_many thread panicked"))?
    }

    /// Grants a lease of `ttl` seconds over the gateway; returns its id.
    pub fn grant(&self, ttl: u32) -> Result<i64> {
        let i = self.live()?;
        let handle = self.members[i].ns.run_in(move || {
            let v =
                Gateway::connect()?.post("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
            v["ID"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("lease grant answered {v}"))
        })?;
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("grant thread panicked"))?
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One keep-alive HTTP/1.1 connection to the local member's gateway.
struct Gateway {
    reader: BufReader<TcpStream>,
}

impl Gateway {
    fn connect() -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", CLIENT_PORT))
            .context("connecting to etcd's gateway")?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut text = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
            }
        } else {
            let mut buf = vec![0; length.unwrap_or(0)];
            self.reader.read_exact(&mut buf)?;
            text = buf;
        }
        if !status.contains(" 200 ") {
            bail!(
                "etcd gateway {path}: {} {}",
                status.trim(),
                String::from_utf8_lossy(&text)
            );
        }
        Ok(serde_json::from_slice(&text)?)
    }
}

/// Standard base64 with padding (what etcd's gateway takes for bytes).
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::b64(i.as_bytes()), o);
        }
    }
}
