//! Named verdicts: why a packet was dropped, or how it was forwarded.
//!
//! Codes index the per-CPU counter arrays, so they are small and stable;
//! never renumber one, only add.

/// Why the datapath dropped a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Shorter than an Ethernet header.
    TruncatedEthernet = 1,
    /// ARP packet shorter than an Ethernet/IPv4 ARP body.
    TruncatedArp = 2,
    /// ARP for another hardware or protocol type, or an unknown opcode.
    UnsupportedArp = 3,
    /// ARP request for an address no endpoint or gateway of the network owns.
    ArpUnknownTarget = 4,
    /// Gratuitous ARP (target is the sender); consumed, nobody needs it.
    ArpAnnouncement = 5,
    /// IPv4 packet shorter than its fixed header.
    TruncatedIpv4 = 6,
    /// IPv4 version field is not 4, or IHL is below 5 words or past the packet.
    BadIpv4Header = 7,
    /// IPv4 total length shorter than its header or longer than the frame.
    BadIpv4Length = 8,
    /// Routed packet whose TTL would reach zero.
    TtlExceeded = 9,
    /// Destination is in a network not connected to the source's.
    NetworkIsolated = 10,
    /// Packet arrived on an interface weft does not know as an endpoint.
    UnknownEndpoint = 11,
    /// Source MAC or IPv4 address is not the sending endpoint's.
    SpoofedSource = 12,
    /// Unicast to a MAC that is not in the network's forwarding table.
    UnknownDestinationMac = 13,
    /// Destination address in a weft network, but no endpoint has it.
    NoSuchEndpoint = 14,
    /// Broadcast or multicast on a network that does not flood.
    BroadcastNotFlooded = 15,
    /// IPv6: weft networks are IPv4-only for now.
    Ipv6Unsupported = 16,
    /// Neither IPv4, ARP nor IPv6.
    UnsupportedEthertype = 17,
    /// A redirect or clone helper failed.
    RedirectFailed = 18,
    /// Masquerade: no NAT port of the node's range is free for this
    /// destination (after `NAT_PORT_PROBES` tries).
    NatPortsExhausted = 19,
    /// Masquerade: the connection-tracking map refused a new entry.
    ConntrackFull = 20,
    /// TCP, UDP or ICMP header cut short behind a valid IPv4 header, on a
    /// path that needs the ports.
    TruncatedL4 = 21,
    /// Masquerade: a non-first IPv4 fragment carries no ports to translate.
    Ipv4Fragment = 22,
    /// An ICMP error about a translated connection whose embedded IPv4 or
    /// L4 header is cut short or malformed.
    BadIcmpEmbedded = 23,
    /// A published port whose container is gone (`weft publish ls`).
    PublishedEndpointMissing = 24,
    /// VXLAN with a VNI no network of this node has.
    VxlanUnknownVni = 30,
    /// VXLAN whose inner destination is an endpoint of another network than
    /// the VNI's: a VNI only delivers into its own network.
    VxlanWrongNetwork = 31,
    /// VXLAN whose outer destination is not this node's underlay address.
    VxlanNotForNode = 32,
    /// Outer IPv4/UDP/VXLAN or inner Ethernet/IPv4 headers cut short.
    VxlanTruncated = 33,
    /// Outer UDP length disagrees with the outer IPv4 packet.
    VxlanBadUdpLength = 34,
    /// VXLAN flags without the I bit (VNI valid).
    VxlanBadFlags = 35,
    /// Destination in a weft network, outside this node's pod CIDRs, and
    /// no node announced a pod CIDR containing it.
    OverlayNoRoute = 36,
    /// A helper that adds or removes the outer headers failed.
    EncapFailed = 37,
    /// The node's FIB has no route to the remote node's underlay address.
    UnderlayUnreachable = 38,
    /// The inner frame of a VXLAN packet is not Ethernet + IPv4.
    VxlanBadInner = 39,
    /// Bigger than the overlay's inner MTU and without Don't Fragment: the
    /// overlay never fragments (RFC 7348 section 4.3). With DF set the
    /// sender gets an ICMP fragmentation-needed instead (`frag_needed_sent`).
    OverlayMtuExceeded = 40,
    /// To a service VIP and port whose service has no backend: the client
    /// gets a TCP RST or an ICMP port unreachable (`service_rejected`).
    ServiceNoBackend = 41,
    /// To a service VIP on a port the service does not have.
    ServiceUnknownPort = 42,
    /// A UDP query to a gateway's DNS port while no server is bound there
    /// (the agent restarting): dropped, not refused, so resolvers retry.
    DnsServerDown = 43,
    /// A new service connection whose backend-side tuple a live
    /// connection holds (the same client port to another service with
    /// the same backend and port); the live one is kept.
    ServiceTupleTaken = 44,
}

impl Drop {
    pub const ALL: [Drop; 39] = [
        Drop::TruncatedEthernet,
        Drop::TruncatedArp,
        Drop::UnsupportedArp,
        Drop::ArpUnknownTarget,
        Drop::ArpAnnouncement,
        Drop::TruncatedIpv4,
        Drop::BadIpv4Header,
        Drop::BadIpv4Length,
        Drop::TtlExceeded,
        Drop::NetworkIsolated,
        Drop::UnknownEndpoint,
        Drop::SpoofedSource,
        Drop::UnknownDestinationMac,
        Drop::NoSuchEndpoint,
        Drop::BroadcastNotFlooded,
        Drop::Ipv6Unsupported,
        Drop::UnsupportedEthertype,
        Drop::RedirectFailed,
        Drop::NatPortsExhausted,
        Drop::ConntrackFull,
        Drop::TruncatedL4,
        Drop::Ipv4Fragment,
        Drop::BadIcmpEmbedded,
        Drop::PublishedEndpointMissing,
        Drop::VxlanUnknownVni,
        Drop::VxlanWrongNetwork,
        Drop::VxlanNotForNode,
        Drop::VxlanTruncated,
        Drop::VxlanBadUdpLength,
        Drop::VxlanBadFlags,
        Drop::OverlayNoRoute,
        Drop::EncapFailed,
        Drop::UnderlayUnreachable,
        Drop::VxlanBadInner,
        Drop::OverlayMtuExceeded,
        Drop::ServiceNoBackend,
        Drop::ServiceUnknownPort,
        Drop::DnsServerDown,
        Drop::ServiceTupleTaken,
    ];

    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The reason for a code read from a map or an event, if it is known.
    pub fn from_code(code: u32) -> Option<Drop> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// Stable snake_case name for CLIs, metrics labels and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Drop::TruncatedEthernet => "truncated_ethernet",
            Drop::TruncatedArp => "truncated_arp",
            Drop::UnsupportedArp => "unsupported_arp",
            Drop::ArpUnknownTarget => "arp_unknown_target",
            Drop::ArpAnnouncement => "arp_announcement",
            Drop::TruncatedIpv4 => "truncated_ipv4",
            Drop::BadIpv4Header => "bad_ipv4_header",
            Drop::BadIpv4Length => "bad_ipv4_length",
            Drop::TtlExceeded => "ttl_exceeded",
            Drop::NetworkIsolated => "network_isolated",
            Drop::UnknownEndpoint => "unknown_endpoint",
            Drop::SpoofedSource => "spoofed_source",
            Drop::UnknownDestinationMac => "unknown_destination_mac",
            Drop::NoSuchEndpoint => "no_such_endpoint",
            Drop::BroadcastNotFlooded => "broadcast_not_flooded",
            Drop::Ipv6Unsupported => "ipv6_unsupported",
            Drop::UnsupportedEthertype => "unsupported_ethertype",
            Drop::RedirectFailed => "redirect_failed",
            Drop::NatPortsExhausted => "nat_ports_exhausted",
            Drop::ConntrackFull => "conntrack_full",
            Drop::TruncatedL4 => "truncated_l4",
            Drop::Ipv4Fragment => "ipv4_fragment",
            Drop::BadIcmpEmbedded => "bad_icmp_embedded",
            Drop::PublishedEndpointMissing => "published_endpoint_missing",
            Drop::VxlanUnknownVni => "vxlan_unknown_vni",
            Drop::VxlanWrongNetwork => "vxlan_wrong_network",
            Drop::VxlanNotForNode => "vxlan_not_for_node",
            Drop::VxlanTruncated => "vxlan_truncated",
            Drop::VxlanBadUdpLength => "vxlan_bad_udp_length",
            Drop::VxlanBadFlags => "vxlan_bad_flags",
            Drop::OverlayNoRoute => "overlay_no_route",
            Drop::EncapFailed => "encap_failed",
            Drop::UnderlayUnreachable => "underlay_unreachable",
            Drop::VxlanBadInner => "vxlan_bad_inner",
            Drop::OverlayMtuExceeded => "overlay_mtu_exceeded",
            Drop::ServiceNoBackend => "service_no_backend",
            Drop::ServiceUnknownPort => "service_unknown_port",
            Drop::DnsServerDown => "dns_server_down",
            Drop::ServiceTupleTaken => "service_tuple_taken",
        }
    }
}

/// How the datapath forwarded a packet it did not drop.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Same network, by destination MAC, frame unchanged.
    Bridged = 1,
    /// Between connected networks: MACs rewritten, TTL decremented.
    Routed = 2,
    /// ARP request answered by the program.
    ArpReplied = 3,
    /// Handed to the node's own stack (to the node, or outside weft).
    PassedToStack = 4,
    /// Broadcast/multicast cloned to the network's other endpoints.
    Flooded = 5,
    /// Masqueraded: source rewritten to the node's address, sent out of the
    /// uplink.
    Snat = 6,
    /// A reply to a masqueraded connection, arriving on the uplink:
    /// destination rewritten to the container's, delivered into it.
    ReverseSnat = 7,
    /// To a published port on the node's address: destination rewritten
    /// to the container's (DNAT), delivered into it; from another
    /// container (hairpin) the source becomes the node's address too.
    Dnat = 8,
    /// A container's reply on a DNAT connection: source rewritten to the
    /// node's address and published port, sent out of the uplink.
    ReverseDnat = 9,
    /// An ICMP error about a translated connection: outer and embedded
    /// headers translated back, delivered into the container.
    IcmpErrorTranslated = 10,
    /// Sent to another node: outer headers written by the program.
    EncapBpf = 11,
    /// Sent to another node through the collect-metadata vxlan device.
    EncapTunnel = 12,
    /// Arrived over VXLAN, delivered into its container.
    DecapDelivered = 13,
    /// Valid VXLAN left to the kernel's vxlan device (tunnel mode).
    VxlanToKernel = 14,
    /// Too big for the overlay with Don't Fragment set: answered with an
    /// ICMP fragmentation-needed carrying the overlay's MTU, built from the
    /// packet and sent back to its sender (RFC 1191).
    FragNeededSent = 15,
    /// To a service VIP and port: destination rewritten to the backend
    /// Maglev (or the connection's conntrack entry) picked; from the
    /// backend itself (hairpin) the source becomes the VIP too.
    ServiceDnat = 16,
    /// A backend's reply on a service connection: source rewritten to the
    /// VIP and service port.
    ServiceReverse = 17,
    /// A service without backends answered its client with a TCP RST or an
    /// ICMP port unreachable (the packet itself counts as
    /// `service_no_backend`).
    ServiceRejected = 18,
}

impl Forward {
    pub const ALL: [Forward; 18] = [
        Forward::Bridged,
        Forward::Routed,
        Forward::ArpReplied,
        Forward::PassedToStack,
        Forward::Flooded,
        Forward::Snat,
        Forward::ReverseSnat,
        Forward::Dnat,
        Forward::ReverseDnat,
        Forward::IcmpErrorTranslated,
        Forward::EncapBpf,
        Forward::EncapTunnel,
        Forward::DecapDelivered,
        Forward::VxlanToKernel,
        Forward::FragNeededSent,
        Forward::ServiceDnat,
        Forward::ServiceReverse,
        Forward::ServiceRejected,
    ];

    pub const fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Forward> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Forward::Bridged => "bridged",
            Forward::Routed => "routed",
            Forward::ArpReplied => "arp_replied",
            Forward::PassedToStack => "passed_to_stack",
            Forward::Flooded => "flooded",
            Forward::Snat => "snat",
            Forward::ReverseSnat => "reverse_snat",
            Forward::Dnat => "dnat",
            Forward::ReverseDnat => "reverse_dnat",
            Forward::IcmpErrorTranslated => "icmp_error_translated",
            Forward::EncapBpf => "encap_bpf",
            Forward::EncapTunnel => "encap_tunnel",
            Forward::DecapDelivered => "decap_delivered",
            Forward::VxlanToKernel => "vxlan_to_kernel",
            Forward::FragNeededSent => "frag_needed_sent",
            Forward::ServiceDnat => "service_dnat",
            Forward::ServiceReverse => "service_reverse",
            Forward::ServiceRejected => "service_rejected",
        }
    }
}

const _: () = {
    assert!((Drop::PublishedEndpointMissing as u32) < crate::maps::MAX_REASONS);
    assert!((Forward::IcmpErrorTranslated as u32) < crate::maps::MAX_REASONS);
    assert!((Drop::OverlayMtuExceeded as u32) < crate::maps::MAX_REASONS);
    assert!((Forward::FragNeededSent as u32) < crate::maps::MAX_REASONS);
    assert!((Drop::ServiceUnknownPort as u32) < crate::maps::MAX_REASONS);
    assert!((Forward::ServiceRejected as u32) < crate::maps::MAX_REASONS);
};
