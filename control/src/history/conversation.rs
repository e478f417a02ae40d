//! A conversation-bucket: every flow event of one conversation within one time bucket, aggregated. What the flow
//! history stores, and what the map, rule suggestion and the historical what-if read.

use std::net::IpAddr;
use std::sync::Arc;

use protocol::Verdict;
use serde::{Deserialize, Serialize};

/// What identifies a conversation: who talked to whom, on which service, through which gateway, and how the
/// policy judged it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConversationKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port for TCP/UDP/SCTP; for ICMP and ICMPv6 `type << 8 | code`; 0 otherwise.
    pub service: u16,
    /// Outer VLAN id; 0 when untagged.
    pub vlan: u16,
    pub verdict: Verdict,
    /// The deciding rule's id; 0 for the default action.
    pub rule_id: u32,
    pub policy_version: u32,
    /// The gateway that reported it (absent: stored before the history kept gateways, or not from a gateway).
    pub gateway: Option<Arc<str>>,
    /// The tier that decided (absent: a v1 policy, the policy's default, or stored before the history kept
    /// tiers).
    pub tier: Option<Arc<str>>,
}

/// One conversation within one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub key: ConversationKey,
    /// Start of the bucket, Unix milliseconds.
    pub bucket_unix_ms: u64,
    /// First and last event seen, Unix milliseconds.
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    /// Flows started (new or denied events).
    pub flows: u64,
    /// Original direction, reply direction (from closed flows).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}
