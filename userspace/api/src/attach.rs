//! Attachments: endpoints a container runtime asks for through CNI, known
//! by the runtime's container id and interface name rather than by a weft
//! name. One request makes the endpoint with its published ports (all or
//! nothing), one removes it (succeeding when there is nothing to remove),
//! one checks it against the kernel, one collects those the runtime no
//! longer knows.
//!
//! | request | route | answer |
//! |---|---|---|
//! | [`AttachContainer`] | `POST /v1/attachments` | 201 [`Attachment`] |
//! | [`CheckAttachment`] | `GET /v1/attachments/{container_id}/{ifname}` | [`AttachmentCheck`] |
//! | [`DetachContainer`] | `DELETE /v1/attachments/{container_id}/{ifname}` | [`Detached`] |
//! | [`GcAttachments`] | `POST /v1/attachments/gc` | [`GcAttachmentsView`] |

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{mac::Mac, records::Endpoint, views::PublishView};

/// `POST /v1/attachments`: plug a container into a network for a runtime.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachContainer {
    pub network: String,
    /// The container's network namespace: an absolute path
    /// (`/run/netns/...`, `/proc/PID/ns/net`) or a name in /run/netns.
    pub netns: String,
    /// The runtime's container id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The interface inside the container (`CNI_IFNAME`).
    pub ifname: String,
    /// The CNI network configuration's name (GC is scoped by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// DNS names for the container (kept on the endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Ports to publish, as `weft publish` specs
    /// (`[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// An attachment, named the runtime's way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    pub container_id: String,
    pub ifname: String,
}

/// `DELETE /v1/attachments/{container_id}/{ifname}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetachContainer {
    pub container_id: String,
    pub ifname: String,
}

impl From<(String, String)> for DetachContainer {
    fn from((container_id, ifname): (String, String)) -> Self {
        Self {
            container_id,
            ifname,
        }
    }
}

/// `GET /v1/attachments/{container_id}/{ifname}`: the attachment checked
/// against the kernel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckAttachment {
    pub container_id: String,
    pub ifname: String,
}

impl From<(String, String)> for CheckAttachment {
    fn from((container_id, ifname): (String, String)) -> Self {
        Self {
            container_id,
            ifname,
        }
    }
}

/// `POST /v1/attachments/gc`: removes the attachments made through CNI
/// network configuration `cni_network` that are not in `valid`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GcAttachments {
    pub cni_network: String,
    #[serde(default)]
    pub valid: Vec<AttachmentRef>,
}

/// An attached endpoint with what a runtime's result needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub endpoint: Endpoint,
    /// The container's default gateway.
    pub gateway: Ipv4Addr,
    /// The prefix length of the container's address.
    pub prefix_len: u8,
    /// The MAC of the host end of the veth (the network's gateway MAC).
    pub host_mac: Mac,
    /// Ports published to it.
    #[serde(default)]
    pub published: Vec<PublishView>,
}

/// What a check found: `problems` is empty when the kernel holds the
/// attachment exactly as weft made it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentCheck {
    pub attachment: Attachment,
    pub problems: Vec<String>,
}

/// The answer to a detach: the endpoint removed, if there was one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Detached {
    pub removed: Option<String>,
}

/// What a GC removed (endpoint names).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcAttachmentsView {
    pub removed: Vec<String>,
}
