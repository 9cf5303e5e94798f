//! The agent's benchmark routes: synthetic endpoints go into the maps and
//! come out again, leaving real endpoints and their traffic alone.

use anyhow::Result;
use aya::maps::{HashMap, Map, MapData};
use weft::engine::bench::SYNTHETIC_IFINDEX;
use weft_api::requests::{BenchProgram, BenchRemove};
use weft_common::maps::{EndpointInfo, MAP_EP_BY_IF};
use weft_tests::node::Node;

/// (synthetic, real) endpoints in `WEFT_EP_BY_IF`.
fn endpoints(node: &Node) -> Result<(usize, usize)> {
    let data = MapData::from_pin(node.pin_dir().join("maps").join(MAP_EP_BY_IF))?;
    let map: HashMap<MapData, u32, EndpointInfo> = HashMap::try_from(Map::from_map_data(data)?)?;
    let keys: Vec<u32> = map.keys().collect::<Result<_, _>>()?;
    let synthetic = keys.iter().filter(|&&k| k >= SYNTHETIC_IFINDEX).count();
    Ok((synthetic, keys.len() - synthetic))
}

#[test]
fn synthetic_endpoints_are_programmed_and_removed() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let _agent = node.start_agent()?;

    let done = node.call(BenchProgram { count: 1000 })?;
    assert_eq!(done.endpoints, 1000, "{done:?}");
    assert!(done.map_update_seconds > 0.0, "{done:?}");
    assert_eq!(endpoints(&node)?, (1000, 2));
    assert_eq!(a.ping(&ip_b, 2)?, 2, "real endpoints keep forwarding");
    assert_eq!(
        node.weft_json(&["endpoint", "ls"])?
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let removed = node.call(BenchRemove)?;
    assert_eq!(removed.endpoints, 1000, "{removed:?}");
    assert_eq!(endpoints(&node)?, (0, 2));
    assert_eq!(a.ping(&ip_b, 2)?, 2);
    Ok(())
}
