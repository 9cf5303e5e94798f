//! `weft`: the command line. Parses arguments and dispatches to the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use weft::{
    Paths, agent,
    cmd::{endpoint, network, stats, teardown},
    output::{Format, render},
    paths::{DEFAULT_BPFFS, DEFAULT_STATE_DIR},
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
    /// Show the datapath's drop, forward and per-endpoint counters.
    Stats(OutputArg),
    /// Remove everything weft made on this node (links, veths, gateway
    /// addresses, pinned maps and program, state). Safe to repeat.
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
        #[arg(long, default_value = endpoint::DEFAULT_IFNAME)]
        ifname: String,
        /// MTU of both veth ends.
        #[arg(long, default_value_t = endpoint::DEFAULT_MTU)]
        mtu: u32,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Unplug an endpoint (deletes its veth pair).
    Rm { name: String },
    /// List endpoints.
    Ls(OutputArg),
}

fn main() {
    weft::logging::init();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // setns switches only this thread: do it before any runtime or thread.
    if let Some(ns) = &cli.node_netns {
        weft::netns::enter(ns)?;
    }
    let paths = Paths::new(cli.bpffs, cli.state_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(dispatch(&paths, cli.command))
}

async fn dispatch(paths: &Paths, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Network(cmd) => match cmd {
            NetworkCmd::Create {
                name,
                subnet,
                gateway,
                flood,
            } => {
                let net = network::create(
                    paths,
                    &network::CreateArgs {
                        name,
                        subnet,
                        gateway,
                        flood,
                    },
                )?;
                println!(
                    "network {}: {} gateway {} (id {}, flood {})",
                    net.name,
                    net.subnet,
                    net.gateway,
                    net.id,
                    if net.flood { "on" } else { "off" }
                );
            }
            NetworkCmd::Rm { name } => {
                network::remove(paths, &name)?;
                println!("network {name} removed");
            }
            NetworkCmd::Ls(o) => print!("{}", render(o.output, &network::list(paths)?)),
            NetworkCmd::Inspect { name, output } => {
                print!(
                    "{}",
                    render(output.output, &network::inspect(paths, &name)?)
                );
            }
            NetworkCmd::Connect { a, b } => {
                network::connect(paths, &a, &b)?;
                println!("networks {a} and {b} connected");
            }
            NetworkCmd::Disconnect { a, b } => {
                network::disconnect(paths, &a, &b)?;
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
                output,
            } => {
                let args = endpoint::AddArgs {
                    network,
                    netns,
                    ip,
                    name,
                    ifname: Some(ifname),
                    mtu: Some(mtu),
                };
                let ep = endpoint::add(paths, &args).await?;
                print!("{}", render(output.output, &ep));
            }
            EndpointCmd::Rm { name } => {
                endpoint::remove(paths, &name).await?;
                println!("endpoint {name} removed");
            }
            EndpointCmd::Ls(o) => print!("{}", render(o.output, &endpoint::list(paths)?)),
        },
        Command::Stats(o) => print!("{}", render(o.output, &stats::stats(paths)?)),
        Command::Agent {
            config,
            socket,
            metrics_addr,
        } => {
            let config = agent::AgentConfig::load(config.as_deref(), socket, metrics_addr)?;
            agent::run(paths, &config).await?;
        }
        Command::Status { socket, output } => {
            let socket = socket.unwrap_or_else(|| agent::config::default_socket(paths));
            let view = match agent::client::get(&socket, "/v1/status").await? {
                Some(body) => serde_json::from_str(&body)
                    .context("the agent's /v1/status answer is not a status")?,
                None => agent::api::local_status(paths, "not running").await?,
            };
            print!("{}", render(output.output, &view));
        }
        Command::Teardown => {
            let removed = teardown::teardown(paths).await?;
            println!(
                "teardown: removed {} endpoint(s) and {} network(s)",
                removed.endpoints, removed.networks
            );
        }
    }
    Ok(())
}
