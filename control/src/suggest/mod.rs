//! Rules suggested from what was seen, and every draft proven against history (what-if). Pure functions over
//! [`Conversation`]s and policies, judged with the reference evaluator [`policy::Policy::evaluate`]; no I/O.
//!
//! Both engines evaluate each distinct observed tuple — (source, destination, VLAN, protocol, port or ICMP
//! type/code) — once, whatever the number of buckets and verdicts it was seen under.
//!
//! Conversations do not keep source ports, so a service that constrains `source_ports` never matches a
//! conversation here (the evaluator sees source port 0).

mod source;
mod suggestion;
mod whatif;

use std::collections::HashMap;
use std::net::IpAddr;

use policy::{proto, Flow};
use serde::Serialize;

use crate::history::{Conversation, ConversationKey};

pub use source::{ConversationSource, HistorySource, RingSource, SourceError, Window};
pub use suggestion::{
    suggest, with_suggestion, Coverage, Grouping, Scope, SuggestError, SuggestOptions,
    SuggestedRule, Suggestion,
};
pub use whatif::{what_if, Change, RuleChange, WhatIf};

/// A conversation without its verdict: what the policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 when untagged.
    pub vlan: u16,
    pub proto: u8,
    /// Destination port, or ICMP `type << 8 | code`.
    pub service: u16,
}

impl Tuple {
    pub fn of(k: &ConversationKey) -> Tuple {
        Tuple {
            src: k.src,
            dst: k.dst,
            vlan: k.vlan,
            proto: k.proto,
            service: k.service,
        }
    }

    /// The flow the reference evaluator sees (source port unknown: 0).
    pub fn flow(&self) -> Flow {
        let vlan = (self.vlan != 0).then_some(self.vlan);
        match self.proto {
            proto::ICMP | proto::ICMPV6 => Flow::new(
                self.src,
                self.dst,
                vlan,
                self.proto,
                self.service >> 8,
                self.service & 0xff,
            ),
            _ => Flow::new(self.src, self.dst, vlan, self.proto, 0, self.service),
        }
    }
}

/// What the conversations of one tuple add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// Conversation-buckets.
    pub buckets: u64,
    pub flows: u64,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
}

impl Seen {
    fn of(c: &Conversation) -> Seen {
        Seen {
            buckets: 1,
            flows: c.flows,
            first_unix_ms: c.first_unix_ms,
            last_unix_ms: c.last_unix_ms,
        }
    }

    fn add(&mut self, o: &Seen) {
        self.buckets += o.buckets;
        self.flows += o.flows;
        self.first_unix_ms = self.first_unix_ms.min(o.first_unix_ms);
        self.last_unix_ms = self.last_unix_ms.max(o.last_unix_ms);
    }
}

/// Conversations indexed by `K`, their buckets added up.
fn index<K: std::hash::Hash + Eq>(
    conversations: &[Conversation],
    mut key: impl FnMut(&Conversation) -> Option<K>,
) -> HashMap<K, Seen> {
    let mut out: HashMap<K, Seen> = HashMap::new();
    for c in conversations {
        if let Some(k) = key(c) {
            let seen = Seen::of(c);
            out.entry(k).and_modify(|s| s.add(&seen)).or_insert(seen);
        }
    }
    out
}

#[cfg(test)]
mod tests;
