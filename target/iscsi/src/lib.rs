//! The iSCSI target (RFC 7143).
//!
//! Sans-I/O state machines (bytes in, events and bytes out), with no clock or socket of their
//! own, so they are tested and fuzzed without a network:
//!
//! * [`pdu`]: basic header segment, additional header segments, data segment, padding and
//!   CRC32C digests; encoder and decoder for every opcode.
//! * [`text`]: `key=value` text (login and text requests), with RFC 7143's value types.
//! * [`chap`]: CHAP (one-way and mutual).
//! * [`login`]: the login phase (security and operational negotiation, discovery and normal
//!   sessions, TSIH allocation, session reinstatement, connection joins).
//! * [`session`]: sessions shared by their connections (`Send + Sync`): CmdSN window, negotiated
//!   parameters, the nexus.
//! * [`conn`]: one connection: login, then full-feature phase (SCSI commands and data,
//!   R2T, NOP, task management, text, logout, reject, async messages, timers).
//! * [`server`]: the driver that runs connections on the engine's reactors (sockets, bdev I/O
//!   through `basalt-scsi`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod chap;
pub mod conn;
pub mod login;
pub mod pdu;
pub mod server;
pub mod session;
pub mod text;

use std::net::SocketAddr;
use std::sync::Arc;

/// CHAP credentials: the name and secret one side proves it knows.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    /// CHAP_N.
    pub user: String,
    /// The shared secret (12 to 16 bytes recommended, RFC 7143 §12.1.3 asks for at least 96 bits).
    pub secret: String,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Who may log in to a target node (or to discovery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Initiator names allowed (exact match, case-insensitive per RFC 3722 normalisation).
    /// `None`: every initiator. `Some(empty)`: nobody.
    pub initiators: Option<Vec<String>>,
    /// When set, the initiator must authenticate with CHAP as this user and secret.
    pub chap: Option<ChapCredentials>,
    /// When set too, mutual CHAP: the target answers the initiator's challenge as this user.
    pub mutual_chap: Option<ChapCredentials>,
}

impl Access {
    /// True when `initiator` is on the allow-list.
    pub fn allows(&self, initiator: &str) -> bool {
        match &self.initiators {
            None => true,
            Some(list) => list.iter().any(|i| i.eq_ignore_ascii_case(initiator)),
        }
    }
}

/// One iSCSI target node as the state machines see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNode {
    /// iSCSI name, e.g. `iqn.2026-11.org.basalt:volume-<uuid>`.
    pub name: String,
    /// TargetAlias, if any.
    pub alias: Option<String>,
    /// LUNs it exposes (REPORT LUNS lists them).
    pub luns: Vec<u64>,
    /// Login policy.
    pub access: Access,
}

/// The targets a portal serves, looked up at login and by SendTargets. Changes at runtime
/// (exports added and removed on a running daemon), so answers are fetched each time.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// The target node called `name` (case-insensitive), if it exists.
    fn target(&self, name: &str) -> Option<Arc<TargetNode>>;
    /// Every target node, for SendTargets=All (filtered by the caller through [`Access::allows`]).
    fn targets(&self) -> Vec<Arc<TargetNode>>;
    /// Policy for discovery sessions (CHAP for discovery is optional).
    fn discovery_access(&self) -> Access;
}

/// Where a connection arrived and what the portal group advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// Target portal group tag (TargetPortalGroupTag, reported in the login response).
    pub tpgt: u16,
    /// Addresses of the group's portals (TargetAddress in SendTargets), e.g. `127.0.0.1:3260`.
    pub addresses: Vec<SocketAddr>,
}
