//! The split-brain guard: which role a member of a pair really takes, given the role it was told (by
//! keepalived's notify scripts, `set_role`) and what the peer's heartbeats over the data segments say.
//!
//! keepalived elects over the HA link; when that link is cut, both members are told active, and two
//! transparent bridges forwarding in parallel between the same two segments make an L2 loop. The data segments
//! are a second path between the members: every member sends heartbeats out of each data port
//! ([`super::heartbeat`]), and the guard keeps the role it was told except:
//!
//! * (a) told active, it stays standby (**held**) while it has heard an active peer within `peer_silence_ms`;
//! * (b) two actives (started at once, heartbeats lost): the one active for less time yields, ties broken by
//!   instance id (see [`Guard::yields`]);
//! * (c) told standby while active, with a peer heard: if the peer wants to be active it stops at once (its
//!   next heartbeat, sent at once, says it is standby, which releases the peer — rule (d)); otherwise it keeps
//!   forwarding until the peer wants to be active or `handover_ms` passes; with no peer heard it stops at once;
//! * (d) a held member becomes active at once on a heartbeat saying the peer is standby (the workers act on
//!   it themselves, [`Guard::released`] tells the guard), else after `peer_silence_ms` of silence.
//!
//! Pure state: the management thread feeds it the time and the peer's latest heartbeat
//! ([`Guard::step`], every few milliseconds and on every `set_role`) and publishes the answer to the workers.

use protocol::{Hold, Role};

/// The guard's settings (`[ha]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardCfg {
    pub peer_silence_ms: u64,
    pub handover_ms: u64,
    /// Two actives whose durations are this close are a tie (see [`Guard::yields`]): more than the error of
    /// estimating the peer's duration from its heartbeat (transit, millisecond rounding, idle sleeps).
    pub tie_ms: u64,
}

/// The peer's latest heartbeat, as the workers recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// When it was heard ([`crate::clock::Clock`] milliseconds).
    pub heard_at: u64,
    pub instance: u64,
    pub role: Role,
    pub desired: Role,
    /// How long it had been active when it sent the heartbeat.
    pub active_for_ms: u64,
}

/// Why the guard changed the role or its hold (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It was told so, and nothing holds it.
    Told,
    /// (a) An active peer is heard.
    PeerActive,
    /// (b) Two actives: this one yielded.
    Yielded,
    /// (c) Told standby, the peer wants to be active: handed over.
    HandedOver,
    /// (c) Told standby, still forwarding until the peer wants to be active.
    Handover,
    /// (c) The peer did not want to be active within `handover_ms`.
    HandoverTimeout,
    /// (c), (d) No peer heard within `peer_silence_ms`.
    PeerSilent,
    /// (d) The peer's heartbeat says it is standby.
    PeerStandby,
}

impl Why {
    pub const fn as_str(self) -> &'static str {
        match self {
            Why::Told => "as told",
            Why::PeerActive => "held: an active peer is heard",
            Why::Yielded => "yielded: the peer, also active, has been active for longer",
            Why::HandedOver => "handed over: the peer wants to be active",
            Why::Handover => "still forwarding until the peer wants to be active",
            Why::HandoverTimeout => "the peer did not want to be active within handover_ms",
            Why::PeerSilent => "no peer heard within peer_silence_ms",
            Why::PeerStandby => "the peer's heartbeat says it is standby",
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Guard {
    cfg: GuardCfg,
    instance: u64,
    desired: Role,
    role: Role,
    hold: Option<Hold>,
    /// When it last became active.
    active_since: u64,
    /// When it was last told standby.
    told_standby_at: u64,
}

impl Guard {
    /// A member starts as standby, told nothing yet (standby).
    pub fn new(cfg: GuardCfg, instance: u64) -> Self {
        Guard {
            cfg,
            instance,
            desired: Role::Standby,
            role: Role::Standby,
            hold: None,
            active_since: 0,
            told_standby_at: 0,
        }
    }

    /// The role it has: what the workers do.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The role it was last told.
    pub fn desired(&self) -> Role {
        self.desired
    }

    /// Why [`role`](Self::role) is not [`desired`](Self::desired).
    pub fn hold(&self) -> Option<Hold> {
        self.hold
    }

    pub fn active_since(&self) -> u64 {
        self.active_since
    }

    /// `set_role`: records the role told, then decides as [`step`](Self::step) does.
    pub fn tell(&mut self, role: Role, now: u64, peer: Option<&Peer>) -> Option<Why> {
        if role != self.desired {
            self.desired = role;
            if role == Role::Standby {
                self.told_standby_at = now;
            }
        }
        self.step(now, peer)
    }

    /// The workers made this held member active at `at`, on a heartbeat saying the peer is standby (rule (d)
    /// at once, without waiting for the next step).
    pub fn released(&mut self, at: u64) {
        if self.role == Role::Standby && self.hold == Some(Hold::PeerActive) {
            self.role = Role::Active;
            self.hold = None;
            self.active_since = at;
        }
    }

    /// Decides the role at `now` given the peer's latest heartbeat; answers why, when the role or the hold
    /// changed.
    pub fn step(&mut self, now: u64, peer: Option<&Peer>) -> Option<Why> {
        let heard = peer.filter(|p| {
            p.instance != self.instance
                && now.saturating_sub(p.heard_at) <= self.cfg.peer_silence_ms
        });
        let was_held = self.hold.is_some();
        let (role, hold, why) = match (self.desired, self.role) {
            (Role::Active, Role::Standby) => match heard {
                Some(p) if p.role == Role::Active => {
                    (Role::Standby, Some(Hold::PeerActive), Why::PeerActive)
                }
                Some(_) if was_held => (Role::Active, None, Why::PeerStandby),
                None if was_held => (Role::Active, None, Why::PeerSilent),
                _ => (Role::Active, None, Why::Told),
            },
            (Role::Active, Role::Active) => match heard {
                Some(p) if p.role == Role::Active && self.yields(now, p) => {
                    (Role::Standby, Some(Hold::PeerActive), Why::Yielded)
                }
                _ => (Role::Active, None, Why::Told),
            },
            (Role::Standby, Role::Active) => match heard {
                None => (Role::Standby, None, Why::PeerSilent),
                Some(p) if p.desired == Role::Active => (Role::Standby, None, Why::HandedOver),
                Some(_) if now.saturating_sub(self.told_standby_at) >= self.cfg.handover_ms => {
                    (Role::Standby, None, Why::HandoverTimeout)
                }
                Some(_) => (Role::Active, Some(Hold::Handover), Why::Handover),
            },
            (Role::Standby, Role::Standby) => (Role::Standby, None, Why::Told),
        };
        let changed = role != self.role || hold != self.hold;
        if role == Role::Active && self.role == Role::Standby {
            self.active_since = now;
        }
        self.role = role;
        self.hold = hold;
        changed.then_some(why)
    }

    /// Rule (b), both members active: whether this one yields to `peer`. The peer's duration now is estimated
    /// from its heartbeat (its duration then, plus the time since it was heard: short by the transit). The
    /// member with the lower instance id yields unless it has been active for longer by more than `tie_ms`;
    /// the other yields only if the peer has been active for longer. The thresholds differ by `tie_ms`, more
    /// than the estimates' error, so the two never both stay active; they may both yield (each decided before
    /// the other's heartbeat saying standby arrived), and then both become active again and decide anew.
    fn yields(&self, now: u64, peer: &Peer) -> bool {
        let own = now.saturating_sub(self.active_since);
        let theirs = peer.active_for_ms + now.saturating_sub(peer.heard_at);
        if self.instance < peer.instance {
            own <= theirs + self.cfg.tie_ms
        } else {
            own < theirs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: GuardCfg = GuardCfg {
        peer_silence_ms: 300,
        handover_ms: 1000,
        tie_ms: 100,
    };

    fn peer(heard_at: u64, role: Role, desired: Role, active_for_ms: u64) -> Peer {
        Peer {
            heard_at,
            instance: 2,
            role,
            desired,
            active_for_ms,
        }
    }

    fn state(g: &Guard) -> (Role, Role, Option<Hold>) {
        (g.desired(), g.role(), g.hold())
    }

    use Role::{Active, Standby};

    #[test]
    fn without_a_peer_the_role_is_the_one_told() {
        let mut g = Guard::new(CFG, 1);
        assert_eq!(state(&g), (Standby, Standby, None));
        assert_eq!(g.tell(Active, 10, None), Some(Why::Told));
        assert_eq!(state(&g), (Active, Active, None));
        assert_eq!(g.step(500, None), None);
        // (c) no peer heard: standby at once.
        assert_eq!(g.tell(Standby, 600, None), Some(Why::PeerSilent));
        assert_eq!(state(&g), (Standby, Standby, None));
        // A peer heard too long ago is no peer.
        let old = peer(0, Active, Active, 0);
        assert_eq!(g.tell(Active, 700, Some(&old)), Some(Why::Told));
        assert_eq!(g.role(), Active);
    }

    #[test]
    fn a_member_told_active_is_held_while_an_active_peer_is_heard_and_freed_by_its_silence() {
        let mut g = Guard::new(CFG, 1);
        let p = peer(100, Active, Active, 5000);
        assert_eq!(g.tell(Active, 100, Some(&p)), Some(Why::PeerActive));
        assert_eq!(state(&g), (Active, Standby, Some(Hold::PeerActive)));
        // (a) still heard: still held.
        let p = peer(350, Active, Active, 5250);
        assert_eq!(g.step(400, Some(&p)), None);
        // (d) silent for peer_silence_ms (dead, or its links down): active.
        assert_eq!(g.step(650, Some(&p)), None);
        assert_eq!(g.step(651, Some(&p)), Some(Why::PeerSilent));
        assert_eq!(state(&g), (Active, Active, None));
        assert_eq!(g.active_since(), 651);
    }

    #[test]
    fn a_held_member_becomes_active_on_a_heartbeat_saying_the_peer_is_standby() {
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 100, Some(&peer(100, Active, Active, 0)));
        assert_eq!(g.hold(), Some(Hold::PeerActive));
        assert_eq!(
            g.step(150, Some(&peer(140, Standby, Standby, 0))),
            Some(Why::PeerStandby)
        );
        assert_eq!(state(&g), (Active, Active, None));
        // The workers may act first: the guard learns it and keeps the role.
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 100, Some(&peer(100, Active, Active, 0)));
        g.released(145);
        assert_eq!(state(&g), (Active, Active, None));
        assert_eq!(g.active_since(), 145);
        assert_eq!(g.step(150, Some(&peer(140, Standby, Standby, 0))), None);
        // Released only from that hold.
        let mut g = Guard::new(CFG, 1);
        g.released(10);
        assert_eq!(state(&g), (Standby, Standby, None));
    }

    #[test]
    fn two_actives_the_one_active_for_less_time_yields() {
        // Active since 100; the peer had been active 10 s when heard at 1000.
        let mut g = Guard::new(CFG, 9);
        g.tell(Active, 100, None);
        assert_eq!(
            g.step(1000, Some(&peer(1000, Active, Active, 10_000))),
            Some(Why::Yielded)
        );
        assert_eq!(state(&g), (Active, Standby, Some(Hold::PeerActive)));
        // The older one stays, whatever the instance ids.
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        assert_eq!(
            g.step(10_000, Some(&peer(10_000, Active, Active, 500))),
            None
        );
        assert_eq!(g.role(), Active);
    }

    #[test]
    fn two_actives_within_the_tie_margin_the_lower_instance_yields_and_they_never_both_stay() {
        // Active for 1000 ms each, as far as each can tell.
        let (mut low, mut high) = (Guard::new(CFG, 1), Guard::new(CFG, 2));
        low.tell(Active, 0, None);
        high.tell(Active, 0, None);
        let seen_by_low = Peer {
            instance: 2,
            ..peer(1000, Active, Active, 1000)
        };
        let seen_by_high = Peer {
            instance: 1,
            ..peer(1000, Active, Active, 1000)
        };
        assert_eq!(low.step(1000, Some(&seen_by_low)), Some(Why::Yielded));
        assert_eq!(high.step(1000, Some(&seen_by_high)), None);
        // For every true difference of durations and every estimate short by up to 5 ms (transit, rounding),
        // at least one of the two yields.
        for d in -300i64..=300 {
            for (e_low, e_high) in [(0, 0), (5, 0), (0, 5), (5, 5)] {
                let (a, b) = (1000 + d.max(0) as u64, 1000 + (-d).max(0) as u64);
                let (mut low, mut high) = (Guard::new(CFG, 1), Guard::new(CFG, 2));
                let now = 5000;
                low.tell(Active, now - a, None);
                high.tell(Active, now - b, None);
                let low_sees = Peer {
                    instance: 2,
                    ..peer(now, Active, Active, b - e_low)
                };
                let high_sees = Peer {
                    instance: 1,
                    ..peer(now, Active, Active, a - e_high)
                };
                low.step(now, Some(&low_sees));
                high.step(now, Some(&high_sees));
                assert!(
                    low.role() == Standby || high.role() == Standby,
                    "both stay active: d {d}, errors {e_low} {e_high}"
                );
            }
        }
    }

    #[test]
    fn told_standby_hands_over_when_the_peer_wants_to_be_active() {
        // The peer already wants to be active (held by this one): stop at once.
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        let wants = peer(990, Standby, Active, 0);
        assert_eq!(g.tell(Standby, 1000, Some(&wants)), Some(Why::HandedOver));
        assert_eq!(state(&g), (Standby, Standby, None));

        // The peer does not want it yet: keep forwarding until it does.
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        let idle = peer(990, Standby, Standby, 0);
        assert_eq!(g.tell(Standby, 1000, Some(&idle)), Some(Why::Handover));
        assert_eq!(state(&g), (Standby, Active, Some(Hold::Handover)));
        assert_eq!(g.step(1100, Some(&peer(1090, Standby, Standby, 0))), None);
        assert_eq!(
            g.step(1200, Some(&peer(1195, Standby, Active, 0))),
            Some(Why::HandedOver)
        );
        assert_eq!(state(&g), (Standby, Standby, None));
    }

    #[test]
    fn told_standby_stops_after_handover_ms_or_when_the_peer_falls_silent() {
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        g.tell(Standby, 1000, Some(&peer(990, Standby, Standby, 0)));
        assert_eq!(g.step(1999, Some(&peer(1990, Standby, Standby, 0))), None);
        assert_eq!(
            g.step(2000, Some(&peer(1990, Standby, Standby, 0))),
            Some(Why::HandoverTimeout)
        );
        assert_eq!(state(&g), (Standby, Standby, None));

        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        g.tell(Standby, 1000, Some(&peer(990, Standby, Standby, 0)));
        assert_eq!(
            g.step(1300, Some(&peer(990, Standby, Standby, 0))),
            Some(Why::PeerSilent)
        );
        assert_eq!(g.role(), Standby);
        // Told active again meanwhile: the hand-over is off.
        let mut g = Guard::new(CFG, 1);
        g.tell(Active, 0, None);
        g.tell(Standby, 1000, Some(&peer(990, Standby, Standby, 0)));
        assert_eq!(
            g.tell(Active, 1100, Some(&peer(1090, Standby, Standby, 0))),
            Some(Why::Told)
        );
        assert_eq!(state(&g), (Active, Active, None));
        assert_eq!(g.active_since(), 0);
    }

    #[test]
    fn its_own_heartbeats_are_no_peer() {
        let mut g = Guard::new(CFG, 7);
        let me = Peer {
            instance: 7,
            ..peer(0, Active, Active, 0)
        };
        assert_eq!(g.tell(Active, 0, Some(&me)), Some(Why::Told));
        assert_eq!(g.role(), Active);
    }
}
