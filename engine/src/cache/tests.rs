//! Tests of the hot cache: a model-based property test, the S3-FIFO behaviour
//! (scan resistance, ghost admission), the budget and the too-large rule at and
//! beyond their limits, and a release-mode timing of a hit (ignored by default).

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn value(version: u64, len: usize) -> CachedValue {
    CachedValue { value: Bytes::from(vec![version as u8; len]), version, expiry_ms: version.wrapping_mul(7) }
}

fn same(a: &CachedValue, b: &CachedValue) -> bool {
    a.value == b.value && a.version == b.version && a.expiry_ms == b.expiry_ms
}

fn key(n: u64) -> Vec<u8> {
    format!("key-{n:012}").into_bytes()
}

/// The value length that makes an entry for `key_len` cost exactly `charge`.
fn value_len_for(charge: u64, key_len: usize) -> usize {
    (charge - ENTRY_OVERHEAD_BYTES) as usize - key_len
}

impl HotCache {
    fn with_entries_max(budget_bytes: u64, entries_max: usize) -> Self {
        Self { entries_max, ..Self::new(budget_bytes) }
    }

    fn place_of(&self, key: &[u8]) -> Option<Place> {
        self.find(key).map(|(_, _, entry)| self.entries[entry as usize].place)
    }

    /// Walks every structure and checks the invariants of the module docs.
    fn check_invariants(&self) {
        assert!(self.bytes <= self.budget_bytes, "over budget");
        assert!(self.len() <= self.entries_max);
        let mut seen = HashSet::new();
        let mut bytes = 0;
        for (place, fifo) in [(Place::Small, self.small), (Place::Main, self.main)] {
            let mut queue_bytes = 0;
            let mut len = 0;
            let mut newer = NIL;
            let mut entry = fifo.oldest;
            while entry != NIL {
                let e = &self.entries[entry as usize];
                assert_eq!(e.place, place);
                assert_eq!(e.older, newer, "broken back link");
                assert!(e.freq <= FREQ_MAX);
                assert_eq!(e.hash, hash_key(e.key.as_slice()));
                assert!(seen.insert(entry), "entry in two queues");
                queue_bytes += e.charge();
                len += 1;
                newer = entry;
                entry = e.newer;
            }
            assert_eq!(fifo.newest, newer);
            assert_eq!(fifo.len, len);
            if place == Place::Small {
                assert_eq!(self.small_bytes, queue_bytes);
            }
            bytes += queue_bytes;
        }
        assert_eq!(self.bytes, bytes);
        assert_eq!(self.table.len(), seen.len());
        for (hash32, entry) in self.table.iter() {
            assert!(seen.contains(&entry), "index points at a non-resident entry");
            assert_eq!(hash32, self.entries[entry as usize].hash as u32);
        }
        let mut free = 0;
        let mut slot = self.free;
        while slot != NIL {
            assert_eq!(self.entries[slot as usize].place, Place::Free);
            free += 1;
            slot = self.entries[slot as usize].newer;
        }
        assert_eq!(free + seen.len(), self.entries.len());
        assert!(self.ghost.ring_len() <= self.len(), "ghost over its cap");
        self.ghost.check_invariants();
    }
}

#[test]
fn entry_layout_and_overhead_are_pinned() {
    // A change here changes what every entry is charged: make it on purpose.
    assert_eq!(std::mem::size_of::<StoredKey>(), 32);
    assert_eq!(std::mem::size_of::<Entry>(), 104);
    assert_eq!(ENTRY_OVERHEAD_BYTES, 104 + 32 + 48 + 48);
}

#[test]
fn get_returns_what_was_inserted_and_counts() {
    let mut cache = HotCache::new(1 << 20);
    let short = b"k".as_slice();
    let long = [b'x'; KEY_INLINE_LEN_MAX + 1];
    let edge = [b'y'; KEY_INLINE_LEN_MAX];
    cache.insert(short, value(1, 10));
    cache.insert(&long, value(2, 20));
    cache.insert(&edge, value(3, 30));
    assert!(same(&cache.get(short).unwrap(), &value(1, 10)));
    assert!(same(&cache.get(&long).unwrap(), &value(2, 20)));
    assert!(same(&cache.get(&edge).unwrap(), &value(3, 30)));
    assert!(cache.get(b"absent").is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts), (3, 1, 3));
    assert_eq!(stats.entries, 3);
    assert_eq!(
        stats.bytes,
        HotCache::entry_charge(1, 10) + HotCache::entry_charge(long.len(), 20) + HotCache::entry_charge(edge.len(), 30)
    );
    cache.check_invariants();
}

#[test]
fn replace_takes_the_new_value_and_its_charge() {
    let mut cache = HotCache::new(1 << 20);
    cache.insert(b"k", value(1, 100));
    cache.insert(b"k", value(2, 10));
    assert!(same(&cache.get(b"k").unwrap(), &value(2, 10)));
    assert_eq!(cache.stats().bytes, HotCache::entry_charge(1, 10));
    assert_eq!(cache.len(), 1);
    cache.check_invariants();
}

#[test]
fn remove_drops_the_entry_and_its_charge() {
    let mut cache = HotCache::new(1 << 20);
    cache.insert(b"a", value(1, 10));
    cache.insert(b"b", value(2, 10));
    cache.remove(b"a");
    cache.remove(b"never-there");
    assert!(cache.get(b"a").is_none());
    assert!(cache.get(b"b").is_some());
    assert_eq!(cache.stats().bytes, HotCache::entry_charge(1, 10));
    cache.check_invariants();
}

#[test]
fn get_ref_counts_like_get() {
    let mut cache = HotCache::new(1 << 20);
    cache.insert(b"k", value(1, 10));
    assert!(same(cache.get_ref(b"k").unwrap(), &value(1, 10)));
    assert!(cache.get_ref(b"absent").is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    let entry = cache.find(b"k").unwrap().2;
    assert_eq!(cache.entries[entry as usize].freq, 1);
}

#[test]
fn peek_and_contains_do_not_count_as_reads() {
    let mut cache = HotCache::new(1 << 20);
    cache.insert(b"k", value(1, 10));
    assert!(cache.contains(b"k"));
    assert_eq!(cache.peek(b"k").map(|v| v.version), Some(1));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
    let entry = cache.find(b"k").unwrap().2;
    assert_eq!(cache.entries[entry as usize].freq, 0);
}

#[test]
fn budget_zero_caches_nothing() {
    let mut cache = HotCache::new(0);
    cache.insert(b"k", value(1, 0));
    assert!(cache.get(b"k").is_none());
    assert!(!cache.admits(0, 0));
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes, stats.inserts), (0, 0, 0));
    cache.check_invariants();
}

#[test]
fn too_large_rule_at_and_beyond_the_limit() {
    let budget = ENTRY_CHARGE_MAX_DIVISOR * 1000;
    let mut cache = HotCache::new(budget);
    assert_eq!(cache.entry_charge_max(), 1000);
    let at_limit = value_len_for(1000, 1);

    cache.insert(b"k", value(1, at_limit));
    assert!(cache.admits(1, at_limit));
    assert!(same(&cache.get(b"k").unwrap(), &value(1, at_limit)));

    // One byte more is refused, and the older value for the key goes too.
    assert!(!cache.admits(1, at_limit + 1));
    cache.insert(b"k", value(2, at_limit + 1));
    assert!(cache.get(b"k").is_none());
    assert_eq!(cache.stats().bytes, 0);

    cache.insert(b"k", value(3, at_limit * 10));
    assert!(cache.get(b"k").is_none());
    assert_eq!(cache.stats().inserts, 1);
    cache.check_invariants();
}

#[test]
fn set_budget_shrinking_evicts_at_once_and_compacts() {
    let mut cache = HotCache::new(1 << 20);
    for n in 0..2000 {
        cache.insert(&key(n), value(n, 64));
    }
    let before = cache.stats();
    assert!(before.entries > 1000);
    let slots_before = cache.table.slots_len();

    cache.set_budget(64 << 10);
    let after = cache.stats();
    assert!(after.bytes <= 64 << 10);
    assert_eq!(after.budget_bytes, 64 << 10);
    assert!(after.entries < before.entries);
    assert!(cache.table.slots_len() < slots_before, "index not compacted");
    assert!(cache.entries.len() <= 2 * cache.len());
    cache.check_invariants();
    // What is left is still found, in its queue order.
    let resident = (0..2000).filter(|&n| cache.contains(&key(n))).count();
    assert_eq!(resident, cache.len());

    cache.set_budget(0);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().bytes, 0);
    assert_eq!(cache.ghost.len(), 0);
    cache.check_invariants();

    // Growing again starts caching again.
    cache.set_budget(1 << 20);
    cache.insert(b"k", value(1, 10));
    assert!(cache.get(b"k").is_some());
    cache.check_invariants();
}

#[test]
fn one_hit_wonders_leave_before_values_that_were_read() {
    let mut cache = HotCache::new(64 << 10);
    let per_entry = HotCache::entry_charge(key(0).len(), 100);
    let fits = (64 << 10) / per_entry;
    for n in 0..fits {
        cache.insert(&key(n), value(n, 100));
    }
    // Read the even keys once: they will be promoted, the odd ones evicted.
    for n in (0..fits).step_by(2) {
        assert!(cache.get(&key(n)).is_some());
    }
    for n in fits..fits + fits / 4 {
        cache.insert(&key(n), value(n, 100));
    }
    for n in (0..fits).step_by(2) {
        assert!(cache.contains(&key(n)), "read key {n} was evicted");
    }
    assert!(!cache.contains(&key(1)));
    cache.check_invariants();
}

#[test]
fn a_one_hit_scan_does_not_evict_a_working_set_that_fits_in_main() {
    let budget = 1 << 20;
    let mut cache = HotCache::new(budget);
    let per_entry = HotCache::entry_charge(key(0).len(), 1000);
    // Half the budget: well within the main queue's nine tenths.
    let working_set = budget / 2 / per_entry;
    for n in 0..working_set {
        cache.insert(&key(n), value(n, 1000));
    }
    for _ in 0..3 {
        for n in 0..working_set {
            assert!(cache.get(&key(n)).is_some());
        }
    }
    // A scan of twenty budgets' worth of keys, each read once after a miss.
    let scan = 1_000_000..1_000_000 + 20 * budget / per_entry;
    for n in scan.clone() {
        assert!(cache.get(&key(n)).is_none());
        cache.insert(&key(n), value(n, 1000));
    }
    for n in 0..working_set {
        assert!(cache.contains(&key(n)), "working-set key {n} was evicted");
    }
    assert!(cache.stats().evictions > 0);
    let scan_resident = scan.filter(|&n| cache.contains(&key(n))).count() as u64;
    assert!(scan_resident * per_entry <= budget - working_set * per_entry);
    cache.check_invariants();
}

#[test]
fn a_key_in_the_ghost_queue_is_admitted_to_main_on_reinsert() {
    let mut cache = HotCache::new(64 << 10);
    cache.insert(b"ghost", value(1, 100));
    assert_eq!(cache.place_of(b"ghost"), Some(Place::Small));
    // Fill past the budget with unread keys: "ghost", the oldest, goes first.
    let mut n = 0;
    while cache.contains(b"ghost") {
        cache.insert(&key(n), value(n, 100));
        n += 1;
    }
    assert!(cache.ghost.len() > 0);
    assert!(cache.ghost.contains(hash_key(b"ghost")));

    cache.insert(b"ghost", value(2, 100));
    assert_eq!(cache.place_of(b"ghost"), Some(Place::Main));
    assert!(!cache.ghost.contains(hash_key(b"ghost")));
    // A key that never left goes to the small queue as usual.
    cache.insert(b"fresh", value(3, 100));
    assert_eq!(cache.place_of(b"fresh"), Some(Place::Small));
    cache.check_invariants();
}

#[test]
fn main_queue_gives_read_entries_another_pass() {
    let mut cache = HotCache::new(64 << 10);
    let per_entry = HotCache::entry_charge(key(0).len(), 100);
    let fits = (64 << 10) / per_entry;
    // Each key is read once after its insert, so the oldest ones are promoted
    // (spending that read) as the small queue passes its share.
    for n in 0..fits {
        cache.insert(&key(n), value(n, 100));
        assert!(cache.get(&key(n)).is_some());
    }
    for k in 0..3 {
        assert_eq!(cache.place_of(&key(k)), Some(Place::Main));
    }
    // Key 1 is read again; keys 0 and 2, on either side of it, are not.
    assert!(cache.get(&key(1)).is_some());
    for n in fits..2 * fits {
        if !cache.contains(&key(2)) {
            break;
        }
        cache.insert(&key(n), value(n, 100));
    }
    assert!(!cache.contains(&key(0)) && !cache.contains(&key(2)));
    assert!(cache.contains(&key(1)), "a re-read main entry was evicted");
    assert_eq!(cache.stats().evictions, 2);
    cache.check_invariants();
}

#[test]
fn one_eviction_walks_at_most_evict_scan_max_entries() {
    let budget = 1 << 20;
    let mut cache = HotCache::new(budget);
    let fits = budget / HotCache::entry_charge(key(0).len(), 100);
    assert!(fits > 4 * EVICT_SCAN_MAX as u64);
    // Unread while inserted, so nothing is promoted; then all read once.
    for n in 0..fits {
        cache.insert(&key(n), value(n, 100));
    }
    for n in 0..fits {
        cache.get(&key(n));
    }
    assert_eq!(cache.main.len, 0);
    // The eviction for the next insert promotes EVICT_SCAN_MAX entries and,
    // finding no unread one, takes the main queue's oldest; after the insert,
    // the small queue promotes EVICT_SCAN_MAX more.
    cache.insert(&key(fits), value(fits, 100));
    assert_eq!(cache.stats().evictions, 1);
    assert!(!cache.contains(&key(0)));
    assert_eq!(cache.main.len, 2 * EVICT_SCAN_MAX - 1);
    cache.check_invariants();
}

#[test]
fn entries_max_is_enforced_at_and_beyond_the_limit() {
    let mut cache = HotCache::with_entries_max(1 << 20, 8);
    for n in 0..8 {
        cache.insert(&key(n), value(n, 1));
    }
    assert_eq!(cache.len(), 8);
    assert_eq!(cache.stats().evictions, 0);
    cache.insert(&key(8), value(8, 1));
    assert_eq!(cache.len(), 8);
    assert_eq!(cache.stats().evictions, 1);
    assert!(cache.contains(&key(8)));
    cache.check_invariants();
}

#[test]
fn clear_keeps_budget_and_counters() {
    let mut cache = HotCache::new(1 << 20);
    cache.insert(b"k", value(1, 1));
    cache.get(b"k");
    cache.clear();
    assert!(cache.is_empty());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.inserts, stats.bytes), (1, 1, 0));
    assert_eq!(stats.budget_bytes, 1 << 20);
    cache.check_invariants();
}

#[derive(Clone, Debug)]
enum Op {
    Insert { key: u8, len: usize },
    Get { key: u8 },
    Remove { key: u8 },
    SetBudget { budget: u64 },
}

fn model_key(k: u8) -> Vec<u8> {
    // Lengths 1 to 41: both sides of the inline-key limit.
    vec![k; 1 + usize::from(k % 5) * 10]
}

/// How many distinct keys the model test uses.
const KEYS: u8 = 96;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Mostly small values, so that many fit and the queues get long, and
        // some large ones, so that one insert evicts many entries.
        6 => (0u8..KEYS, prop_oneof![3 => 0usize..64, 1 => 0usize..4000])
            .prop_map(|(key, len)| Op::Insert { key, len }),
        6 => (0u8..KEYS).prop_map(|key| Op::Get { key }),
        1 => (0u8..KEYS).prop_map(|key| Op::Remove { key }),
        1 => (0u64..60_000).prop_map(|budget| Op::SetBudget { budget }),
    ]
}

/// Runs `ops` against the cache and a map of the last value inserted per key:
/// a hit is always that value, nothing comes back after a remove or a refused
/// insert, an admitted value is resident right after its insert, the charge
/// never exceeds the budget, and every internal invariant holds after each op.
fn check_against_model(budget: u64, ops: &[Op]) {
    let mut cache = HotCache::new(budget);
    let mut model: HashMap<Vec<u8>, CachedValue> = HashMap::new();
    let (mut gets, mut hits) = (0, 0);
    for (version, op) in (1u64..).zip(ops) {
        match *op {
            Op::Insert { key, len } => {
                let key = model_key(key);
                let admitted = cache.admits(key.len(), len);
                let v = value(version, len);
                cache.insert(&key, v.clone());
                assert_eq!(cache.peek(&key).is_some(), admitted);
                model.insert(key, v);
            }
            Op::Get { key } => {
                let by_ref = key % 2 == 0;
                let key = model_key(key);
                gets += 1;
                let got = if by_ref { cache.get_ref(&key).cloned() } else { cache.get(&key) };
                if let Some(got) = got {
                    hits += 1;
                    let want = model.get(&key).expect("a removed key came back");
                    assert!(same(&got, want), "stale value for {key:?}");
                }
            }
            Op::Remove { key } => {
                let key = model_key(key);
                cache.remove(&key);
                assert!(!cache.contains(&key));
                model.remove(&key);
            }
            Op::SetBudget { budget } => cache.set_budget(budget),
        }
        let stats = cache.stats();
        assert!(stats.bytes <= stats.budget_bytes);
        assert_eq!((stats.hits + stats.misses, stats.hits), (gets, hits));
        cache.check_invariants();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_returns_anything_but_the_last_insert(
        budget in 0u64..60_000,
        ops in prop::collection::vec(op(), 1..600),
    ) {
        check_against_model(budget, &ops);
    }
}

/// Found by the model test: main-queue evictions shrank the cache without
/// trimming the ghost queue, which then held more hashes than the cache held
/// entries (more than its charge pays for).
#[test]
fn regression_ghost_stays_within_entry_count_after_main_evictions() {
    use Op::*;
    let ops = [
        SetBudget { budget: 29488 },
        Insert { key: 37, len: 0 },
        Insert { key: 84, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 45, len: 0 },
        Insert { key: 23, len: 0 },
        Insert { key: 26, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 46, len: 0 },
        Insert { key: 13, len: 0 },
        Insert { key: 59, len: 0 },
        Insert { key: 10, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 37, len: 0 },
        Insert { key: 39, len: 0 },
        Insert { key: 0, len: 0 },
        SetBudget { budget: 51712 },
        Insert { key: 1, len: 0 },
        Insert { key: 6, len: 28 },
        Insert { key: 83, len: 2969 },
        Insert { key: 14, len: 0 },
        Insert { key: 2, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 40, len: 0 },
        Get { key: 83 },
        Insert { key: 26, len: 0 },
        Insert { key: 39, len: 13 },
        Insert { key: 27, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 47, len: 0 },
        Insert { key: 21, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 38, len: 362 },
        Insert { key: 24, len: 0 },
        Insert { key: 6, len: 0 },
        Insert { key: 3, len: 0 },
        Insert { key: 48, len: 0 },
        Insert { key: 4, len: 0 },
        Insert { key: 6, len: 0 },
        Get { key: 59 },
        Insert { key: 14, len: 24 },
        Insert { key: 15, len: 0 },
        Insert { key: 27, len: 59 },
        Get { key: 5 },
        Get { key: 38 },
        Insert { key: 5, len: 0 },
        Insert { key: 84, len: 51 },
        Insert { key: 49, len: 0 },
        Insert { key: 40, len: 61 },
        Insert { key: 0, len: 6 },
        Insert { key: 6, len: 0 },
        Insert { key: 7, len: 0 },
        Get { key: 10 },
        Insert { key: 28, len: 0 },
        Insert { key: 11, len: 1076 },
        Get { key: 11 },
        Insert { key: 13, len: 3 },
        SetBudget { budget: 8166 },
        Insert { key: 0, len: 0 },
        Insert { key: 0, len: 0 },
        Insert { key: 0, len: 7 },
    ];
    check_against_model(0, &ops);
}

/// Times hits, misses and inserts. Run it in release mode:
/// `cargo test --release -p opticache-engine --lib cache::tests::timing -- --ignored --nocapture`
/// Each figure is the best of several runs, since the machine is shared.
#[test]
#[ignore = "timing; meaningful only in release mode"]
fn timing() {
    use std::hint::black_box;
    use std::time::Instant;

    const RUNS: usize = 5;
    const LOOKUPS_PER_RUN: u64 = 2_000_000;

    // A cheap, deterministic permutation of key numbers (xorshift).
    fn shuffled(n: u64) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..n).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in (1..keys.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            keys.swap(i, (state % (i as u64 + 1)) as usize);
        }
        keys
    }
    fn key16(n: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&n.to_le_bytes());
        k[8..].copy_from_slice(&(!n).to_le_bytes());
        k
    }
    /// The least ns per op of `RUNS` runs of `run`, which does `ops` ops.
    fn best_ns(ops: u64, mut run: impl FnMut()) -> f64 {
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed().as_nanos() as f64 / ops as f64
            })
            .fold(f64::INFINITY, f64::min)
    }

    for (label, entries) in [("L2-resident", 1_000u64), ("DRAM-resident", 1_000_000)] {
        let per_entry = HotCache::entry_charge(16, 100);
        let keys: Vec<[u8; 16]> = shuffled(entries).into_iter().map(key16).collect();
        // Every value its own allocation, as in real use: a hit then touches
        // that value's reference count, not one shared by all entries.
        let values: Vec<CachedValue> = (0..entries).map(|n| value(n, 100)).collect();
        let mut cache = HotCache::new(entries * per_entry * 2);
        let insert_ns = best_ns(entries, || {
            cache.clear();
            for (k, v) in keys.iter().zip(&values) {
                cache.insert(k, v.clone());
            }
        });
        let order: Vec<[u8; 16]> = shuffled(entries).into_iter().map(key16).collect();
        let rounds = (LOOKUPS_PER_RUN / entries).max(1);
        let lookups = rounds * entries;
        let hit_ns = best_ns(lookups, || {
            for _ in 0..rounds {
                for k in &order {
                    black_box(cache.get(black_box(k)));
                }
            }
        });
        assert_eq!(cache.stats().hits, RUNS as u64 * lookups);
        let hit_ref_ns = best_ns(lookups, || {
            for _ in 0..rounds {
                for k in &order {
                    black_box(cache.get_ref(black_box(k)));
                }
            }
        });
        // The cache's own part of a hit: the same lookups without the clone.
        let lookup_ns = best_ns(lookups, || {
            for _ in 0..rounds {
                for k in &order {
                    black_box(cache.peek(black_box(k)));
                }
            }
        });
        // The API's part: cloning and dropping a `CachedValue` (two atomic
        // reference-count updates), in the same random order.
        let shuffle = shuffled(entries);
        let clone_ns = best_ns(lookups, || {
            for _ in 0..rounds {
                for &n in &shuffle {
                    black_box(values[n as usize].clone());
                }
            }
        });
        let miss_ns = best_ns(entries, || {
            for n in 0..entries {
                black_box(cache.get(black_box(&key16(n + (1 << 40)))));
            }
        });
        println!(
            "{label} ({entries} entries, 16-byte keys, 100-byte values): get hit {hit_ns:.1} ns, \
             get_ref hit {hit_ref_ns:.1} ns, peek {lookup_ns:.1} ns, \
             CachedValue clone+drop alone {clone_ns:.1} ns, miss {miss_ns:.1} ns, \
             insert {insert_ns:.1} ns"
        );
    }
}
