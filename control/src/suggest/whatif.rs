//! What-if: observed conversations replayed through a draft with the reference evaluator.

use std::collections::{BTreeMap, HashMap};

use policy::{Decision, Policy};
use protocol::Verdict;
use serde::Serialize;

use super::{index, Seen, Tuple};
use crate::history::Conversation;

/// The verdict the dataplane would give under `decision`.
pub(super) fn verdict(decision: &Decision) -> Verdict {
    match decision.action() {
        _ if decision.would_deny() => Verdict::WouldDeny,
        policy::Action::Allow => Verdict::Allow,
        policy::Action::Deny | policy::Action::Pass => Verdict::Deny,
        policy::Action::Reject => Verdict::Reject,
    }
}

/// The deciding rule's id; 0 for the policy's default and for a tier's default.
pub(super) fn rule_id(decision: &Decision) -> u32 {
    match decision {
        Decision::Rule { id, .. } => *id,
        Decision::Default { .. } | Decision::TierDefault { .. } => 0,
    }
}

/// The name of the tier that gives `decision` under a tiered (v2) draft.
pub(super) fn draft_tier(draft: &Policy, decision: &Decision) -> Option<String> {
    (draft.document().format == policy::Format::V2)
        .then(|| draft.decision_tier(decision).map(str::to_string))
        .flatten()
}

/// One observed tuple whose verdict the draft changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    #[serde(flatten)]
    pub tuple: Tuple,
    /// As observed, and the rule that decided it (0: the default).
    pub observed: Verdict,
    pub observed_rule_id: u32,
    /// The tier that decided as observed (its rule, or its deny default); absent under a v1 policy, for the
    /// policy's default, and for conversations stored before the history kept tiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_tier: Option<String>,
    /// Under the draft.
    pub draft: Verdict,
    pub draft_rule_id: u32,
    /// The tier that decides under a tiered draft (its rule, or its deny default); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_tier: Option<String>,
    #[serde(flatten)]
    pub seen: Seen,
}

/// Changes counted per (observed rule, draft rule) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    pub observed_rule_id: u32,
    pub draft_rule_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_tier: Option<String>,
    pub conversations: u64,
    pub flows: u64,
}

/// One direction of change: totals, per deciding rules, and the changes with the most flows first (at most
/// the limit asked for; `truncated` says whether some were left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSet {
    pub conversations: u64,
    pub flows: u64,
    pub by_rule: Vec<RuleChange>,
    pub list: Vec<Change>,
    pub truncated: bool,
}

/// What a draft would have done to the observed conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    /// Distinct observed conversations (tuple and observed verdict) and their flows.
    pub conversations: u64,
    pub flows: u64,
    /// Allowed as observed, not allowed by the draft (denied, rejected, or only passed by monitor mode).
    pub newly_denied: ChangeSet,
    /// Denied, rejected or would-denied as observed, allowed by the draft.
    pub newly_allowed: ChangeSet,
}

/// Replays `conversations` through `draft`; each distinct tuple is evaluated once.
pub fn what_if(conversations: &[Conversation], draft: &Policy, limit: usize) -> WhatIf {
    let observed = index(conversations, |c| {
        Some((
            Tuple::of(&c.key),
            c.key.verdict,
            c.key.rule_id,
            c.key.tier.as_deref().map(str::to_string),
        ))
    });
    let mut decisions: HashMap<Tuple, Decision> = HashMap::new();
    let mut out = WhatIf::default();
    let mut denied = Vec::new();
    let mut allowed = Vec::new();
    for ((tuple, observed, observed_rule_id, observed_tier), seen) in observed {
        out.conversations += 1;
        out.flows += seen.flows;
        let decision = *decisions
            .entry(tuple)
            .or_insert_with(|| draft.evaluate(&tuple.flow()));
        let draft_verdict = verdict(&decision);
        let change = Change {
            tuple,
            observed,
            observed_rule_id,
            observed_tier,
            draft: draft_verdict,
            draft_rule_id: rule_id(&decision),
            draft_tier: draft_tier(draft, &decision),
            seen,
        };
        match (observed == Verdict::Allow, draft_verdict == Verdict::Allow) {
            (true, false) => denied.push(change),
            (false, true) => allowed.push(change),
            _ => {}
        }
    }
    out.newly_denied = change_set(denied, limit);
    out.newly_allowed = change_set(allowed, limit);
    out
}

fn change_set(mut changes: Vec<Change>, limit: usize) -> ChangeSet {
    let mut by_rule: BTreeMap<(u32, u32, Option<String>), (u64, u64)> = BTreeMap::new();
    let mut set = ChangeSet::default();
    for c in &changes {
        set.conversations += 1;
        set.flows += c.seen.flows;
        let e = by_rule
            .entry((c.observed_rule_id, c.draft_rule_id, c.draft_tier.clone()))
            .or_default();
        e.0 += 1;
        e.1 += c.seen.flows;
    }
    set.by_rule = by_rule
        .into_iter()
        .map(
            |((observed_rule_id, draft_rule_id, draft_tier), (conversations, flows))| RuleChange {
                observed_rule_id,
                draft_rule_id,
                draft_tier,
                conversations,
                flows,
            },
        )
        .collect();
    changes.sort_unstable_by(|a, b| {
        b.seen
            .flows
            .cmp(&a.seen.flows)
            .then_with(|| a.tuple.cmp(&b.tuple))
            .then_with(|| a.observed_rule_id.cmp(&b.observed_rule_id))
            .then_with(|| a.observed.as_str().cmp(b.observed.as_str()))
    });
    set.truncated = changes.len() > limit;
    changes.truncate(limit);
    set.list = changes;
    set
}
