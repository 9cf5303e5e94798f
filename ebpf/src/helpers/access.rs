//! The only place that touches raw packet and context memory.
//!
//! Every packet access is checked against `data_end` here, so the rest of the
//! datapath is safe code working with `Option`s.

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_F_DONT_FRAGMENT, BPF_F_ZERO_CSUM_TX, bpf_fib_lookup,
        bpf_redir_neigh, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, bpf_tunnel_key,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup_helper, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer, bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_get_tunnel_key,
        bpf_skb_set_tunnel_key,
    },
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};

/// A context whose packet is read directly: TC's skb or XDP's frame.
pub trait Packet {
    /// Address of the first byte of the packet's linear data.
    fn data(&self) -> usize;
    /// Address one past the last byte of the packet's linear data.
    fn data_end(&self) -> usize;
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

/// Whether a UDP socket in the namespace of the packet's device would
/// receive a datagram from `src`:`sport` to `dst`:`dport` (all network
/// order), as the stack's own lookup decides.
#[inline(always)]
pub fn udp_socket_for(
    ctx: &TcContext,
    src_be: u32,
    dst_be: u32,
    sport: [u8; 2],
    dport: [u8; 2],
) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: src_be,
                daddr: dst_be,
                sport: u16::from_ne_bytes(sport),
                dport: u16::from_ne_bytes(dport),
            },
        },
    };
    let size = size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    // SAFETY: the tuple lives on this stack frame for the call; a socket
    // the lookup returns holds a reference the verifier requires released
    // before the program ends, which happens at once.
    unsafe {
        let sk = bpf_sk_lookup_udp(
            ctx.skb.skb.cast(),
            &mut tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
    }
    true
}

/// Reads a `T` at `offset` bytes into the packet, if the packet is that long.
#[inline(always)]
pub fn load<T: Copy>(ctx: &impl Packet, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: [start + offset, start + offset + size_of::<T>()) lies within
    // [data, data_end), checked above; read_unaligned tolerates any alignment.
    Some(unsafe { ((start + offset) as *const T).read_unaligned() })
}

/// Writes `value` at `offset` bytes into the packet; `None` if it does not fit.
#[inline(always)]
pub fn store<T: Copy>(ctx: &TcContext, offset: usize, value: T) -> Option<()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range is within [data, data_end) (checked above), and TC
    // programs may write directly to packet data.
    unsafe { ((start + offset) as *mut T).write_unaligned(value) };
    Some(())
}

/// Makes the packet's first `len` bytes (all of it, if shorter) linear, so
/// [`load`] and [`store`] reach them: headers may sit in paged data (e.g.
/// GRO'd skbs). Pulls nothing when they already are: a pull makes the skb
/// writable, which copies its head if it is a clone (TCP keeps one of each
/// segment it sends). A failed pull leaves the packet as it was; the loads
/// then see it as cut short, and the caller drops it with its reason.
#[inline(always)]
pub fn pull(ctx: &TcContext, len: usize) {
    let len = len as u32;
    let want = if ctx.len() < len { ctx.len() } else { len };
    if ctx.data_end() - ctx.data() < want as usize {
        let _ = ctx.pull_data(want);
    }
}

/// The ifindex of the device the packet is on (the host-side veth at ingress).
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; reading
    // `ifindex` is a plain context load the verifier rewrites.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Writes the skb's control block (`__sk_buff::cb`, 20 bytes of scratch
/// that stays with the skb for the whole TC run, tail calls included).
#[inline(always)]
pub fn set_cb(ctx: &TcContext, words: [u32; 5]) {
    // SAFETY: `skb` is the context pointer the kernel passed in; TC
    // programs may write `cb[0..5]` (plain context stores the verifier
    // rewrites into the skb's qdisc control block).
    unsafe { (*ctx.skb.skb).cb = words };
}

/// Reads the skb's control block, as [`set_cb`] (or nobody: zeros) left it.
#[inline(always)]
pub fn cb(ctx: &TcContext) -> [u32; 5] {
    // SAFETY: as in `set_cb`: plain context loads.
    unsafe { (*ctx.skb.skb).cb }
}

/// Delivers the packet straight into the namespace of `ifindex`'s veth peer,
/// skipping the host-side backlog (`bpf_redirect_peer`, TC ingress only).
#[inline(always)]
pub fn redirect_peer(ifindex: u32) -> i64 {
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect_peer(ifindex, 0) }
}

/// Transmits the packet out of `ifindex` (egress), e.g. back to its sender.
#[inline(always)]
pub fn redirect_egress(ifindex: u32) -> i64 {
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect(ifindex, 0) }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

const AF_INET: u8 = 2;

/// Where the node's FIB sends an IPv4 packet: egress ifindex and next hop.
pub struct FibHop {
    pub ifindex: u32,
    pub next_hop_be: u32,
}

/// Looks up `src_be -> dst_be` in the FIB of the skb's network namespace as
/// a packet forwarded from `in_ifindex` (so forwarding must be enabled on
/// it). A hop is returned for a route the kernel would forward on, also
/// when the next hop's neighbour entry is not resolved yet
/// (`bpf_redirect_neigh` resolves it); local, unreachable, blackhole and
/// prohibit routes give `None`.
#[inline(always)]
pub fn fib_lookup(ctx: &TcContext, in_ifindex: u32, src_be: u32, dst_be: u32) -> Option<FibHop> {
    // SAFETY: `bpf_fib_lookup` is plain data (integers and unions of
    // integers), for which all-zero bytes are a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_3.ipv4_src = src_be;
    params.__bindgen_anon_4.ipv4_dst = dst_be;
    // SAFETY: `skb` is the context pointer; `params` is a valid, writable
    // struct of the size passed.
    let rc = unsafe {
        fib_lookup_helper(
            ctx.skb.skb.cast(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    const SUCCESS: i64 = aya_ebpf::bindings::BPF_FIB_LKUP_RET_SUCCESS as i64;
    const NO_NEIGH: i64 = aya_ebpf::bindings::BPF_FIB_LKUP_RET_NO_NEIGH as i64;
    if rc != SUCCESS && rc != NO_NEIGH {
        return None;
    }
    Some(FibHop {
        ifindex: params.ifindex,
        // SAFETY: the kernel wrote the IPv4 next hop into this union member
        // (the family is AF_INET).
        next_hop_be: unsafe { params.__bindgen_anon_4.ipv4_dst },
    })
}

/// Transmits the packet out of `hop.ifindex` to `hop.next_hop_be`; the
/// kernel resolves the neighbour and writes the Ethernet header.
#[inline(always)]
pub fn redirect_neigh(hop: &FibHop) -> i64 {
    let mut nh = bpf_redir_neigh {
        nh_family: u32::from(AF_INET),
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
            ipv4_nh: hop.next_hop_be,
        },
    };
    // SAFETY: `nh` is a valid struct of the size passed.
    unsafe { bpf_redirect_neigh(hop.ifindex, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0) }
}

/// Attaches tunnel metadata for the collect-metadata vxlan device: outer
/// `local_be -> remote_be`, `vni`, TTL `ttl`, DF set, UDP checksum zero
/// (`BPF_F_ZERO_CSUM_TX`, like the kernel's default `udpcsum off`).
#[inline(always)]
pub fn set_tunnel_key(ctx: &TcContext, local_be: u32, remote_be: u32, vni: u32, ttl: u8) -> i64 {
    // SAFETY: `bpf_tunnel_key` is plain data (integers and unions of
    // integers), for which all-zero bytes are a valid value.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    // The helper takes the addresses in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(remote_be);
    key.__bindgen_anon_3.local_ipv4 = u32::from_be(local_be);
    key.tunnel_ttl = ttl;
    let flags = u64::from(BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT);
    // SAFETY: `skb` is the context pointer; `key` is a valid struct of the
    // size passed.
    unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb.cast(),
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            flags,
        )
    }
}

/// The VNI of the tunnel metadata a collect-metadata vxlan device attached
/// to the packet it decapsulated; `None` without metadata.
#[inline(always)]
pub fn tunnel_vni(ctx: &TcContext) -> Option<u32> {
    // SAFETY: as in `set_tunnel_key`.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: `skb` is the context pointer; `key` is a valid, writable
    // struct of the size passed.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb.cast(),
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    (rc == 0).then_some(key.tunnel_id)
}

/// Copies the packet's first bytes (up to `dst.len()`, 128) into `dst`,
/// from linear or paged data; returns how many were copied.
#[inline(always)]
pub fn copy_head(ctx: &TcContext, dst: &mut [u8; 128]) -> u32 {
    let len = ctx.len();
    // The helper takes a size in 1..=128: the verifier must see both bounds.
    let want = if len > 128 { 128 } else { len };
    if want == 0 {
        return 0;
    }
    // SAFETY: `dst` is a writable 128-byte buffer and `want` is in 1..=128;
    // the helper copies at most `want` bytes from the skb.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            0,
            dst.as_mut_ptr().cast(),
            want & 0xff,
        )
    };
    if rc == 0 { want } else { 0 }
}

/// The size of each segment's payload if the packet is a GSO super-packet
/// (e.g. TSO from a container's TCP socket), 0 otherwise.
#[inline(always)]
pub fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; reading
    // `gso_size` is a plain context load the verifier rewrites (kernel 5.7).
    unsafe { (*ctx.skb.skb).gso_size }
}

/// Longest packet excerpt [`load_excerpt`] and [`store_excerpt`] move.
pub const EXCERPT_MAX: usize = 68;

/// Copies `len` bytes at `offset` (from linear or paged data) into the
/// start of `dst`; `None` if `len` is 0, over [`EXCERPT_MAX`] or past the
/// packet's end.
#[inline(always)]
pub fn load_excerpt(
    ctx: &TcContext,
    offset: usize,
    dst: &mut [u8; EXCERPT_MAX],
    len: usize,
) -> Option<()> {
    // The helper takes a size in 1..=68: the verifier must see both bounds.
    if len == 0 || len > EXCERPT_MAX {
        return None;
    }
    // SAFETY: `dst` is a writable buffer of EXCERPT_MAX bytes and `len` is
    // in 1..=EXCERPT_MAX; the helper checks the packet side itself.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset as u32,
            dst.as_mut_ptr().cast(),
            len as u32,
        )
    };
    (rc == 0).then_some(())
}

/// Writes the first `len` bytes of `src` at `offset` into the packet;
/// `None` if `len` is 0, over [`EXCERPT_MAX`] or past the packet's end.
/// Packet pointers are invalid afterwards (`load`/`store` re-read them).
#[inline(always)]
pub fn store_excerpt(
    ctx: &TcContext,
    offset: usize,
    src: &[u8; EXCERPT_MAX],
    len: usize,
) -> Option<()> {
    if len == 0 || len > EXCERPT_MAX {
        return None;
    }
    // SAFETY: `src` is a readable buffer of EXCERPT_MAX bytes and `len` is
    // in 1..=EXCERPT_MAX; the helper checks the packet side itself.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_store_bytes(
            ctx.skb.skb.cast(),
            offset as u32,
            src.as_ptr().cast(),
            len as u32,
            0,
        )
    };
    (rc == 0).then_some(())
}

/// Trims (or grows) the packet to `len` bytes; meant for answering with a
/// control message built in place. Drops GSO state and linearizes.
/// Packet pointers are invalid afterwards.
#[inline(always)]
pub fn change_tail(ctx: &TcContext, len: u32) -> Option<()> {
    // SAFETY: `skb` is the context pointer; the helper takes plain integers.
    let rc = unsafe { aya_ebpf::helpers::bpf_skb_change_tail(ctx.skb.skb.cast(), len, 0) };
    (rc == 0).then_some(())
}

/// The `u64` at `index` of CPU `cpu`'s copy of the per-CPU array `map`;
/// `None` past the last CPU.
#[inline(always)]
pub fn percpu_u64(map: &PerCpuArray<u64>, index: u32, cpu: u32) -> Option<u64> {
    // SAFETY: a `PerCpuArray` is `repr(transparent)` over its map
    // definition, whose address the loader relocates to the map (as
    // aya-ebpf's own lookups pass it); the helper returns a pointer to
    // that CPU's value, valid for the program run, or null.
    let value = unsafe {
        aya_ebpf::helpers::bpf_map_lookup_percpu_elem(
            core::ptr::from_ref(map).cast_mut().cast(),
            core::ptr::from_ref(&index).cast(),
            cpu,
        )
    };
    // SAFETY: non-null: a valid, aligned `u64` of the map.
    (!value.is_null()).then(|| unsafe { *value.cast::<u64>() })
}
