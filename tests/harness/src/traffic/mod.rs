//! Real traffic between the run's namespaces. Socket traffic (echo,
//! probes, raw frames) runs on threads that entered a namespace; tools
//! (ping, iperf3, sockperf) run inside one with `ip netns exec`, servers
//! bound to the receiver's address. Every wait is bounded, so a blocked
//! path fails, never hangs.

mod echo;
mod iperf;
mod ping;
mod probe;
mod raw;
mod sockperf;

use std::{thread::JoinHandle, time::Duration};

use anyhow::Result;
pub use echo::{
    tcp_echo, tcp_echo_from, tcp_echo_server, udp_echo, udp_echo_from, udp_echo_server,
};
pub use iperf::{Pin, Stream, iperf3};
pub use probe::{connected_udp_error, tcp_connect_answers, tcp_mss, udp_broadcast_reaches};
pub use raw::send_raw_frames;
pub use sockperf::{Latency, sockperf};

/// How long a socket waits for its peer.
const WAIT: Duration = Duration::from_secs(3);

/// Joins a server thread and passes its result on.
pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?
}
