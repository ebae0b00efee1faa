//! One node's health as a coordinator sees it: UP, SUSPECT, DOWN or
//! RECOVERING, driven by heartbeat results and repair progress.
//!
//! ```text
//!            miss                      misses >= heartbeat_misses
//!   UP ───────────────► SUSPECT ─────────────────────────────► DOWN
//!   ▲  ◄───────────────   │   answer (a write missed it)         │ answer
//!   │   answer (nothing    └──────────────────────┐              │
//!   │   missed)                                   ▼              ▼
//!   └──────────────────────────────────────── RECOVERING ◄──────┘
//!                     caught up                    (misses >= heartbeat_misses: DOWN)
//! ```
//!
//! Invariants:
//! - UP serves reads, and a SUSPECT node that missed no write does when no
//!   replica of the key is UP; UP, SUSPECT and RECOVERING take writes (a
//!   recovering node must see new writes to converge), DOWN takes none (the
//!   coordinator keeps hints for it instead);
//! - a node that was DOWN, that missed a write, or whose identity changed (a
//!   wiped disk) never goes back to UP without a completed catch-up; a missed
//!   write takes an UP node out of the read path at once (SUSPECT), so a
//!   reader never gets an older version from it after a newer one was
//!   acknowledged;
//! - an answer from a node that is not serving (itself recovering or
//!   draining) counts as a miss: it cannot take data calls.

/// The states of `opticache.v1.NodeState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Suspect,
    Down,
    Recovering,
}

/// What one heartbeat found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The node answered: its id (stable for its data dir's life) and whether
    /// it serves data calls.
    Answered { node_id: String, serving: bool },
    /// No answer within the heartbeat interval (or an error).
    Missed,
}

/// One node's health record.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    state: NodeState,
    /// Consecutive heartbeats missed.
    misses: u32,
    /// The id the node answered with last.
    node_id: Option<String>,
    /// A write could not reach the node since it last caught up: it must
    /// catch up before it serves reads again.
    missed_writes: bool,
    /// DOWN misses before this many consecutive misses (the config's
    /// `heartbeat_misses`).
    misses_down: u32,
}

impl NodeHealth {
    /// A node not heard from yet: DOWN until it answers. Its first answer
    /// makes it UP, as there is nothing this coordinator knows it missed.
    pub fn new(misses_down: u32) -> Self {
        Self { state: NodeState::Down, misses: 0, node_id: None, missed_writes: false, misses_down: misses_down.max(1) }
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn serves_reads(&self) -> bool {
        self.state == NodeState::Up
    }

    /// Whether reads may go here when no replica of the key is UP: a node
    /// that is only late answering heartbeats (a loaded node is, under large
    /// writes) and has missed no write holds what an UP node would.
    pub fn serves_reads_as_fallback(&self) -> bool {
        self.state == NodeState::Suspect && !self.missed_writes
    }

    pub fn takes_writes(&self) -> bool {
        self.state != NodeState::Down
    }

    /// Takes a heartbeat's result; returns the new state if it changed.
    pub fn on_probe(&mut self, probe: Probe) -> Option<NodeState> {
        let before = self.state;
        match probe {
            Probe::Answered { node_id, serving: true } => {
                self.misses = 0;
                let first_contact = self.node_id.is_none();
                if self.node_id.as_ref().is_some_and(|known| *known != node_id) {
                    // A new data dir: it holds nothing of what it held.
                    self.missed_writes = true;
                    self.state = NodeState::Recovering;
                }
                self.node_id = Some(node_id);
                self.state = match self.state {
                    NodeState::Up => NodeState::Up,
                    NodeState::Suspect if !self.missed_writes => NodeState::Up,
                    NodeState::Down if first_contact && !self.missed_writes => NodeState::Up,
                    _ => NodeState::Recovering,
                };
            }
            Probe::Answered { serving: false, .. } | Probe::Missed => {
                self.misses = self.misses.saturating_add(1);
                self.state = match self.state {
                    _ if self.misses >= self.misses_down => {
                        if self.node_id.is_some() {
                            // Whatever happens while it is DOWN, it misses.
                            self.missed_writes = true;
                        }
                        NodeState::Down
                    }
                    NodeState::Up => NodeState::Suspect,
                    other => other,
                };
            }
        }
        (self.state != before).then_some(self.state)
    }

    /// A write could not reach this node: it must catch up before it serves
    /// reads again, so an UP node stops serving reads (SUSPECT) at once.
    /// Returns the new state if it changed.
    pub fn on_write_missed(&mut self) -> Option<NodeState> {
        self.missed_writes = true;
        if self.state == NodeState::Up {
            self.state = NodeState::Suspect;
            return Some(NodeState::Suspect);
        }
        None
    }

    /// The node has everything it missed; returns the new state if it changed.
    pub fn on_caught_up(&mut self) -> Option<NodeState> {
        if self.state != NodeState::Recovering {
            return None;
        }
        self.missed_writes = false;
        self.state = NodeState::Up;
        Some(NodeState::Up)
    }

    /// Takes a state decided elsewhere (the primary coordinator's, adopted
    /// by the standby); returns it if it changed.
    pub fn force(&mut self, state: NodeState) -> Option<NodeState> {
        if state == self.state {
            return None;
        }
        if state == NodeState::Up {
            self.missed_writes = false;
            self.misses = 0;
        }
        self.state = state;
        Some(state)
    }

    /// Whether the node must catch up before it serves reads.
    pub fn needs_catch_up(&self) -> bool {
        self.state == NodeState::Recovering
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: &str) -> Probe {
        Probe::Answered { node_id: id.into(), serving: true }
    }

    #[test]
    fn misses_make_a_node_suspect_then_down_after_the_configured_count() {
        let mut h = NodeHealth::new(3);
        assert_eq!(h.on_probe(ok("n1")), Some(NodeState::Up), "first contact: up");
        assert_eq!(h.on_probe(Probe::Missed), Some(NodeState::Suspect));
        assert!(h.takes_writes() && !h.serves_reads());
        assert_eq!(h.on_probe(Probe::Missed), None);
        assert_eq!(h.on_probe(Probe::Missed), Some(NodeState::Down));
        assert!(!h.takes_writes());
    }

    #[test]
    fn a_suspect_node_that_missed_nothing_comes_straight_back() {
        let mut h = NodeHealth::new(3);
        h.on_probe(ok("n1"));
        h.on_probe(Probe::Missed);
        assert_eq!(h.on_probe(ok("n1")), Some(NodeState::Up));
    }

    #[test]
    fn a_node_that_missed_writes_or_was_down_recovers_before_serving_reads() {
        let mut h = NodeHealth::new(2);
        h.on_probe(ok("n1"));
        assert_eq!(h.on_write_missed(), Some(NodeState::Suspect), "out of the read path at once");
        assert!(!h.serves_reads());
        assert_eq!(h.on_probe(ok("n1")), Some(NodeState::Recovering));
        assert!(h.takes_writes() && !h.serves_reads() && h.needs_catch_up());
        assert_eq!(h.on_caught_up(), Some(NodeState::Up));

        h.on_probe(Probe::Missed);
        assert_eq!(h.on_probe(Probe::Missed), Some(NodeState::Down));
        assert_eq!(h.on_probe(ok("n1")), Some(NodeState::Recovering), "down means it missed whatever came");
        assert_eq!(h.on_probe(ok("n1")), None, "answers alone do not end recovery");
        assert_eq!(h.on_caught_up(), Some(NodeState::Up));
        assert_eq!(h.on_caught_up(), None);
    }

    #[test]
    fn a_node_late_on_heartbeats_is_a_read_fallback_until_it_misses_a_write() {
        let mut h = NodeHealth::new(3);
        h.on_probe(ok("n1"));
        h.on_probe(Probe::Missed);
        assert_eq!(h.state(), NodeState::Suspect);
        assert!(!h.serves_reads() && h.serves_reads_as_fallback(), "late, but holds every write");
        h.on_write_missed();
        assert!(!h.serves_reads_as_fallback(), "a missed write takes it out of every read");
        h.on_probe(Probe::Missed);
        h.on_probe(Probe::Missed);
        assert_eq!(h.state(), NodeState::Down);
        assert!(!h.serves_reads_as_fallback());
    }

    #[test]
    fn a_wiped_node_with_a_new_id_must_recover() {
        let mut h = NodeHealth::new(3);
        h.on_probe(ok("old"));
        assert_eq!(h.on_probe(ok("new")), Some(NodeState::Recovering));
    }

    #[test]
    fn an_answer_from_a_node_that_is_not_serving_counts_as_a_miss() {
        let mut h = NodeHealth::new(2);
        h.on_probe(ok("n1"));
        let draining = Probe::Answered { node_id: "n1".into(), serving: false };
        assert_eq!(h.on_probe(draining.clone()), Some(NodeState::Suspect));
        assert_eq!(h.on_probe(draining), Some(NodeState::Down));
    }

    #[test]
    fn a_recovering_node_that_stops_answering_goes_down() {
        let mut h = NodeHealth::new(2);
        h.on_probe(ok("n1"));
        h.on_write_missed();
        h.on_probe(Probe::Missed);
        assert_eq!(h.on_probe(ok("n1")), Some(NodeState::Recovering));
        assert_eq!(h.on_probe(Probe::Missed), None);
        assert_eq!(h.on_probe(Probe::Missed), Some(NodeState::Down));
    }

    /// One node seen through a simulated link that drops each message
    /// (heartbeat, write, repair) with `drop_percent`, or everything while
    /// partitioned; a seeded generator makes every seed replay exactly. The
    /// model tracks whether the node really holds every acknowledged write.
    struct LinkSim {
        health: NodeHealth,
        node_complete: bool,
        partitioned: bool,
        drop_percent: u64,
        rng: u64,
    }

    impl LinkSim {
        fn new(seed: u64, drop_percent: u64) -> Self {
            let mut health = NodeHealth::new(3);
            health.on_probe(ok("n1"));
            LinkSim {
                health,
                node_complete: true,
                partitioned: false,
                drop_percent,
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            }
        }

        fn delivered(&mut self) -> bool {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            !self.partitioned && self.rng % 100 >= self.drop_percent
        }

        /// One heartbeat interval: a probe, a few writes, and a repair round
        /// if the node is recovering. Checks after each event that a node in
        /// the read path holds every write.
        fn interval(&mut self, seed: u64) {
            let probe = if self.delivered() { ok("n1") } else { Probe::Missed };
            self.health.on_probe(probe);
            self.check(seed);
            for _ in 0..3 {
                if self.health.takes_writes() && self.delivered() {
                    continue; // the node has it
                }
                self.node_complete = false;
                self.health.on_write_missed();
                self.check(seed);
            }
            if self.health.needs_catch_up() && self.delivered() {
                self.node_complete = true;
                self.health.on_caught_up();
                self.check(seed);
            }
        }

        fn check(&self, seed: u64) {
            if self.health.serves_reads() || self.health.serves_reads_as_fallback() {
                assert!(self.node_complete, "seed {seed}: readable but missing writes: {:?}", self.health);
            }
        }
    }

    #[test]
    fn over_a_lossy_link_a_node_serves_reads_only_while_it_holds_every_write() {
        for seed in 0..500 {
            let mut sim = LinkSim::new(seed, 25);
            for step in 0..400 {
                // Partitions come and go: steps 100-119 and 250-251.
                sim.partitioned = (100..120).contains(&step) || (250..252).contains(&step);
                sim.interval(seed);
                if step == 119 {
                    assert_eq!(sim.health.state(), NodeState::Down, "seed {seed}: 20 silent intervals");
                }
            }
            // The link heals for good: the node catches up and serves again.
            sim.drop_percent = 0;
            sim.interval(seed);
            sim.interval(seed);
            assert_eq!(sim.health.state(), NodeState::Up, "seed {seed}: {:?}", sim.health);
            assert!(sim.node_complete);
        }
    }
}
