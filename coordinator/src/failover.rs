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

/// Feeds an epoch seen at `source` (a node's heartbeat answer or refusal)
/// into `failover`, logging a step-down; returns the coordinator's epoch afterwards.
pub fn learn_epoch(failover: &std::sync::Mutex<Failover>, epoch: u64, source: &str) -> u64 {
    let mut f = failover.lock().expect("failover lock");
    if let Some(role) = f.observe_epoch(epoch) {
        tracing::warn!(role = ?role, epoch, source, "a node has seen a newer epoch: stepping down");
    }
    f.epoch()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILOVER_MS: u64 = 1_000;
    const STEP_MS: u64 = 50;

    /// Two coordinators sending their states to each other every step over
    /// a simulated network: each message may be dropped (`drop_percent`) or
    /// delayed (up to `max_delay_ms`, so messages also arrive out of order),
    /// and a partition drops everything; either coordinator can crash and
    /// restart. Randomness comes from a seeded generator, so a failing seed
    /// replays exactly.
    struct Sim {
        now_ms: u64,
        nodes: [Option<Failover>; 2],
        connected: bool,
        drop_percent: u64,
        max_delay_ms: u64,
        /// (deliver at, to, state).
        in_flight: Vec<(u64, usize, PeerState)>,
        rng: u64,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                now_ms: 0,
                nodes: [Some(Failover::new(0, FAILOVER_MS, true, 0)), Some(Failover::new(0, FAILOVER_MS, false, 0))],
                connected: true,
                drop_percent: 0,
                max_delay_ms: 0,
                in_flight: Vec::new(),
                rng: 0x9E37_79B9_7F4A_7C15,
            }
        }

        fn lossy(seed: u64, drop_percent: u64, max_delay_ms: u64) -> Self {
            Sim { drop_percent, max_delay_ms, rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, ..Sim::new() }
        }

        /// xorshift64: uniform enough for dropping and delaying messages.
        fn random(&mut self, below: u64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % below.max(1)
        }

        fn step(&mut self) {
            self.now_ms += STEP_MS;
            let now = self.now_ms;
            for n in self.nodes.iter_mut().flatten() {
                n.tick(now);
            }
            for from in 0..2 {
                let Some(state) = self.nodes[from].as_ref().map(Failover::state) else { continue };
                if !self.connected || self.random(100) < self.drop_percent {
                    continue;
                }
                let delay = self.random(self.max_delay_ms + 1);
                self.in_flight.push((now + delay, 1 - from, state));
            }
            let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|m| m.0 <= now);
            self.in_flight = later;
            for (_, to, state) in due {
                if let Some(n) = self.nodes[to].as_mut() {
                    n.on_peer(now, state);
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

        fn epochs(&self) -> [u64; 2] {
            [0, 1].map(|i| self.nodes[i].as_ref().map_or(0, Failover::epoch))
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

    /// Seeds per lossy-network property: each replays exactly.
    const SEEDS: u64 = 200;

    #[test]
    fn lost_and_late_messages_well_inside_the_failover_time_never_move_the_primary() {
        for seed in 0..SEEDS {
            // 30% lost, up to 300 ms late: a run of 20 lost messages (1 s of
            // silence) is all but impossible, so no takeover may happen.
            let mut sim = Sim::lossy(seed, 30, 300);
            sim.run_ms(2 * FAILOVER_MS);
            let settled = sim.roles();
            assert_eq!(sim.primaries(), 1, "seed {seed}: {settled:?}");
            for _ in 0..(20 * FAILOVER_MS / STEP_MS) {
                sim.step();
                assert_eq!(sim.roles(), settled, "seed {seed}: the primary moved at {} ms", sim.now_ms);
            }
        }
    }

    #[test]
    fn over_a_lossy_network_epochs_never_go_back_and_a_crash_is_taken_over_in_time() {
        for seed in 0..SEEDS {
            let mut sim = Sim::lossy(seed, 20, 200);
            sim.run_ms(2 * FAILOVER_MS);
            let before = sim.epochs();
            let primary = sim.roles().iter().position(|r| matches!(r, Some((Role::Primary, _)))).expect("a primary");
            sim.nodes[primary] = None;
            let died_at = sim.now_ms;
            let survivor = 1 - primary;
            // A message the primary sent just before it died may arrive up to
            // max_delay_ms later and count as a sign of life.
            while sim.roles()[survivor].map(|r| r.0) != Some(Role::Primary) {
                sim.step();
                let bound_ms = FAILOVER_MS + sim.max_delay_ms + STEP_MS;
                assert!(sim.now_ms - died_at <= bound_ms, "seed {seed}: no takeover in {bound_ms} ms");
            }
            assert!(sim.epochs()[survivor] > before[primary], "seed {seed}: the takeover has a higher epoch");
            // The dead one returns with what it knew; delayed messages from
            // before its crash may still arrive. It must end as standby.
            sim.nodes[primary] = Some(Failover::new(sim.now_ms, FAILOVER_MS, primary == 0, before[primary]));
            let mut last = sim.epochs();
            for _ in 0..(5 * FAILOVER_MS / STEP_MS) {
                sim.step();
                let now = sim.epochs();
                assert!(now[0] >= last[0] && now[1] >= last[1], "seed {seed}: epochs went back: {last:?} -> {now:?}");
                last = now;
            }
            let survivor_epoch = sim.epochs()[survivor];
            assert_eq!(sim.roles()[survivor], Some((Role::Primary, survivor_epoch)), "seed {seed}");
            assert_eq!(sim.roles()[primary], Some((Role::Standby, survivor_epoch)), "seed {seed}: the returning one");
        }
    }

    #[test]
    fn after_a_partition_heals_over_a_lossy_network_one_primary_remains_at_the_higher_epoch() {
        for seed in 0..SEEDS {
            let mut sim = Sim::lossy(seed, 20, 200);
            sim.run_ms(2 * FAILOVER_MS);
            sim.connected = false;
            let split_ms = 2 * FAILOVER_MS + sim.random(FAILOVER_MS);
            sim.run_ms(split_ms);
            assert_eq!(sim.primaries(), 2, "seed {seed}: documented: a partition splits them");
            let highest = sim.epochs().into_iter().max().expect("two");
            sim.connected = true;
            sim.run_ms(FAILOVER_MS);
            assert_eq!(sim.primaries(), 1, "seed {seed}: {:?}", sim.roles());
            assert_eq!(sim.epochs(), [highest, highest], "seed {seed}: both at the higher epoch");
        }
    }
}
