//! The connection to etcd (the `etcd-client` crate, gRPC): every call
//! bounded in time, so an unreachable or quorum-less etcd is an error that
//! says so within seconds, never a hang. The crate does not resume
//! watches; the agent's cluster sync does (`agent::cluster`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};

use crate::error::{Error, Result};

/// Bound on one request: a write without quorum times out inside etcd
/// after about 5 s with 3 members; we give up earlier and say why.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before trying a refused request again.
const RETRY: Duration = Duration::from_millis(50);
/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An etcd connection.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: Vec<String>,
    /// Requests sent (for the bench's requests per node per minute).
    requests: Arc<AtomicU64>,
}

/// Values and their revisions under a range, as of one store revision.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub revision: i64,
    pub kvs: BTreeMap<String, Vec<u8>>,
}

/// How a create-only claim went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Won,
    /// The key exists: its value and mod revision.
    Held {
        value: Vec<u8>,
        mod_revision: i64,
    },
}

fn unavailable(endpoints: &[String], what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "the cluster store (etcd at {}) did not answer {what}: {e}",
        endpoints.join(",")
    ))
}

/// Whether `e` says the request reached no member able to serve it.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Checks `--etcd`'s URLs before anything connects, so a typo stops the
/// agent at start instead of looking like an outage.
pub fn check_urls(endpoints: &[String]) -> Result<()> {
    if endpoints.is_empty() {
        return Err(Error::Invalid(
            "--etcd needs at least one URL, e.g. http://127.0.0.1:2379".into(),
        ));
    }
    for e in endpoints {
        let ok = e
            .strip_prefix("http://")
            .and_then(|hp| hp.rsplit_once(':'))
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(Error::Invalid(format!(
                "invalid etcd URL '{e}': expected http://HOST:PORT, e.g. http://127.0.0.1:2379"
            )));
        }
    }
    Ok(())
}

impl Etcd {
    /// Connects to `endpoints` (URLs such as `http://10.0.0.1:2379`).
    pub async fn connect(endpoints: &[String], requests: Arc<AtomicU64>) -> Result<Self> {
        check_urls(endpoints)?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT + REQUEST_TIMEOUT,
            Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| unavailable(endpoints, "a connection", "timed out"))?
        .map_err(|e| unavailable(endpoints, "a connection", e))?;
        Ok(Self {
            client,
            endpoints: endpoints.to_vec(),
            requests,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs one request, bounded by [`REQUEST_TIMEOUT`]. An attempt the
    /// store refused as unavailable (the channel picked a member that is
    /// down, or the member has no leader) is tried again until the bound:
    /// the request never reached a member that could act on it, and the
    /// channel moves on to another member.
    async fn bounded<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout_at(deadline, attempt(self.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if retryable(&e) && tokio::time::Instant::now() + RETRY < deadline => {
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(e)) => return Err(unavailable(&self.endpoints, what, e)),
                Err(_) => {
                    return Err(unavailable(
                        &self.endpoints,
                        what,
                        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
                    ));
                }
            }
        }
    }

    /// Everything in `[start, end)`.
    pub async fn list(&self, start: &str, end: &str) -> Result<Listing> {
        let options = GetOptions::new().with_range(end);
        let resp = self
            .bounded("a listing", |mut c| {
                let options = options.clone();
                async move { c.get(start, Some(options)).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok(Listing { revision, kvs })
    }

    /// Keys under `prefix` (values not fetched).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let resp = self
            .bounded("a key listing", |mut c| async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let resp = self
            .bounded("a read", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// A lease of `ttl` seconds.
    pub async fn grant(&self, ttl: i64) -> Result<i64> {
        let resp = self
            .bounded("a lease grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// Seconds lease `id` has left; `None` if it expired or never was.
    pub async fn ttl_left(&self, id: i64) -> Result<Option<i64>> {
        let resp = self
            .bounded("a lease query", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        Ok((resp.ttl() > 0).then_some(resp.ttl()))
    }

    /// Renews lease `id` once; `None` if it is gone.
    pub async fn renew(&self, id: i64) -> Result<Option<i64>> {
        let ttl = self
            .bounded("a lease renewal", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                let resp = stream.message().await?;
                Ok(resp.map_or(0, |r| r.ttl()))
            })
            .await?;
        Ok((ttl > 0).then_some(ttl))
    }

    /// `put` on `lease` (0: none).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<()> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.bounded("a write", |mut c| {
            let (value, options) = (value.clone(), options.clone());
            async move { c.put(key, value, options).await }
        })
        .await?;
        Ok(())
    }

    /// Puts `value` unless `key` exists (a create-only transaction).
    pub async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<Claim> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, options)])
            .or_else([TxnOp::get(key, None)]);
        self.claim_txn(txn).await
    }

    /// Puts `value` if `key` is still at `mod_revision` (taking over one's
    /// own lease key from an earlier etcd lease).
    pub async fn replace(
        &self,
        key: &str,
        mod_revision: i64,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Claim> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(key, value, options)])
            .or_else([TxnOp::get(key, None)]);
        self.claim_txn(txn).await
    }

    async fn claim_txn(&self, txn: Txn) -> Result<Claim> {
        let resp = self
            .bounded("a claim", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Claim::Won);
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(Claim::Held {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                });
            }
        }
        // Gone between the compare and the read: try again.
        Ok(Claim::Held {
            value: Vec::new(),
            mod_revision: 0,
        })
    }

    /// The key's value and mod revision.
    pub async fn get_with_revision(&self, key: &str) -> Result<Option<(Vec<u8>, i64, i64)>> {
        let resp = self
            .bounded("a read", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision(), kv.lease())))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.bounded("a delete", |mut c| async move {
            c.delete(key, None::<DeleteOptions>).await
        })
        .await?;
        Ok(())
    }

    /// A watch of `[start, end)` from `revision`, with previous values.
    pub async fn watch(&self, start: &str, end: &str, revision: i64) -> Result<WatchStream> {
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(revision)
            .with_prev_key();
        self.bounded("a watch", |mut c| {
            let options = options.clone();
            async move { c.watch(start, Some(options)).await }
        })
        .await
    }

    /// Whether `url` alone answers a status request now.
    pub async fn health(url: &str) -> std::result::Result<(), String> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        let attempt = async {
            let mut c = Client::connect([url], Some(options)).await?;
            c.status().await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2 s".into()),
        }
    }
}
