//! containerd 1.6 (`ctr run --cni --rootfs`) on a weft network, beside
//! podman: a daemon of the test's own (root, state, socket and config in
//! the sandbox's directory) reads the sandbox's `/etc/cni/net.d`, so its
//! containers get weft addresses and reach podman's containers.

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft_harness::{proc, run::unique_name};
use weft_tests::cni::{CniHost, CniNode, Containerd, Podman, machine_paths};

const NET: &str = "weftnet";

#[test]
fn ctr_container_gets_a_weft_address_and_reaches_a_podman_container() -> Result<()> {
    let before = machine_paths();
    let node = CniNode::new()?;
    let host = CniHost::new(&node.node)?;
    // containerd loads only the first file of the directory.
    host.write_conflist("10-weft.conflist", &node.conflist(NET, json!(null), &[]))?;
    let podman = Podman::new(&host)?;
    podman.start("web", NET, &[], "httpd -f -p 80 -h /www")?;
    let web_ip = podman.inspect(
        "web",
        &format!("{{{{.NetworkSettings.Networks.{NET}.IPAddress}}}}"),
    )?;

    let containerd = Containerd::start(&host)?;
    let id = unique_name("ctr");
    let script = format!(
        "ip -o -4 addr show eth0 | awk '{{print $4}}'; wget -q -O - http://{web_ip}/; sleep 2"
    );
    let output = std::thread::scope(|scope| -> Result<String> {
        let run = scope.spawn(|| containerd.run_cni(&id, &script));
        // While it runs, weft knows the container by containerd's id.
        let cni_id = format!("default-{id}");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let ep = loop {
            if let Some(ep) = node.endpoint_of(&cni_id)? {
                break ep;
            }
            if run.is_finished() || std::time::Instant::now() > end {
                bail!("no weft endpoint for {cni_id} while the container ran");
            }
            proc::sleep(std::time::Duration::from_millis(50))?;
        };
        assert_eq!(ep["cni_network"], NET, "{ep}");
        run.join()
            .map_err(|_| anyhow::anyhow!("the ctr thread panicked"))?
    })?;
    let mut lines = output.lines();
    let address = lines.next().context("ctr printed nothing")?;
    assert!(
        address.starts_with("10.1.0.") && address.ends_with("/24"),
        "a weft address: {output}"
    );
    assert_eq!(
        lines.next(),
        Some("weft says hello"),
        "the ctr container fetched the podman container's page: {output}"
    );
    // ctr's DEL (with an empty CNI_NETNS) removed its endpoint; podman's
    // stays.
    let left: Vec<_> = node
        .endpoints()?
        .into_iter()
        .map(|e| e["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(left, [web_ip], "only the podman container's endpoint left");

    drop(containerd);
    drop(podman);
    drop(host);
    drop(node);
    assert_eq!(
        machine_paths(),
        before,
        "the machine's directories untouched"
    );
    Ok(())
}
