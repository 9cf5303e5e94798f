//! The agent's DNS server: on each network's gateway address, port 53,
//! UDP and TCP, it answers weft's zone from the committed model
//! ([`zone`]) and forwards everything else to the node's upstream
//! resolvers. Wire format by hickory-proto; the serving loop is ours (a
//! query is one datagram or one length-prefixed TCP message, and each
//! answer is a pure function of the model).
//!
//! Sockets are bound with `IP_FREEBIND`: a gateway address is on the
//! node's `lo` only while its network has endpoints, and the server must
//! be there before the first container asks. Malformed queries are
//! answered FORMERR when they carry a header, else ignored; the server
//! keeps serving either way.

pub mod zone;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, PTR, SOA, SRV},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::watch,
    task::JoinHandle,
};
use weft_api::records::Model;

use self::zone::{Answer, Data, Kind, TTL, ZONE};

/// The DNS port.
pub const PORT: u16 = 53;
/// How long a forwarded query waits for an upstream.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Environment variable naming the upstream resolvers (`IP[:PORT],...`);
/// default: the node's /etc/resolv.conf nameservers.
pub const UPSTREAMS_ENV: &str = "WEFT_DNS_UPSTREAMS";

/// The upstream resolvers: [`UPSTREAMS_ENV`], else the `nameserver` lines
/// of `/etc/resolv.conf` (in a named node namespace, `ip netns exec` has
/// bind-mounted /etc/netns/NAME/resolv.conf over it). Gateway addresses
/// of weft networks are left out, so a node never forwards to itself.
pub fn upstreams(model: &Model) -> Vec<SocketAddr> {
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .ok()
            .or_else(|| s.parse::<Ipv4Addr>().ok().map(|ip| (ip, PORT).into()))
    };
    let list: Vec<SocketAddr> = match std::env::var(UPSTREAMS_ENV) {
        Ok(v) => v.split(',').filter_map(|s| parse(s.trim())).collect(),
        Err(_) => std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|s| parse(s.trim()))
            .collect(),
    };
    list.into_iter()
        .filter(|a| !model.networks.iter().any(|n| a.ip() == n.gateway))
        .collect()
}

/// Serves DNS on every network's gateway for as long as the agent runs,
/// following the committed model.
pub async fn run(mut model: watch::Receiver<Arc<Model>>) {
    let mut bound: HashMap<Ipv4Addr, [JoinHandle<()>; 2]> = HashMap::new();
    loop {
        let current = model.borrow_and_update().clone();
        let ups = Arc::new(upstreams(&current));
        let want: Vec<Ipv4Addr> = current.networks.iter().map(|n| n.gateway).collect();
        bound.retain(|gw, tasks| {
            let keep = want.contains(gw);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        for gw in want {
            if bound.contains_key(&gw) {
                continue;
            }
            match listen(gw, model.clone(), ups.clone()) {
                Ok(tasks) => {
                    log::info!("dns: serving on {gw}:{PORT}");
                    bound.insert(gw, tasks);
                }
                Err(e) => log::warn!("dns: cannot serve on {gw}:{PORT}: {e}"),
            }
        }
        if model.changed().await.is_err() {
            break;
        }
    }
    for tasks in bound.values() {
        tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Binds `gw`:53 for UDP and TCP and starts serving both.
fn listen(
    gw: Ipv4Addr,
    model: watch::Receiver<Arc<Model>>,
    ups: Arc<Vec<SocketAddr>>,
) -> std::io::Result<[JoinHandle<()>; 2]> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: SocketAddr = SocketAddrV4::new(gw, PORT).into();
    let make = |ty: Type, proto: Protocol| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
        s.set_freebind_v4(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    let udp = UdpSocket::from_std(make(Type::DGRAM, Protocol::UDP)?.into())?;
    let tcp = make(Type::STREAM, Protocol::TCP)?;
    tcp.listen(128)?;
    let tcp = TcpListener::from_std(tcp.into())?;
    let (m1, u1) = (model.clone(), ups.clone());
    Ok([
        tokio::spawn(serve_udp(udp, m1, u1)),
        tokio::spawn(serve_tcp(tcp, model, ups)),
    ])
}

async fn serve_udp(
    socket: UdpSocket,
    model: watch::Receiver<Arc<Model>>,
    ups: Arc<Vec<SocketAddr>>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        let model = model.borrow().clone();
        let (socket, ups) = (socket.clone(), ups.clone());
        tokio::spawn(async move {
            if let Some(answer) = respond(&model, &query, peer, &ups).await {
                let _ = socket.send_to(&answer, peer).await;
            }
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    model: watch::Receiver<Arc<Model>>,
    ups: Arc<Vec<SocketAddr>>,
) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let (model, ups) = (model.clone(), ups.clone());
        tokio::spawn(async move {
            loop {
                let Ok(len) = stream.read_u16().await else {
                    return;
                };
                let mut query = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let m = model.borrow().clone();
                let Some(answer) = respond(&m, &query, peer, &ups).await else {
                    return;
                };
                let Ok(len) = u16::try_from(answer.len()) else {
                    return;
                };
                if stream.write_u16(len).await.is_err() || stream.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

/// The answer to `query` from `peer`: weft's zone answered, others
/// forwarded; `None`: nothing to send (no header to answer).
pub async fn respond(
    model: &Model,
    query: &[u8],
    peer: SocketAddr,
    ups: &[SocketAddr],
) -> Option<Vec<u8>> {
    let client = match peer.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    match local(model, query, client) {
        Local::Answer(bytes) => Some(bytes),
        Local::Ignore => None,
        Local::Forward(id) => match forward(query, ups).await {
            Some(bytes) => Some(bytes),
            None => error(id, ResponseCode::ServFail),
        },
    }
}

enum Local {
    Answer(Vec<u8>),
    Forward(u16),
    Ignore,
}

/// An error answer with only a header.
fn error(id: u16, code: ResponseCode) -> Option<Vec<u8>> {
    Message::error_msg(id, OpCode::Query, code).to_vec().ok()
}

fn local(model: &Model, query: &[u8], client: Ipv4Addr) -> Local {
    let Ok(req) = Message::from_vec(query) else {
        return match query.get(0..2) {
            Some(id) if query.len() >= 12 => {
                error(u16::from_be_bytes([id[0], id[1]]), ResponseCode::FormErr)
                    .map_or(Local::Ignore, Local::Answer)
            }
            _ => Local::Ignore,
        };
    };
    let id = req.metadata.id;
    if req.metadata.message_type != MessageType::Query {
        return Local::Ignore;
    }
    if req.metadata.op_code != OpCode::Query {
        return error(id, ResponseCode::NotImp).map_or(Local::Ignore, Local::Answer);
    }
    let Some(q) = req.queries.first() else {
        return error(id, ResponseCode::FormErr).map_or(Local::Ignore, Local::Answer);
    };
    let ascii = q.name().to_ascii().to_ascii_lowercase();
    let name = ascii.trim_end_matches('.');
    let kind = match q.query_type() {
        RecordType::A => Kind::A,
        RecordType::SRV => Kind::Srv,
        RecordType::PTR => Kind::Ptr,
        _ => Kind::Other,
    };
    let found = zone::answer(model, name, kind, client);
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    match found {
        Answer::Forward => return Local::Forward(id),
        Answer::Found(data) => {
            for d in data {
                if let Some(r) = record(q.name(), d) {
                    resp.add_answer(r);
                }
            }
            if resp.answers.is_empty() {
                resp.add_authority(soa());
            }
        }
        Answer::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(soa());
        }
    }
    resp.to_vec().map_or(Local::Ignore, Local::Answer)
}

fn in_zone(label: &str) -> Option<Name> {
    Name::from_ascii(format!("{label}.{ZONE}.")).ok()
}

fn record(name: &Name, data: Data) -> Option<Record> {
    let rdata = match data {
        Data::A(ip) => RData::A(A(ip)),
        Data::Srv(port, target) => RData::SRV(SRV::new(0, 0, port, in_zone(&target)?)),
        Data::Ptr(target) => RData::PTR(PTR(in_zone(&target)?)),
    };
    Some(Record::from_rdata(name.clone(), TTL, rdata))
}

/// The zone's SOA, in the authority section of NXDOMAIN and NODATA
/// answers (its minimum is the negative-caching TTL, RFC 2308).
fn soa() -> Record {
    let apex = Name::from_ascii(format!("{ZONE}.")).unwrap_or_default();
    let ns = in_zone("ns").unwrap_or_default();
    let mail = in_zone("hostmaster").unwrap_or_default();
    Record::from_rdata(
        apex,
        TTL,
        RData::SOA(SOA::new(ns, mail, 1, 3600, 600, 86_400, TTL)),
    )
}

/// Relays `query` to the first upstream that answers in time.
async fn forward(query: &[u8], ups: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in ups {
        let Ok(socket) = UdpSocket::bind("0.0.0.0:0").await else {
            continue;
        };
        if socket.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buf)).await
            && from == *up
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_queries_get_formerr_or_nothing() {
        let m = Model::default();
        let peer: SocketAddr = "10.1.0.2:5000".parse().unwrap();
        assert_eq!(respond(&m, &[1, 2, 3], peer, &[]).await, None);
        let mut junk = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[200, b'x']);
        let answer = Message::from_vec(&respond(&m, &junk, peer, &[]).await.unwrap()).unwrap();
        assert_eq!(answer.metadata.id, 0xabcd);
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }
}
