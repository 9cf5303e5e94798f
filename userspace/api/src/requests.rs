//! Every request the engine takes, with the answer it gives and the HTTP
//! route that carries it. The CLI, the agent's server, the tests and xtask
//! all speak these types, so each operation is defined once.
//!
//! | request | route | answer |
//! |---|---|---|
//! | [`Status`] | `GET /v1/status` | [`StatusView`] |
//! | [`ListNetworks`], [`CreateNetwork`] | `GET`, `POST /v1/networks` | list; 201 [`NetworkView`] |
//! | [`InspectNetwork`], [`RemoveNetwork`] | `GET`, `DELETE /v1/networks/{name}` | [`NetworkDetail`]; [`Removed`] |
//! | [`ConnectNetworks`], [`DisconnectNetworks`] | `POST /v1/networks/{a}/connect/{b}`, `.../disconnect/{b}` | [`Connection`] |
//! | [`ListEndpoints`], [`AddEndpoint`] | `GET`, `POST /v1/endpoints` | list; 201 [`Endpoint`] |
//! | [`RemoveEndpoint`] | `DELETE /v1/endpoints/{name}` | [`Removed`] |
//! | [`Stats`] | `GET /v1/stats` | [`StatsView`] |
//! | [`ShowNode`], [`SetNode`], [`UnsetNode`] | `GET`, `PUT`, `DELETE /v1/node` | [`NodeView`] |
//! | [`ListNodes`], [`AddNode`] | `GET`, `POST /v1/nodes` | list; 201 [`NodeEntry`] |
//! | [`RemoveNode`] | `DELETE /v1/nodes/{name}` | [`Removed`] |
//! | [`ListConntrack`], [`GcConntrack`] | `GET /v1/conntrack`, `POST /v1/conntrack/gc[?older_than=S]` | list; [`GcResult`] |
//! | [`Nat`] | `GET /v1/nat` | [`NatView`] |
//! | [`ListPublished`], [`Publish`], [`Unpublish`] | `GET`, `POST`, `DELETE /v1/publish` | list; 201 list; list |
//! | [`LabelEndpoint`], [`DrainEndpoint`] | `POST /v1/endpoints/{name}/labels`, `.../drain` | [`Endpoint`] |
//! | [`ListServices`], [`CreateService`] | `GET`, `POST /v1/services` | list; 201 [`ServiceView`] |
//! | [`InspectService`], [`RemoveService`] | `GET`, `DELETE /v1/services/{name}` | [`ServiceDetail`]; [`Removed`] |
//! | [`ShowServiceConfig`], [`SetServiceConfig`] | `GET`, `PUT /v1/service-config` | [`ServiceConfig`] |
//! | [`BenchProgram`], [`BenchRemove`] | `POST`, `DELETE /v1/bench/endpoints` | [`Timing`] |
//! | [`BenchServices`], [`BenchRemoveServices`] | `POST`, `DELETE /v1/bench/services` | [`Timing`] |
//! | attachments (CNI) | `/v1/attachments...` | see [`crate::attach`] |
//!
//! | [`ClusterStatus`] | `GET /v1/cluster` | [`ClusterStatusView`] |
//!
//! [`Teardown`] has no route: it removes the very state and pins an agent
//! serves, so it only runs in-process (`weft teardown`, agent stopped).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::attach::{AttachContainer, CheckAttachment, DetachContainer, GcAttachments};
use crate::{
    attach::{Attachment, AttachmentCheck, Detached, GcAttachmentsView},
    records::{Endpoint, ServiceConfig},
    views::{
        ClusterStatusView, ConnView, Connection, GcResult, NatView, NetworkDetail, NetworkView,
        NodeEntry, NodeView, PublishView, Removed, ServiceDetail, ServiceView, StatsView,
        StatusView, TeardownView, Timing,
    },
};

/// A request with its answer type.
pub trait Call: Into<Request> {
    type Answer: Serialize + DeserializeOwned;
}

/// `POST /v1/networks`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default)]
    pub flood: bool,
    /// Default: on.
    #[serde(default = "default_masquerade")]
    pub masquerade: bool,
    /// VXLAN network identifier; default: the network id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

fn default_masquerade() -> bool {
    true
}

/// `POST /v1/endpoints`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddEndpoint {
    pub network: String,
    /// A name in /run/netns or an absolute path (relative paths resolve
    /// against the engine's working directory, so the CLI sends absolute
    /// ones).
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container end's MAC; default: derived from the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `KEY=VALUE` labels services select by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// `POST /v1/endpoints/{name}/labels`: labels set (`KEY=VALUE`) and
/// removed (`KEY`); services' backends follow.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LabelEndpoint {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// `POST /v1/endpoints/{name}/drain`: marks the endpoint terminating (or
/// active again): no new service connections, established ones kept.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DrainEndpoint {
    #[serde(default)]
    pub name: String,
    /// Default: on.
    #[serde(default = "default_masquerade")]
    pub terminating: bool,
}

/// `POST /v1/services`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    /// `[NAME=]PORT[/tcp|udp][:TARGET]`, at least one.
    pub ports: Vec<String>,
    /// Default: the lowest free address of the service range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// `KEY=VALUE` labels backends must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    /// Endpoints named as backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// `client-ip[:SECONDS]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// `tcp:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// `PUT /v1/service-config`: cluster-wide service settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetServiceConfig {
    /// The VIP range, a CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Maglev table size, a prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_size: Option<u32>,
    /// Write containers' resolv.conf (`/etc/netns/NETNS/resolv.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<bool>,
}

/// `PUT /v1/node`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetNode {
    pub uplink: String,
    pub ip: String,
    /// `MIN-MAX`; default 61000-65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `tunnel` or `bpf`: turns the overlay on, with the uplink as its
    /// underlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
    /// This node's pod CIDRs, `NET=CIDR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Default: `0a:56:` + the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// Attach the XDP early drop to the underlay.
    #[serde(default)]
    pub xdp: bool,
    /// Connections the conntrack table may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u32>,
}

/// `POST /v1/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub name: String,
    pub underlay: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// `POST /v1/publish`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub endpoint: String,
    /// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
    pub spec: String,
}

/// `DELETE /v1/publish`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Unpublish {
    /// Only remove the publication if it is this endpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `[HOST_IP:]HOST_PORT[:CONTAINER_PORT][/tcp|udp]`.
    pub spec: String,
}

/// `POST /v1/conntrack/gc`, its query.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GcConntrack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<u64>,
}

/// `POST /v1/bench/endpoints`: synthetic endpoints in the maps only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BenchProgram {
    pub count: u32,
}

/// `POST /v1/bench/services`: synthetic services in the maps only, each
/// with its own `backends` addresses that exist only in its Maglev table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BenchServices {
    pub count: u32,
    pub backends: u32,
}

/// A request naming one object.
macro_rules! named {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
        pub struct $name {
            pub name: String,
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self { name }
            }
        }
    )*};
}

named! {
    /// `GET /v1/networks/{name}`.
    InspectNetwork;
    /// `DELETE /v1/networks/{name}`.
    RemoveNetwork;
    /// `DELETE /v1/endpoints/{name}`.
    RemoveEndpoint;
    /// `DELETE /v1/nodes/{name}`.
    RemoveNode;
    /// `GET /v1/services/{name}`.
    InspectService;
    /// `DELETE /v1/services/{name}`.
    RemoveService;
}

/// `POST /v1/networks/{a}/connect/{b}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectNetworks {
    pub a: String,
    pub b: String,
}

impl From<(String, String)> for ConnectNetworks {
    fn from((a, b): (String, String)) -> Self {
        Self { a, b }
    }
}

/// `POST /v1/networks/{a}/disconnect/{b}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisconnectNetworks {
    pub a: String,
    pub b: String,
}

impl From<(String, String)> for DisconnectNetworks {
    fn from((a, b): (String, String)) -> Self {
        Self { a, b }
    }
}

/// A request without arguments.
macro_rules! bare {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
        pub struct $name;
    )*};
}

bare! {
    /// `GET /v1/status`.
    Status;
    /// `GET /v1/networks`.
    ListNetworks;
    /// `GET /v1/endpoints`.
    ListEndpoints;
    /// `GET /v1/stats`.
    Stats;
    /// `GET /v1/node`.
    ShowNode;
    /// `DELETE /v1/node`.
    UnsetNode;
    /// `GET /v1/nodes`.
    ListNodes;
    /// `GET /v1/conntrack`.
    ListConntrack;
    /// `GET /v1/nat`.
    Nat;
    /// `GET /v1/publish`.
    ListPublished;
    /// `DELETE /v1/bench/endpoints`.
    BenchRemove;
    /// `DELETE /v1/bench/services`.
    BenchRemoveServices;
    /// `GET /v1/services`.
    ListServices;
    /// `GET /v1/service-config`.
    ShowServiceConfig;
    /// In-process only: remove everything weft made on the node.
    Teardown;
    /// `GET /v1/cluster`.
    ClusterStatus;
}

/// Declares [`Request`], its `From` impls and each request's answer type.
macro_rules! requests {
    ($($name:ident => $answer:ty,)*) => {
        /// Any request, as the engine takes it.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Request {
            $($name($name),)*
        }

        $(
            impl From<$name> for Request {
                fn from(r: $name) -> Self {
                    Request::$name(r)
                }
            }

            impl Call for $name {
                type Answer = $answer;
            }
        )*
    };
}

requests! {
    Status => StatusView,
    ListNetworks => Vec<NetworkView>,
    CreateNetwork => NetworkView,
    InspectNetwork => NetworkDetail,
    RemoveNetwork => Removed,
    ConnectNetworks => Connection,
    DisconnectNetworks => Connection,
    ListEndpoints => Vec<Endpoint>,
    AddEndpoint => Endpoint,
    RemoveEndpoint => Removed,
    Stats => StatsView,
    ShowNode => NodeView,
    SetNode => NodeView,
    UnsetNode => NodeView,
    ListNodes => Vec<NodeEntry>,
    AddNode => NodeEntry,
    RemoveNode => Removed,
    ListConntrack => Vec<ConnView>,
    GcConntrack => GcResult,
    Nat => NatView,
    ListPublished => Vec<PublishView>,
    Publish => Vec<PublishView>,
    Unpublish => Vec<PublishView>,
    LabelEndpoint => Endpoint,
    DrainEndpoint => Endpoint,
    ListServices => Vec<ServiceView>,
    CreateService => ServiceView,
    InspectService => ServiceDetail,
    RemoveService => Removed,
    ShowServiceConfig => ServiceConfig,
    SetServiceConfig => ServiceConfig,
    BenchProgram => Timing,
    BenchRemove => Timing,
    BenchServices => Timing,
    BenchRemoveServices => Timing,
    Teardown => TeardownView,
    ClusterStatus => ClusterStatusView,
    AttachContainer => Attachment,
    CheckAttachment => AttachmentCheck,
    DetachContainer => Detached,
    GcAttachments => GcAttachmentsView,
}

/// Where a request goes over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// Path and query, segments percent-encoded.
    pub path: String,
    pub body: Option<serde_json::Value>,
}

impl Request {
    /// Whether the request changes anything (reads are answered from a
    /// snapshot, changes go through the engine's queue).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Request::Status(_)
                | Request::ListNetworks(_)
                | Request::InspectNetwork(_)
                | Request::ListEndpoints(_)
                | Request::Stats(_)
                | Request::ShowNode(_)
                | Request::ListNodes(_)
                | Request::ListConntrack(_)
                | Request::Nat(_)
                | Request::ListPublished(_)
                | Request::ListServices(_)
                | Request::InspectService(_)
                | Request::ShowServiceConfig(_)
                | Request::ClusterStatus(_)
                | Request::CheckAttachment(_)
        )
    }

    /// The HTTP route; `None` for in-process-only requests.
    pub fn route(&self) -> Option<Route> {
        let json = |v: &dyn erased::ToJson| Some(v.to_json());
        let (method, path, body) = match self {
            Request::Status(_) => ("GET", "/v1/status".to_owned(), None),
            Request::ListNetworks(_) => ("GET", "/v1/networks".to_owned(), None),
            Request::CreateNetwork(r) => ("POST", "/v1/networks".to_owned(), json(r)),
            Request::InspectNetwork(r) => {
                ("GET", format!("/v1/networks/{}", segment(&r.name)), None)
            }
            Request::RemoveNetwork(r) => {
                ("DELETE", format!("/v1/networks/{}", segment(&r.name)), None)
            }
            Request::ConnectNetworks(r) => (
                "POST",
                format!("/v1/networks/{}/connect/{}", segment(&r.a), segment(&r.b)),
                None,
            ),
            Request::DisconnectNetworks(r) => (
                "POST",
                format!(
                    "/v1/networks/{}/disconnect/{}",
                    segment(&r.a),
                    segment(&r.b)
                ),
                None,
            ),
            Request::ListEndpoints(_) => ("GET", "/v1/endpoints".to_owned(), None),
            Request::AddEndpoint(r) => ("POST", "/v1/endpoints".to_owned(), json(r)),
            Request::RemoveEndpoint(r) => (
                "DELETE",
                format!("/v1/endpoints/{}", segment(&r.name)),
                None,
            ),
            Request::LabelEndpoint(r) => (
                "POST",
                format!("/v1/endpoints/{}/labels", segment(&r.name)),
                json(r),
            ),
            Request::DrainEndpoint(r) => (
                "POST",
                format!("/v1/endpoints/{}/drain", segment(&r.name)),
                json(r),
            ),
            Request::ListServices(_) => ("GET", "/v1/services".to_owned(), None),
            Request::CreateService(r) => ("POST", "/v1/services".to_owned(), json(r)),
            Request::InspectService(r) => {
                ("GET", format!("/v1/services/{}", segment(&r.name)), None)
            }
            Request::RemoveService(r) => {
                ("DELETE", format!("/v1/services/{}", segment(&r.name)), None)
            }
            Request::ShowServiceConfig(_) => ("GET", "/v1/service-config".to_owned(), None),
            Request::SetServiceConfig(r) => ("PUT", "/v1/service-config".to_owned(), json(r)),
            Request::Stats(_) => ("GET", "/v1/stats".to_owned(), None),
            Request::ShowNode(_) => ("GET", "/v1/node".to_owned(), None),
            Request::SetNode(r) => ("PUT", "/v1/node".to_owned(), json(r)),
            Request::UnsetNode(_) => ("DELETE", "/v1/node".to_owned(), None),
            Request::ListNodes(_) => ("GET", "/v1/nodes".to_owned(), None),
            Request::AddNode(r) => ("POST", "/v1/nodes".to_owned(), json(r)),
            Request::RemoveNode(r) => ("DELETE", format!("/v1/nodes/{}", segment(&r.name)), None),
            Request::ListConntrack(_) => ("GET", "/v1/conntrack".to_owned(), None),
            Request::GcConntrack(r) => (
                "POST",
                match r.older_than {
                    Some(s) => format!("/v1/conntrack/gc?older_than={s}"),
                    None => "/v1/conntrack/gc".to_owned(),
                },
                None,
            ),
            Request::Nat(_) => ("GET", "/v1/nat".to_owned(), None),
            Request::ListPublished(_) => ("GET", "/v1/publish".to_owned(), None),
            Request::Publish(r) => ("POST", "/v1/publish".to_owned(), json(r)),
            Request::Unpublish(r) => ("DELETE", "/v1/publish".to_owned(), json(r)),
            Request::BenchProgram(r) => ("POST", "/v1/bench/endpoints".to_owned(), json(r)),
            Request::BenchRemove(_) => ("DELETE", "/v1/bench/endpoints".to_owned(), None),
            Request::BenchServices(r) => ("POST", "/v1/bench/services".to_owned(), json(r)),
            Request::BenchRemoveServices(_) => ("DELETE", "/v1/bench/services".to_owned(), None),
            Request::ClusterStatus(_) => ("GET", "/v1/cluster".to_owned(), None),
            Request::Teardown(_) => return None,
            Request::AttachContainer(r) => ("POST", "/v1/attachments".to_owned(), json(r)),
            Request::CheckAttachment(r) => {
                ("GET", attachment_path(&r.container_id, &r.ifname), None)
            }
            Request::DetachContainer(r) => {
                ("DELETE", attachment_path(&r.container_id, &r.ifname), None)
            }
            Request::GcAttachments(r) => ("POST", "/v1/attachments/gc".to_owned(), json(r)),
        };
        Some(Route { method, path, body })
    }
}

mod erased {
    /// Serializes request bodies behind one `dyn`, so [`super::Request::route`]
    /// names each body once.
    pub trait ToJson {
        fn to_json(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> ToJson for T {
        fn to_json(&self) -> serde_json::Value {
            // Request bodies are plain structs of strings and numbers.
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

fn attachment_path(container_id: &str, ifname: &str) -> String {
    format!(
        "/v1/attachments/{}/{}",
        segment(container_id),
        segment(ifname)
    )
}

/// `segment` for a URL path: everything outside `A-Z a-z 0-9 - _`
/// percent-encoded, so any name (even `..` or one with a `/`) stays one
/// segment and reaches the engine's own validation.
pub fn segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_encode_names_as_one_segment() {
        let r: Request = RemoveNetwork {
            name: "a/../b c".into(),
        }
        .into();
        let route = r.route().unwrap();
        assert_eq!(route.method, "DELETE");
        assert_eq!(route.path, "/v1/networks/a%2F%2E%2E%2Fb%20c");
        let r: Request = GcConntrack {
            older_than: Some(5),
        }
        .into();
        assert_eq!(r.route().unwrap().path, "/v1/conntrack/gc?older_than=5");
        assert!(Request::from(Teardown).route().is_none());
        let r: Request = DetachContainer {
            container_id: "default-c1".into(),
            ifname: "eth0".into(),
        }
        .into();
        let route = r.route().unwrap();
        assert_eq!(
            (route.method, route.path.as_str()),
            ("DELETE", "/v1/attachments/default-c1/eth0")
        );
    }

    #[test]
    fn bodies_keep_their_wire_names() {
        let r: Request = CreateNetwork {
            name: "blue".into(),
            subnet: "10.1.0.0/24".into(),
            gateway: None,
            flood: false,
            masquerade: true,
            vni: None,
        }
        .into();
        assert_eq!(
            r.route().unwrap().body.unwrap(),
            serde_json::json!({"name": "blue", "subnet": "10.1.0.0/24", "flood": false, "masquerade": true})
        );
    }
}
