//! Packet events the datapath emits through a ring buffer, for
//! `weft monitor`: one per dropped packet, with its named reason, the eBPF
//! source location that dropped it, and the packet's first bytes.

// Both maps here are pinned: their layout versions are in
// `crate::maps::LAYOUT_VERSIONS`, bumped with any change of meaning of
// [`PacketEvent`] or [`TraceConfig`].

/// The ring buffer of [`PacketEvent`]s.
pub const MAP_EVENTS: &str = "WEFT_EVENTS";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// How many bytes of each packet an event carries.
pub const EVENT_SNAP_LEN: usize = 128;

/// `PacketEvent::kind`: the packet was dropped; `code` is a drop reason.
pub const EVENT_DROP: u8 = 1;
/// `PacketEvent::kind`: the packet was forwarded; `code` is a forward kind.
pub const EVENT_TRACE: u8 = 2;
/// `PacketEvent::kind`: a new connection to a service picked a backend
/// (emitted while tracing is on, like [`EVENT_TRACE`]); `code` is the
/// service id, `data` the packet already DNATed to the backend. Readers
/// that predate it skip it as an unknown kind.
pub const EVENT_SERVICE_PICK: u8 = 3;

/// Trace settings (an array of one [`TraceConfig`]), written by
/// `weft monitor --type trace` while it runs.
pub const MAP_TRACE: &str = "WEFT_TRACE";

/// Which forwarded packets to emit as trace events. Tracing is on only
/// until `until_ns` (`bpf_ktime_get_ns` time), which a running monitor keeps
/// pushing forward: a monitor that dies stops tracing within seconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TraceConfig {
    /// 0: tracing off.
    pub until_ns: u64,
    /// Emit one in this many matching packets (0 or 1: all).
    pub sample_every: u32,
    /// Only packets arriving on this ifindex (0: any).
    pub ifindex: u32,
}

const _: () = assert!(size_of::<TraceConfig>() == 16);

/// `PacketEvent::program` values.
pub const PROGRAM_FROM_CONTAINER: u8 = 1;
pub const PROGRAM_FROM_UPLINK: u8 = 2;
pub const PROGRAM_NAT_EGRESS: u8 = 3;
pub const PROGRAM_OVERLAY_ENCAP: u8 = 10;
pub const PROGRAM_FROM_VXLAN: u8 = 11;
pub const PROGRAM_SERVICE: u8 = 12;

/// One event. `#[repr(C)]`, explicit padding, read byte for byte by
/// userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PacketEvent {
    /// `bpf_ktime_get_ns` when it happened.
    pub ktime_ns: u64,
    /// Drop reason code (see `reason::Drop`).
    pub code: u32,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// The packet's length on the wire.
    pub len: u32,
    /// How many bytes of it `data` holds.
    pub captured: u16,
    /// Source line in the eBPF code that decided (0: unknown).
    pub line: u16,
    /// Source file in the eBPF code (an index into [`SOURCE_FILES`]).
    pub file: u8,
    pub kind: u8,
    pub program: u8,
    pub _pad: [u8; 5],
    pub data: [u8; EVENT_SNAP_LEN],
}

const _: () = assert!(size_of::<PacketEvent>() == 32 + EVENT_SNAP_LEN);

/// The eBPF source files a drop can come from; an event stores the index.
/// Index 0 means unknown. New files go at the end, so an index keeps
/// naming the same file.
pub const SOURCE_FILES: [&str; 26] = [
    "?",
    "ebpf/src/programs/from_container.rs",
    "ebpf/src/helpers/arp.rs",
    "ebpf/src/helpers/forward.rs",
    "ebpf/src/helpers/nat.rs",
    "ebpf/src/helpers/conntrack.rs",
    "ebpf/src/programs/from_uplink.rs",
    "ebpf/src/helpers/verdict.rs",
    "ebpf/src/helpers/access.rs",
    "ebpf/src/helpers/parse.rs",
    "ebpf/src/programs/nat_egress.rs",
    "ebpf/src/programs/overlay_encap.rs",
    "ebpf/src/helpers/encap.rs",
    "ebpf/src/helpers/decap.rs",
    "ebpf/src/programs/from_vxlan.rs",
    "ebpf/src/programs/xdp_underlay.rs",
    "ebpf/src/helpers/icmp_error.rs",
    "ebpf/src/helpers/mtu.rs",
    "ebpf/src/helpers/deliver.rs",
    "ebpf/src/helpers/ipv4.rs",
    "ebpf/src/programs/service.rs",
    "ebpf/src/helpers/service.rs",
    "ebpf/src/helpers/unreachable.rs",
    "ebpf/src/helpers/tcp_reset.rs",
    "ebpf/src/helpers/dns.rs",
    "ebpf/src/helpers/service_reply.rs",
];

/// The [`SOURCE_FILES`] index of `path` (as `file!()` spells it), at
/// compile time; 0 if it is not listed.
pub const fn source_file_id(path: &str) -> u8 {
    let path = path.as_bytes();
    let mut i = 1;
    while i < SOURCE_FILES.len() {
        if ends_with(path, SOURCE_FILES[i].as_bytes()) {
            return i as u8;
        }
        i += 1;
    }
    0
}

const fn ends_with(s: &[u8], suffix: &[u8]) -> bool {
    // `file!()` may be "src/arp.rs" (relative to the crate) or the full
    // workspace path: compare the file name after the last '/'.
    let s_name = after_last_slash(s);
    let f_name = after_last_slash(suffix);
    if s_name.1 - s_name.0 != f_name.1 - f_name.0 {
        return false;
    }
    let mut i = 0;
    while i < s_name.1 - s_name.0 {
        if s[s_name.0 + i] != suffix[f_name.0 + i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn after_last_slash(s: &[u8]) -> (usize, usize) {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'/' {
            start = i + 1;
        }
        i += 1;
    }
    (start, s.len())
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, Pod (no padding, every bit pattern valid).
unsafe impl aya::Pod for PacketEvent {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, Pod (no padding, every bit pattern valid).
unsafe impl aya::Pod for TraceConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_match_by_file_name() {
        assert_eq!(
            SOURCE_FILES[source_file_id("src/forward.rs") as usize],
            "ebpf/src/helpers/forward.rs"
        );
        assert_eq!(source_file_id("ebpf/src/arp.rs"), 2);
        assert_eq!(source_file_id("src/unknown.rs"), 0);
    }
}
