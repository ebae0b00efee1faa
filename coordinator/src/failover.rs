//! Which coordinator is primary: a pure state machine per coordinator,
//! driven by the time and by what it hears from its peer.
//!
//! Rules:
//! - Every coordinator starts as STANDBY, with the highest epoch it knows
//!   (from its peer or the nodes' heartbeats), and assumes a primary was
//!   heard at start-up.
//! - A STANDBY that has heard no PRIMARY for `failover_after_ms` becomes
//!   PRIMARY with an epoch one above the highest it has seen.
//! - Hearing a PRIMARY whose claim is stronger than its own makes a
//!   coordinator STANDBY and adopts that epoch. A claim is (epoch, whether it
//!   is the configured primary): higher epoch first, and at equal epochs the
//!   configured primary wins, so two coordinators that both took over at once
//!   settle on one.
//! - A PRIMARY never steps down for a weaker claim: the peer will step down
//!   when it hears this one. A PRIMARY that sees a higher epoch at a node
//!   (nodes remember the highest, and refuse writes from older ones) steps
//!   down: it was deposed while it could not hear its peer.
//!
//! So a returning old primary, which starts as STANDBY and hears the new
//! primary's higher epoch, stays STANDBY. During a partition between the
//! coordinators both can be PRIMARY, with different epochs; nodes accept
//! decisions only from the highest epoch they have seen (docs/consistency.md,
//! issue 4).

/// The roles of `opticache.v1.Role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
}

/// What a coordinator says about itself to its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub role: Role,
    pub epoch: u64,
    pub configured_primary: bool,
}

/// One coordinator's view.
#[derive(Clone, Debug)]
pub struct Failover {
    role: Role,
    epoch: u64,
    /// The highest epoch seen anywhere (peer, nodes).
    highest_epoch: u64,
    /// When a PRIMARY (the peer, or this coordinator itself) was last known
    /// to be alive.
    primary_seen_ms: u64,
    failover_after_ms: u64,
    configured_primary: bool,
}

impl Failover {
    /// A coordinator starting at `now_ms` as STANDBY.
    pub fn new(now_ms: u64, failover_after_ms: u64, configured_primary: bool, known_epoch: u64) -> Self {
        Self {
            role: Role::Standby,
            epoch: known_epoch,
            highest_epoch: known_epoch,
            primary_seen_ms: now_ms,
            failover_after_ms,
            configured_primary,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What to tell the peer.
    pub fn state(&self) -> PeerState {
        PeerState { role: self.role, epoch: self.epoch, configured_primary: self.configured_primary }
    }

    /// An epoch seen elsewhere (a node's heartbeat answer or refusal). A
    /// primary that sees a higher epoch than its own was deposed while it
    /// could not hear its peer: it steps down. Either way the coordinator
    /// then carries that epoch, as a standby adopts its primary's, so the
    /// writes it forwards are not fenced. Returns the new role if it changed.
    pub fn observe_epoch(&mut self, epoch: u64) -> Option<Role> {
        self.highest_epoch = self.highest_epoch.max(epoch);
        if epoch <= self.epoch {
            return None;
        }
        self.epoch = epoch;
        match self.role {
            Role::Primary => {
                self.role = Role::Standby;
                Some(Role::Standby)
            }
            Role::Standby => None,
        }
    }

    /// The clock moved to `now_ms`; returns the new role if it changed.
    pub fn tick(&mut self, now_ms: u64) -> Option<Role> {
        match self.role {
            Role::Primary => {
                self.primary_seen_ms = now_ms;
                None
            }
            Role::Standby if now_ms.saturating_sub(self.primary_seen_ms) >= self.failover_after_ms => {
                self.epoch = self.highest_epoch + 1;
                self.highest_epoch = self.epoch;
                self.role = Role::Primary;
                self.primary_seen_ms = now_ms;
                Some(Role::Primary)
            }
            Role::Standby => None,
        }
    }

    /// The peer said `peer` at `now_ms`; returns the new role if it changed.
    pub fn on_peer(&mut self, now_ms: u64, peer: PeerState) -> Option<Role> {
        self.highest_epoch = self.highest_epoch.max(peer.epoch);
        if peer.role != Role::Primary {
            return None;
        }
        let theirs = (peer.epoch, peer.configured_primary);
        let ours = (self.epoch, self.configured_primary);
        match self.role {
            Role::Standby => {
                self.epoch = self.epoch.max(peer.epoch);
                self.primary_seen_ms = now_ms;
                None
            }
            Role::Primary if theirs > ours => {
                self.role = Role::Standby;
                self.epoch = peer.epoch;
                self.primary_seen_ms = now_ms;
                Some(Role::Standby)
            }
            Role::Primary => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILOVER_MS: u64 = 1_000;
    const STEP_MS: u64 = 50;

    /// Two coordinators exchanging their states every step over a network
    /// that can be cut, with either one able to crash and restart.
    struct Sim {
        now_ms: u64,
        nodes: [Option<Failover>; 2],
        connected: bool,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                now_ms: 0,
                nodes: [Some(Failover::new(0, FAILOVER_MS, true, 0)), Some(Failover::new(0, FAILOVER_MS, false, 0))],
                connected: true,
            }
        }

        fn step(&mut self) {
            self.now_ms += STEP_MS;
            for n in self.nodes.iter_mut().flatten() {
                n.tick(self.now_ms);
            }
            if self.connected {
                let states: Vec<Option<PeerState>> =
                    self.nodes.iter().map(|n| n.as_ref().map(Failover::state)).collect();
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    if let (Some(n), Some(peer)) = (n.as_mut(), states[1 - i]) {
                        n.on_peer(self.now_ms, peer);
                    }
                }
            }
        }

        fn run_ms(&mut self, ms: u64) {
            for _ in 0..ms / STEP_MS {
                self.step();
            }
        }

        fn roles(&self) -> [Option<(Role, u64)>; 2] {
            [0, 1].map(|i| self.nodes[i].as_ref().map(|n| (n.role(), n.epoch())))
        }

        fn primaries(&self) -> usize {
            self.nodes.iter().flatten().filter(|n| n.role() == Role::Primary).count()
        }
    }

    #[test]
    fn one_primary_emerges_at_start_and_it_is_the_configured_one_when_both_race() {
        let mut sim = Sim::new();
        sim.run_ms(FAILOVER_MS + 2 * STEP_MS);
        assert_eq!(sim.roles(), [Some((Role::Primary, 1)), Some((Role::Standby, 1))]);
    }

    #[test]
    fn the_standby_takes_over_within_the_failover_time_and_a_returning_primary_steps_aside() {
        let mut sim = Sim::new();
        sim.run_ms(2 * FAILOVER_MS);
        sim.nodes[0] = None; // the primary dies
        let died_at = sim.now_ms;
        while sim.roles()[1] != Some((Role::Primary, 2)) {
            sim.step();
            assert!(sim.now_ms - died_at <= FAILOVER_MS + STEP_MS, "no takeover in time: {:?}", sim.roles());
        }
        // The old primary returns with what it knew, and must not take over.
        sim.nodes[0] = Some(Failover::new(sim.now_ms, FAILOVER_MS, true, 1));
        sim.run_ms(5 * FAILOVER_MS);
        assert_eq!(sim.roles(), [Some((Role::Standby, 2)), Some((Role::Primary, 2))]);
    }

    #[test]
    fn a_partition_can_make_two_primaries_and_healing_leaves_the_higher_epoch() {
        let mut sim = Sim::new();
        sim.run_ms(2 * FAILOVER_MS);
        sim.connected = false;
        sim.run_ms(2 * FAILOVER_MS);
        assert_eq!(sim.primaries(), 2, "documented: a partition between coordinators splits them");
        assert_eq!(sim.roles(), [Some((Role::Primary, 1)), Some((Role::Primary, 2))]);
        sim.connected = true;
        sim.run_ms(2 * STEP_MS);
        assert_eq!(sim.roles(), [Some((Role::Standby, 2)), Some((Role::Primary, 2))]);
    }

    #[test]
    fn a_primary_that_sees_a_higher_epoch_at_a_node_steps_down() {
        let mut f = Failover::new(0, FAILOVER_MS, true, 0);
        assert_eq!(f.tick(FAILOVER_MS), Some(Role::Primary));
        assert_eq!(f.observe_epoch(1), None, "its own epoch");
        assert_eq!(f.observe_epoch(2), Some(Role::Standby));
        assert_eq!(f.epoch(), 2);
    }

    #[test]
    fn an_epoch_seen_at_a_node_is_overtaken_by_a_new_primary() {
        let mut f = Failover::new(0, FAILOVER_MS, false, 0);
        f.observe_epoch(41);
        assert_eq!(f.tick(FAILOVER_MS), Some(Role::Primary));
        assert_eq!(f.epoch(), 42);
    }

    #[test]
    fn a_standby_carries_the_highest_epoch_a_node_has_seen_and_never_goes_back() {
        let mut f = Failover::new(0, FAILOVER_MS, false, 3);
        assert_eq!(f.observe_epoch(7), None, "a standby has no role to lose");
        assert_eq!((f.role(), f.epoch()), (Role::Standby, 7));
        assert_eq!(f.observe_epoch(5), None);
        assert_eq!(f.epoch(), 7, "an older epoch changes nothing");
    }
}
