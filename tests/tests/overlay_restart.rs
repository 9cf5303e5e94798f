//! Hitless agent restarts through the VXLAN overlay: two weft nodes on an
//! underlay switch, a container on each, an iperf3 stream and a 10 ms ping
//! flood from one to the other while the agents of both nodes (the one
//! that encapsulates and the one that decapsulates) are SIGKILLed and
//! restarted five times, in both encapsulation modes. The agent of an
//! overlay node adopts what is pinned (no program reloaded, no map or link
//! recreated) and finds the kernel matching the saved state, before and
//! after the restarts.

use anyhow::Result;
use weft_tests::{
    load::restart_agents_under_load,
    node::{Node, PinnedIds},
    overlay::{Cluster, ClusterNet},
};

const BLUE: ClusterNet = ClusterNet {
    name: "blue",
    octet: 1,
    vni: 100,
};

/// Starts `node`'s agent and checks it adopted the overlay node as it is:
/// same pinned objects, nothing migrated, reloaded or repaired, and the
/// kernel matching the saved state (overlay maps included).
fn agent_adopts(node: &Node, what: &str) -> Result<()> {
    let before = node.pinned_ids()?;
    let agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["agent"], "running", "{what}: {status}");
    assert_eq!(status["kernel_matches_state"], true, "{what}: {status}");
    assert_eq!(
        status["migrated_at_start"]["migrated"],
        serde_json::json!([]),
        "{what}: {status}"
    );
    assert_eq!(
        status["migrated_at_start"]["reloaded_programs"],
        serde_json::json!([]),
        "{what}: {status}"
    );
    let repaired = &status["repaired_at_start"];
    for field in ["reattached", "unpinned", "maps"] {
        assert_eq!(
            repaired[field],
            serde_json::json!([]),
            "{what}: nothing to repair ({field}): {status}"
        );
    }
    assert!(
        repaired.get("reattached_uplink").is_none(),
        "{what}: {status}"
    );
    assert_eq!(
        node.pinned_ids()?,
        before,
        "{what}: the agent must adopt every program, map and link as pinned"
    );
    agent.kill()
}

fn restart_under_load_through_the_overlay(encap: &str, encap_kind: &str) -> Result<()> {
    let cluster = Cluster::new(encap, 2, &[BLUE])?;
    let (n1, n2) = (&cluster.nodes[0].node, &cluster.nodes[1].node);
    let (ca, _) = cluster.container(0, "blue", "ca")?;
    let (cb, ip_b) = cluster.container(1, "blue", "cb")?;
    assert_eq!(ca.ping(&ip_b, 3)?, 3, "{encap}: ping across the overlay");

    for (i, n) in [n1, n2].into_iter().enumerate() {
        agent_adopts(n, &format!("{encap}: n{} before the load", i + 1))?;
    }
    let pins = [n1.pinned_ids()?, n2.pinned_ids()?];
    assert!(
        pins[0].contains_key("progs/weft_overlay_encap") && pins[0].contains_key("links/:uplink"),
        "{encap}: n1 is an overlay node: {:?}",
        pins[0]
    );
    let encapsulated = n1.forwards(encap_kind)?;
    let delivered = n2.forwards("decap_delivered")?;

    let load = restart_agents_under_load(&[n1, n2], &ca, &cb, &ip_b)?;
    eprintln!("{encap}: restart under load through the overlay: {load:?}");

    // The load crossed the overlay: n1 encapsulated it, n2 decapsulated it
    // (the flood alone is over 1000 packets each way).
    let encapsulated = n1.forwards(encap_kind)? - encapsulated;
    let delivered = n2.forwards("decap_delivered")? - delivered;
    assert!(
        encapsulated > 1000 && delivered > 1000,
        "{encap}: the load must cross the overlay: n1 encapsulated {encapsulated}, \
         n2 delivered {delivered} decapsulated"
    );
    // Ten agent starts reloaded, recreated or re-attached nothing.
    assert_eq!(
        [n1.pinned_ids()?, n2.pinned_ids()?],
        pins,
        "{encap}: pinned objects after the restarts"
    );
    for (i, n) in [n1, n2].into_iter().enumerate() {
        agent_adopts(n, &format!("{encap}: n{} after the load", i + 1))?;
    }
    Ok(())
}

#[test]
fn agents_restart_under_load_through_bpf_encap() -> Result<()> {
    restart_under_load_through_the_overlay("bpf", "encap_bpf")
}

#[test]
fn agents_restart_under_load_through_tunnel_encap() -> Result<()> {
    restart_under_load_through_the_overlay("tunnel", "encap_tunnel")
}
