//! The command line: arguments parsed by clap, each command turned into
//! one API request, sent to the agent when one answers and otherwise run
//! by an engine in this process; the answer is printed as a table or JSON.

mod backend;
pub mod monitor;
pub mod output;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use weft_api::requests::{
    AddEndpoint, AddNode, ClusterStatus, ConnectNetworks, CreateNetwork, CreateService,
    DisconnectNetworks, DrainEndpoint, GcConntrack, InspectNetwork, InspectService, LabelEndpoint,
    ListConntrack, ListEndpoints, ListNetworks, ListNodes, ListPublished, ListServices, Nat,
    Publish, RemoveEndpoint, RemoveNetwork, RemoveNode, RemoveService, SetNode, SetServiceConfig,
    ShowNode, ShowServiceConfig, Stats, Status, Teardown, Unpublish, UnsetNode,
};

use self::{
    backend::Backend,
    output::{Format, render},
};
use crate::{
    agent,
    datapath::paths::{DEFAULT_BPFFS, DEFAULT_STATE_DIR, Paths},
};

/// eBPF container networking: routed IPv4 networks of container namespaces
/// on one node.
#[derive(Parser)]
#[command(name = "weft", version)]
struct Cli {
    /// The node's network namespace (a name in /run/netns or a path); weft
    /// switches into it before doing anything. Default: the current one.
    /// Give it before the command.
    #[arg(long = "netns", env = "WEFT_NETNS", value_name = "NAME|PATH")]
    node_netns: Option<String>,

    /// bpffs directory for pinned maps, program and links.
    #[arg(long, global = true, env = "WEFT_BPFFS", value_name = "DIR", default_value = DEFAULT_BPFFS)]
    bpffs: PathBuf,

    /// Directory of state.json and the lock serializing weft commands.
    #[arg(long, global = true, env = "WEFT_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Work directly on the kernel and state even when an agent answers on
    /// <state dir>/agent.sock (for debugging; without an agent every
    /// command works directly anyway).
    #[arg(long, global = true, env = "WEFT_DIRECT", hide = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    direct: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, inspect, connect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Plug container network namespaces into networks, and unplug them.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Services: virtual IPs load-balanced over endpoints with Maglev.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Show the datapath's drop, forward and per-endpoint counters.
    Stats(OutputArg),
    /// The node's uplink: where masqueraded traffic leaves, with which
    /// address and NAT ports.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Masquerade's connection tracking table.
    #[command(subcommand)]
    Ct(CtCmd),
    /// Masquerade's NAT port use.
    #[command(subcommand)]
    Nat(NatCmd),
    /// Publish an endpoint's port on the node's address (DNAT), like
    /// `docker run -p`: `weft publish ENDPOINT [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`,
    /// or a service's, spread over its backends on this node: `weft publish
    /// SERVICE [HOST_IP:]HOST_PORT[:SERVICE_PORT][/tcp|udp]`; `weft publish
    /// ls` lists published ports.
    #[command(args_conflicts_with_subcommands = true)]
    Publish(PublishArgs),
    /// Stop publishing ports: `weft unpublish [ENDPOINT] [HOST_IP:]HOST_PORT[-LAST][:CONTAINER_PORT[-LAST]][/tcp|udp]`.
    Unpublish {
        /// The endpoint, then the spec; or the spec alone.
        #[arg(num_args = 1..=2, required = true, value_name = "[ENDPOINT] SPEC")]
        args: Vec<String>,
    },
    /// Remove everything weft made on this node (links, veths, gateway
    /// addresses, pinned maps and program, state). Safe to repeat. Always
    /// runs directly, never through the agent: stop the agent first.
    Teardown,
    /// Run the node agent: adopt the pinned datapath, repair drift, serve
    /// the API and metrics. The datapath keeps forwarding without it.
    Agent {
        /// TOML config file (keys: socket, metrics_addr); flags override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The API's unix socket. Default: <state dir>/agent.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Where to serve Prometheus metrics (/metrics). Default: 127.0.0.1:9965.
        #[arg(long, value_name = "IP:PORT")]
        metrics_addr: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Cluster mode (`weft agent --etcd`): the cluster store's state.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print the datapath's drop events live: time, program, endpoint,
    /// 5-tuple, named reason and the eBPF source location that dropped it.
    Monitor {
        /// Which events: `drop` (dropped packets), `trace` (forwarded
        /// packets, emitted only while a monitor asks), or `all`.
        #[arg(long = "type", value_name = "TYPE", default_value = "drop")]
        kind: String,
        /// With trace events: show one in this many forwarded packets.
        #[arg(long, value_name = "N", default_value_t = 1)]
        sample: u32,
        /// Only events of this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Also write each dropped packet's first 128 bytes to this pcap file.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Whether an agent runs, what it manages, and whether the kernel
    /// matches the saved state.
    Status {
        /// The agent's socket. Default: <state dir>/agent.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Cluster mode's flags of `weft agent`.
#[derive(Args)]
struct ClusterArgs {
    /// Join a cluster kept in etcd: its client URLs, comma-separated
    /// (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379).
    #[arg(long, value_name = "URL[,URL...]")]
    etcd: Option<String>,
    /// Key prefix in etcd. Default: /weft (schema weft),
    /// /coreos.com/network (schema flannel).
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// Keys and values: `weft`, or `flannel` to join a Flannel vxlan
    /// cluster (its config key and subnet leases).
    #[arg(long, value_name = "weft|flannel")]
    cluster_schema: Option<String>,
    /// Schema flannel: the name of Flannel's network on this node.
    /// Default: flannel.
    #[arg(long, value_name = "NAME")]
    flannel_network: Option<String>,
    /// This node's name in the cluster. Default: the hostname.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// TTL of the node's etcd lease, which everything it owns in etcd hangs
    /// on. Default: 30.
    #[arg(long, value_name = "SECONDS")]
    lease_ttl: Option<i64>,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// etcd endpoints and their health, this node's lease and TTL left,
    /// the subnets it holds.
    Status(OutputArg),
}

#[derive(Args)]
struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        /// Network name: 1-32 of A-Z a-z 0-9 _ . -
        name: String,
        /// IPv4 subnet in CIDR form, host bits zero, prefix /30 or shorter
        /// (e.g. 10.1.0.0/24). Must not overlap another weft network.
        #[arg(long)]
        subnet: String,
        /// Gateway address (the node's address in the network). Default: the
        /// subnet's first host address.
        #[arg(long)]
        gateway: Option<String>,
        /// Copy broadcast/multicast frames to up to 32 endpoints of the
        /// network. Off by default: weft networks are routed L3 with ARP
        /// answered in BPF, so IPv4 needs no broadcast, and flooding invites
        /// broadcast storms; without it broadcast is dropped.
        #[arg(long)]
        flood: bool,
        /// Masquerade traffic to destinations outside every weft network
        /// out of the node's uplink with the node's address (the default;
        /// takes effect once `weft node set` names an uplink).
        #[arg(long, overrides_with = "no_masquerade")]
        masquerade: bool,
        /// Do not masquerade: traffic to non-weft destinations goes to the
        /// node's stack with the container's own address.
        #[arg(long, overrides_with = "masquerade")]
        no_masquerade: bool,
        /// VXLAN network identifier (1-16777215) carrying this network
        /// between nodes; the same on every node. Default: the network id.
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Remove a network (refused while endpoints are attached).
    Rm { name: String },
    /// List networks.
    Ls(OutputArg),
    /// Show a network and its endpoints.
    Inspect {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Let two networks route to each other (both directions).
    Connect { a: String, b: String },
    /// Stop two networks routing to each other.
    Disconnect { a: String, b: String },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Create a service: a VIP whose ports are spread over its backends.
    Create {
        /// Service name: 1-32 of A-Z a-z 0-9 _ . -
        name: String,
        /// `[NAME=]PORT[/tcp|udp][:TARGET]`: a port of the VIP and the
        /// backends' port (default: the same). Repeatable.
        #[arg(long = "port", required = true, value_name = "PORT")]
        ports: Vec<String>,
        /// The VIP. Default: the lowest free address of the service range.
        #[arg(long)]
        vip: Option<String>,
        /// Backends are the endpoints with this label. Repeatable: all must
        /// match.
        #[arg(long = "select", value_name = "KEY=VAL")]
        selector: Vec<String>,
        /// An endpoint that is a backend by name. Repeatable.
        #[arg(long = "backend", value_name = "ENDPOINT")]
        backends: Vec<String>,
        /// `client-ip[:SECONDS]`: keep a client on one backend.
        #[arg(long)]
        affinity: Option<String>,
        /// `tcp:PORT`: the agent's health check of each backend.
        #[arg(long)]
        health: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List services.
    Ls(OutputArg),
    /// Show a service with its backends, their state, Maglev share and
    /// pinned connections.
    Inspect {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove a service.
    Rm { name: String },
    /// Show or change the cluster-wide service settings.
    Config {
        /// The VIP range (CIDR).
        #[arg(long)]
        range: Option<String>,
        /// Maglev table size, a prime (default 16381).
        #[arg(long)]
        maglev_size: Option<u32>,
        /// `endpoint add` writes /etc/netns/NETNS/resolv.conf for named
        /// namespaces, naming the gateway's DNS server (`true`/`false`).
        #[arg(long)]
        dns: Option<bool>,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Set (or replace) the uplink: attaches the reverse-NAT program to it
    /// and turns on IPv4 forwarding in the node namespace.
    Set {
        /// The uplink interface in the node namespace.
        #[arg(long)]
        uplink: String,
        /// The address masqueraded traffic leaves with: one of the uplink's.
        #[arg(long)]
        ip: String,
        /// NAT port range MIN-MAX, disjoint from the node's
        /// net.ipv4.ip_local_port_range. Default: 61000-65535 (above Linux's
        /// default ephemeral range, 32768-60999).
        #[arg(long, value_name = "MIN-MAX")]
        ports: Option<String>,
        /// Turn the VXLAN overlay on, with the uplink as underlay and --ip
        /// as this node's underlay address: `tunnel` (a collect-metadata
        /// vxlan device does the encapsulation) or `bpf` (the program does).
        #[arg(long, value_name = "tunnel|bpf")]
        encap: Option<String>,
        /// This node's pod CIDR of a network, a slice of the network's
        /// subnet: endpoints of NET get addresses there. Repeatable.
        #[arg(long = "subnet", value_name = "NET=CIDR")]
        subnets: Vec<String>,
        /// This node's VTEP MAC. Default: 0a:56: + the --ip octets.
        #[arg(long, value_name = "MAC")]
        vtep_mac: Option<String>,
        /// Also attach an XDP program to the uplink that drops VXLAN not
        /// for this node or with an unknown VNI before an skb is built
        /// (pays on a real NIC; on a veth underlay native XDP turns off
        /// the peer's GSO, so it is opt-in).
        #[arg(long)]
        xdp: bool,
        /// Connections the conntrack table may hold; past it new ones are
        /// dropped (conntrack_full) and established ones keep working.
        /// Default and maximum: 29491 (90% of the table's 32768 pairs).
        #[arg(long, value_name = "N")]
        conntrack_max: Option<u32>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show the uplink.
    Show(OutputArg),
    /// Remove the uplink: masquerade stops, its connections are dropped.
    Unset,
    /// Add another node of the overlay: traffic to its pod CIDRs is sent
    /// to it over VXLAN.
    Add {
        /// Node name: 1-32 of A-Z a-z 0-9 _ . -
        name: String,
        /// The node's underlay address (where its VXLAN endpoint listens).
        #[arg(long)]
        underlay: String,
        /// One of the node's pod CIDRs. Repeatable.
        #[arg(long = "subnet", value_name = "NET=CIDR")]
        subnets: Vec<String>,
        /// Its VTEP MAC, the inner destination MAC (a Flannel-style kernel
        /// vxlan node: its vxlan device's MAC). Default: a weft node's,
        /// 0a:56: + the underlay octets.
        #[arg(long, value_name = "MAC")]
        vtep_mac: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove a node of the overlay and its routes.
    Rm { name: String },
    /// List the overlay's other nodes.
    Ls(OutputArg),
}

#[derive(Subcommand)]
enum CtCmd {
    /// List masqueraded connections, each once.
    Ls(OutputArg),
    /// Remove expired connections (the agent does this every 10 s).
    Gc {
        /// Also remove connections idle for more than SECONDS (shorter than
        /// their protocol's timeout; for tests or to free ports at once).
        #[arg(long, value_name = "SECONDS")]
        older_than: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Args)]
struct PublishArgs {
    #[command(subcommand)]
    list: Option<PublishCmd>,
    /// The endpoint (or service) whose port is published.
    #[arg(required = true)]
    endpoint: Option<String>,
    /// [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (default tcp; HOST_IP,
    /// if given, must be the node's address). Ports may be ranges
    /// FIRST-LAST: as many container ports as host ports, or one container
    /// port for every host port.
    #[arg(required = true)]
    spec: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Subcommand)]
enum PublishCmd {
    /// List published ports.
    Ls(OutputArg),
}

#[derive(Subcommand)]
enum NatCmd {
    /// NAT port use by protocol.
    Ls(OutputArg),
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Plug a container's network namespace into a network.
    Add {
        /// Network to join.
        #[arg(long)]
        network: String,
        /// The container's network namespace: a name in /run/netns or a path.
        #[arg(long, value_name = "NETNS")]
        netns: String,
        /// Address to use. Default: the lowest free address of the network.
        #[arg(long)]
        ip: Option<String>,
        /// Endpoint name. Default: the netns name.
        #[arg(long)]
        name: Option<String>,
        /// Interface name inside the container.
        #[arg(long, default_value = crate::model::endpoint::DEFAULT_IFNAME)]
        ifname: String,
        /// MTU of both veth ends. Default: the overlay's inner MTU (the
        /// underlay's less VXLAN's 50 bytes) on a node with an overlay,
        /// else 1500.
        #[arg(long)]
        mtu: Option<u32>,
        /// The container end's MAC (unicast, unique in the network).
        /// Default: 02:57: + the address's octets.
        #[arg(long)]
        mac: Option<String>,
        /// A label services select backends by. Repeatable.
        #[arg(long = "label", value_name = "KEY=VAL")]
        labels: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Set (`KEY=VAL`) or remove (`--remove KEY`) an endpoint's labels;
    /// services' backends follow.
    Label {
        name: String,
        #[arg(value_name = "KEY=VAL")]
        set: Vec<String>,
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Mark an endpoint terminating: no new service connections, its
    /// established ones kept (`--undo`: active again).
    Drain {
        name: String,
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Unplug an endpoint (deletes its veth pair).
    Rm { name: String },
    /// List endpoints.
    Ls(OutputArg),
}

/// Parses the command line and runs it; the binary's whole job.
pub fn main() {
    crate::logging::init();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        let code = err
            .downcast_ref::<weft_api::ApiError>()
            .map_or(1, |e| e.kind.exit_code());
        std::process::exit(code);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Out of `ip netns exec`'s private mount namespace, whose bpffs dies
    // with the command; setns needs a single-threaded process.
    crate::datapath::paths::join_outliving_mount_namespace(&cli.bpffs)?;
    // setns switches only this thread: do it before any runtime or thread.
    if let Some(ns) = &cli.node_netns {
        crate::datapath::netns::enter(ns)?;
    }
    let paths = Paths::new(cli.bpffs, cli.state_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(dispatch(paths, cli.direct, cli.command))
}

/// A netns path made absolute for the agent, whose working directory is
/// not ours; names (no `/`) stay names.
fn absolute_netns(spec: String) -> anyhow::Result<String> {
    if !spec.contains('/') || spec.starts_with('/') {
        return Ok(spec);
    }
    let cwd = std::env::current_dir().context("cannot resolve a relative netns path")?;
    Ok(cwd.join(&spec).to_string_lossy().into_owned())
}

async fn dispatch(paths: Paths, direct: bool, command: Command) -> anyhow::Result<()> {
    let socket = agent::config::default_socket(&paths);
    let mut api = Backend::new(paths.clone(), (!direct).then_some(socket));
    match command {
        Command::Network(cmd) => match cmd {
            NetworkCmd::Create {
                name,
                subnet,
                gateway,
                flood,
                masquerade: _,
                no_masquerade,
                vni,
            } => {
                let net = api
                    .call(CreateNetwork {
                        name,
                        subnet,
                        gateway,
                        flood,
                        masquerade: !no_masquerade,
                        vni,
                    })
                    .await?;
                println!(
                    "network {}: {} gateway {} (id {}, flood {}, masquerade {})",
                    net.name,
                    net.subnet,
                    net.gateway,
                    net.id,
                    if net.flood { "on" } else { "off" },
                    if net.masquerade { "on" } else { "off" }
                );
            }
            NetworkCmd::Rm { name } => {
                api.call(RemoveNetwork { name: name.clone() }).await?;
                println!("network {name} removed");
            }
            NetworkCmd::Ls(o) => print!("{}", render(o.output, &api.call(ListNetworks).await?)),
            NetworkCmd::Inspect { name, output } => {
                let detail = api.call(InspectNetwork { name }).await?;
                print!("{}", render(output.output, &detail));
            }
            NetworkCmd::Connect { a, b } => {
                api.call(ConnectNetworks {
                    a: a.clone(),
                    b: b.clone(),
                })
                .await?;
                println!("networks {a} and {b} connected");
            }
            NetworkCmd::Disconnect { a, b } => {
                api.call(DisconnectNetworks {
                    a: a.clone(),
                    b: b.clone(),
                })
                .await?;
                println!("networks {a} and {b} disconnected");
            }
        },
        Command::Endpoint(cmd) => match cmd {
            EndpointCmd::Add {
                network,
                netns,
                ip,
                name,
                ifname,
                mtu,
                labels,
                mac,
                output,
            } => {
                let ep = api
                    .call(AddEndpoint {
                        network,
                        netns: absolute_netns(netns)?,
                        ip,
                        name,
                        ifname: Some(ifname),
                        mtu,
                        mac,
                        labels,
                    })
                    .await?;
                print!("{}", render(output.output, &ep));
            }
            EndpointCmd::Label {
                name,
                set,
                remove,
                output,
            } => {
                let ep = api.call(LabelEndpoint { name, set, remove }).await?;
                print!("{}", render(output.output, &ep));
            }
            EndpointCmd::Drain { name, undo, output } => {
                let ep = api
                    .call(DrainEndpoint {
                        name,
                        terminating: !undo,
                    })
                    .await?;
                print!("{}", render(output.output, &ep));
            }
            EndpointCmd::Rm { name } => {
                api.call(RemoveEndpoint { name: name.clone() }).await?;
                println!("endpoint {name} removed");
            }
            EndpointCmd::Ls(o) => print!("{}", render(o.output, &api.call(ListEndpoints).await?)),
        },
        Command::Service(cmd) => match cmd {
            ServiceCmd::Create {
                name,
                ports,
                vip,
                selector,
                backends,
                affinity,
                health,
                output,
            } => {
                let view = api
                    .call(CreateService {
                        name,
                        ports,
                        vip,
                        selector,
                        backends,
                        affinity,
                        health,
                    })
                    .await?;
                print!("{}", render(output.output, &view));
            }
            ServiceCmd::Ls(o) => print!("{}", render(o.output, &api.call(ListServices).await?)),
            ServiceCmd::Inspect { name, output } => {
                print!(
                    "{}",
                    render(output.output, &api.call(InspectService { name }).await?)
                );
            }
            ServiceCmd::Rm { name } => {
                api.call(RemoveService { name: name.clone() }).await?;
                println!("service {name} removed");
            }
            ServiceCmd::Config {
                range,
                maglev_size,
                dns,
                output,
            } => {
                let config = if range.is_none() && maglev_size.is_none() && dns.is_none() {
                    api.call(ShowServiceConfig).await?
                } else {
                    api.call(SetServiceConfig {
                        range,
                        maglev_size,
                        dns,
                    })
                    .await?
                };
                print!("{}", render(output.output, &config));
            }
        },
        Command::Node(cmd) => match cmd {
            NodeCmd::Set {
                uplink,
                ip,
                ports,
                encap,
                subnets,
                vtep_mac,
                xdp,
                conntrack_max,
                output,
            } => {
                let view = api
                    .call(SetNode {
                        uplink,
                        ip,
                        ports,
                        encap,
                        subnets,
                        vtep_mac,
                        xdp,
                        conntrack_max,
                    })
                    .await?;
                print!("{}", render(output.output, &view));
                if output.output == Format::Table {
                    println!(
                        "IPv4 forwarding is on in the node namespace \
                         (net.ipv4.conf.all.forwarding=1): masquerade's route lookup needs it"
                    );
                }
            }
            NodeCmd::Show(o) => print!("{}", render(o.output, &api.call(ShowNode).await?)),
            NodeCmd::Unset => {
                api.call(UnsetNode).await?;
                println!("node uplink removed: masquerade is off");
            }
            NodeCmd::Add {
                name,
                underlay,
                subnets,
                vtep_mac,
                output,
            } => {
                let entry = api
                    .call(AddNode {
                        name,
                        underlay,
                        subnets,
                        vtep_mac,
                    })
                    .await?;
                print!("{}", render(output.output, &entry));
            }
            NodeCmd::Rm { name } => {
                api.call(RemoveNode { name: name.clone() }).await?;
                println!("node {name} removed");
            }
            NodeCmd::Ls(o) => print!("{}", render(o.output, &api.call(ListNodes).await?)),
        },
        Command::Ct(cmd) => match cmd {
            CtCmd::Ls(o) => print!("{}", render(o.output, &api.call(ListConntrack).await?)),
            CtCmd::Gc { older_than, output } => {
                let done = api.call(GcConntrack { older_than }).await?;
                print!("{}", render(output.output, &done));
            }
        },
        Command::Nat(NatCmd::Ls(o)) => print!("{}", render(o.output, &api.call(Nat).await?)),
        Command::Publish(PublishArgs {
            list: Some(PublishCmd::Ls(o)),
            ..
        }) => print!("{}", render(o.output, &api.call(ListPublished).await?)),
        Command::Publish(PublishArgs {
            endpoint: Some(endpoint),
            spec: Some(spec),
            output,
            ..
        }) => {
            let views = api.call(Publish { endpoint, spec }).await?;
            print!("{}", render(output.output, &views));
        }
        Command::Publish(_) => anyhow::bail!(
            "give an endpoint and a spec (`weft publish ENDPOINT 8080:80/tcp`) or `ls`"
        ),
        Command::Unpublish { mut args } => {
            let spec = args.pop().unwrap_or_default();
            let views = api
                .call(Unpublish {
                    endpoint: args.pop(),
                    spec,
                })
                .await?;
            for v in views {
                println!(
                    "unpublished {}/{} (endpoint {} port {})",
                    v.host_port, v.proto, v.endpoint, v.container_port
                );
            }
        }
        Command::Stats(o) => print!("{}", render(o.output, &api.call(Stats).await?)),
        Command::Cluster(ClusterCmd::Status(o)) => {
            print!("{}", render(o.output, &api.call(ClusterStatus).await?));
        }
        Command::Agent {
            config,
            socket,
            metrics_addr,
            cluster,
        } => {
            let config = agent::AgentConfig::load_with(
                config.as_deref(),
                socket,
                metrics_addr,
                agent::config::ClusterFlags {
                    etcd: cluster.etcd,
                    etcd_prefix: cluster.etcd_prefix,
                    cluster_schema: cluster.cluster_schema,
                    flannel_network: cluster.flannel_network,
                    node_name: cluster.node_name,
                    lease_ttl_seconds: cluster.lease_ttl,
                },
                &paths.state_dir,
            )?;
            agent::run(&paths, &config).await?;
        }
        Command::Monitor {
            kind,
            sample,
            endpoint,
            pcap,
            count,
            output,
        } => {
            let (drops, traces) = match kind.as_str() {
                "drop" => (true, false),
                "trace" => (false, true),
                "all" => (true, true),
                other => anyhow::bail!("unknown event type '{other}': use drop, trace or all"),
            };
            if sample == 0 {
                anyhow::bail!("--sample must be at least 1 (1 shows every packet)");
            }
            let filter = monitor::Filter {
                endpoint,
                drops,
                traces,
                sample_every: sample,
            };
            let json = output.output == Format::Json;
            let known = monitor::Known {
                endpoints: api.call(ListEndpoints).await?,
                services: api.call(ListServices).await?,
                uplink_ifindex: api.call(ShowNode).await?.uplink_ifindex,
            };
            monitor::run(&paths, &known, &filter, json, count, pcap.as_deref()).await?;
        }
        Command::Status { socket, output } => {
            if let Some(socket) = socket {
                api = Backend::new(paths.clone(), Some(socket));
            }
            print!("{}", render(output.output, &api.call(Status).await?));
        }
        Command::Teardown => {
            // Never through the agent: it removes the state the agent serves.
            let removed = api.in_process(Teardown).await?;
            println!(
                "teardown: removed {} endpoint(s) and {} network(s)",
                removed.endpoints, removed.networks
            );
        }
    }
    Ok(())
}
