//! Key listing for replica repair (anti-entropy): pages of the keys a shard
//! holds, with their versions, tombstone flags and expiries, in ascending
//! fingerprint order, so that a coordinator can compare two replicas range by
//! range and copy whatever is newer. The node serves it as its `ListKeys` RPC.
//!
//! How a page is made ([`Engine::list_keys`](crate::engine::Engine::list_keys)):
//! 1. Under one short borrow of the index, [`Index::range`] yields the entries
//!    from the page's start on, visiting only the partitions the page needs;
//!    whole fingerprints are taken until the page's entry or read-byte budget
//!    is reached. The borrow ends before the first read.
//! 2. The index holds fingerprints, not keys: each entry's record is read
//!    whole and checked (crc included) through the engine's record read path.
//!    A record that fails its checks, or that is not the record its entry
//!    describes, is skipped and counted in `corrupt_records`, never returned.
//!    When compaction removed a segment between the index lookup and the read,
//!    the fingerprint's entries are looked up again and re-read, as gets do.
//! 3. A chunked value is listed once, from its manifest; its chunks are not
//!    read.
//!
//! Invariants:
//! - entries are in ascending (fingerprint, key) order, and all the entries
//!   of one fingerprint are in the same page: a page covers every fingerprint
//!   of `[start, next_fingerprint)` that the index held when the page was
//!   taken, so resuming at `next_fingerprint` never skips or repeats a key;
//! - tombstones are listed (their versions decide last-writer-wins on the
//!   other replica), and so are expired values, with their expiry: the
//!   caller decides what an expired value is worth;
//! - nothing is returned from a record that failed its crc.
//!
//! Under concurrent writes (pages are separate calls, and writes go on
//! between and during them): no key is listed twice, and a key present and
//! unchanged for the whole listing is listed exactly once (compaction moving
//! its record does not count as a change). A key written during the listing
//! may or may not appear, and if it does, with a version it held meanwhile.

use bytes::Bytes;

use crate::engine::{Inner, RESOLVE_ATTEMPTS_MAX};
use crate::error::{EngineError, Result};
use crate::index::{fingerprint, Entry, Index};
use crate::io::Storage;
use crate::limits::{LIST_PAGE_LEN_MAX, LIST_PAGE_READ_BYTES_MAX};
use crate::record::RecordKind;
use crate::stats::bump;

/// The `end_fingerprint` that lists to the end of the fingerprint space,
/// fingerprint `u64::MAX` included; every other end is exclusive. So the
/// split points `0 = b0 < b1 < ... < bn = LIST_TO_END` cover every fingerprint
/// exactly once, with no range bound that overflows.
pub const LIST_TO_END: u64 = u64::MAX;

/// One key as the index holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedKey {
    /// The key's fingerprint ([`crate::index::fingerprint`] of `key`).
    pub fingerprint: u64,
    /// The full engine key, as written (for the node: the namespace's length
    /// byte, the namespace, the user key).
    pub key: Bytes,
    /// The version the key holds (last writer wins).
    pub version: u64,
    /// The key is deleted; the tombstone keeps its version.
    pub tombstone: bool,
    /// For a value, the Unix time in ms after which it is gone (0 = never; an
    /// expired value is listed too). For a tombstone, when compaction may
    /// forget it.
    pub expiry_ms: u64,
}

/// One page of a key listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyListing {
    /// The page's keys, in ascending (fingerprint, key) order.
    pub entries: Vec<ListedKey>,
    /// Where the next page starts; `None` when the range is done.
    pub next_fingerprint: Option<u64>,
}

/// What a page takes from the index, under one borrow.
#[derive(Debug, Default)]
struct Taken {
    /// Whole fingerprints, ascending, each with all of its entries.
    groups: Vec<(u64, Vec<Entry>)>,
    /// The first fingerprint of the range left for the next page, if any.
    next: Option<u64>,
}

/// Takes whole fingerprints of `[first, last]` from `index`, in order, until
/// the next one would bring the page past `len_max` entries or `bytes_max`
/// bytes of records. The first fingerprint is taken whatever its size, so
/// every page makes progress.
fn take_page(index: &Index, first: u64, last: u64, len_max: usize, bytes_max: u64) -> Taken {
    let mut taken = Taken::default();
    let (mut len, mut bytes) = (0usize, 0u64);
    let mut range = index.range(first..=last).peekable();
    while let Some(&(fp, _)) = range.peek() {
        let mut group = Vec::new();
        while let Some((_, e)) = range.next_if(|&(f, _)| f == fp) {
            group.push(e);
        }
        let group_bytes: u64 = group.iter().map(|e| e.loc.len_bytes()).sum();
        if !taken.groups.is_empty() && (len + group.len() > len_max || bytes + group_bytes > bytes_max) {
            taken.next = Some(fp);
            break;
        }
        len += group.len();
        bytes += group_bytes;
        taken.groups.push((fp, group));
    }
    taken
}

/// What reading one entry's record gave.
#[derive(Debug)]
enum Listed {
    Key(ListedKey),
    /// The record failed its checks or is not the entry's; counted.
    Skipped,
    /// Compaction removed the record's segment since the index lookup.
    SegmentGone,
}

impl<S: Storage> Inner<S> {
    /// [`Engine::list_keys`](crate::engine::Engine::list_keys).
    pub(crate) async fn list_keys(&self, start: u64, end: u64, limit: usize) -> Result<KeyListing> {
        if limit == 0 {
            return Err(EngineError::InvalidListLimit { limit });
        }
        let limit = limit.min(LIST_PAGE_LEN_MAX);
        let last = match end {
            LIST_TO_END => LIST_TO_END,
            _ if start < end => end - 1,
            _ => return Ok(KeyListing::default()),
        };
        // The borrow ends with this statement: no read happens under it.
        let taken = take_page(&self.index.borrow(), start, last, limit, LIST_PAGE_READ_BYTES_MAX);
        let mut entries = Vec::new();
        for (fp, group) in taken.groups {
            let listed = self.list_fingerprint(fp, group).await?;
            // A key written under this fingerprint since the page was taken
            // may have grown its group past the page: the fingerprint then
            // starts the next page instead (unless it is the page's first).
            if !entries.is_empty() && entries.len() + listed.len() > limit {
                return Ok(KeyListing { entries, next_fingerprint: Some(fp) });
            }
            entries.extend(listed);
        }
        Ok(KeyListing { entries, next_fingerprint: taken.next })
    }

    /// The keys of fingerprint `fp`, read from its index entries `candidates`,
    /// sorted by key. When compaction removed a segment between the index
    /// lookup and a read, the fingerprint's entries are looked up again and
    /// all read again (a moved entry has a new location, a dropped one is
    /// gone), as [`Inner::find_live_record`] does.
    async fn list_fingerprint(&self, fp: u64, mut candidates: Vec<Entry>) -> Result<Vec<ListedKey>> {
        for _ in 0..RESOLVE_ATTEMPTS_MAX {
            let mut listed = Vec::with_capacity(candidates.len());
            let mut segment_gone = false;
            for &entry in &candidates {
                match self.read_listed(fp, entry).await? {
                    Listed::Key(key) => listed.push(key),
                    Listed::Skipped => {}
                    Listed::SegmentGone => {
                        segment_gone = true;
                        break;
                    }
                }
            }
            if !segment_gone {
                listed.sort_unstable_by(|a, b| a.key.cmp(&b.key));
                return Ok(listed);
            }
            candidates = self.index.borrow().lookup(fp).map(|(_, e)| e).collect();
        }
        Err(EngineError::Closed("key listing kept racing compaction".into()))
    }

    /// Reads the record `entry` (of fingerprint `fp`) points at and lists it
    /// if it is sound and is the record the entry describes.
    async fn read_listed(&self, fp: u64, entry: Entry) -> Result<Listed> {
        let loc = entry.loc;
        let read = self
            .read_checked(loc, |rec| {
                let kind_matches = match rec.header.kind {
                    RecordKind::Delete => entry.tombstone,
                    RecordKind::Put | RecordKind::ChunkedPut => !entry.tombstone,
                    RecordKind::Chunk => false,
                };
                let matches = kind_matches && rec.header.version == entry.version && fingerprint(rec.key) == fp;
                matches.then(|| ListedKey {
                    fingerprint: fp,
                    key: Bytes::copy_from_slice(rec.key),
                    version: entry.version,
                    tombstone: entry.tombstone,
                    expiry_ms: rec.header.expiry_ms,
                })
            })
            .await;
        match read {
            Ok(Some(Some(key))) => Ok(Listed::Key(key)),
            Ok(Some(None)) => {
                // A sound record, but not the one the entry says: a log record
                // never changes, so only a damaged index does this.
                bump(&self.counters.corrupt_records, 1);
                tracing::error!(
                    segment = loc.segment,
                    offset = loc.offset,
                    fingerprint = fp,
                    "index entry does not describe its record; key not listed"
                );
                Ok(Listed::Skipped)
            }
            Ok(None) => Ok(Listed::SegmentGone),
            // Already counted and logged by the read path.
            Err(EngineError::Corruption { .. }) => Ok(Listed::Skipped),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The page cut on a bare index (fingerprints shared by several entries
    //! cannot be made with real keys), and the read path's retry and checks
    //! with index entries crafted to be stale or wrong.

    use super::*;
    use crate::config::{Durability, EngineConfig};
    use crate::engine::Engine;
    use crate::index::Loc;
    use crate::io::dma::DmaStorage;

    /// Bytes each crafted record is long: exact in a `Loc`'s length code.
    const RECORD_BYTES: u64 = 1000;

    fn entry(version: u64) -> Entry {
        Entry { version, loc: Loc::for_record(1, 8 * version, RECORD_BYTES), tombstone: false }
    }

    /// The fingerprints of a page and where the next starts.
    fn page(index: &Index, first: u64, last: u64, len_max: usize, bytes_max: u64) -> (Vec<(u64, usize)>, Option<u64>) {
        let taken = take_page(index, first, last, len_max, bytes_max);
        (taken.groups.iter().map(|(fp, g)| (*fp, g.len())).collect(), taken.next)
    }

    #[test]
    fn a_page_takes_whole_fingerprints_up_to_its_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::create(&dir.path().join("index")).unwrap();
        // Fingerprint 10 three times, 30 twice, 20 and 40 once.
        for (version, fp) in [10, 20, 10, 30, 40, 10, 30].into_iter().enumerate() {
            index.insert(fp, entry(version as u64)).unwrap();
        }
        let unlimited = u64::MAX;
        // The first fingerprint is taken even when it alone is over the limit.
        assert_eq!(page(&index, 0, u64::MAX, 2, unlimited), (vec![(10, 3)], Some(20)));
        assert_eq!(page(&index, 0, u64::MAX, 4, unlimited), (vec![(10, 3), (20, 1)], Some(30)));
        // Fingerprint 30 would make 6 of 5: it starts the next page, whole.
        assert_eq!(page(&index, 0, u64::MAX, 5, unlimited), (vec![(10, 3), (20, 1)], Some(30)));
        assert_eq!(page(&index, 0, u64::MAX, 6, unlimited), (vec![(10, 3), (20, 1), (30, 2)], Some(40)));
        assert_eq!(page(&index, 0, u64::MAX, 100, unlimited), (vec![(10, 3), (20, 1), (30, 2), (40, 1)], None));
        // Starting between fingerprints, and ending before the last.
        assert_eq!(page(&index, 11, u64::MAX, 2, unlimited), (vec![(20, 1)], Some(30)));
        assert_eq!(page(&index, 0, 29, 100, unlimited), (vec![(10, 3), (20, 1)], None));
        assert_eq!(page(&index, 41, u64::MAX, 100, unlimited), (vec![], None));
        // The byte budget: 3000 bytes of fingerprint 10 go alone; from 20,
        // 1000 + 2000 is over 2500.
        assert_eq!(page(&index, 0, u64::MAX, 100, 2500), (vec![(10, 3)], Some(20)));
        assert_eq!(page(&index, 20, u64::MAX, 100, 2500), (vec![(20, 1)], Some(30)));
        assert_eq!(page(&index, 20, u64::MAX, 100, 3000), (vec![(20, 1), (30, 2)], Some(40)));
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .io_memory(crate::limits::EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move { f().await })
            .expect("executor")
            .join()
            .expect("join");
    }

    async fn open(dir: &std::path::Path) -> Engine<DmaStorage> {
        let storage = DmaStorage::open_dir(&dir.join("log")).await.expect("storage");
        let config = EngineConfig {
            segment_bytes: 1 << 20,
            compaction_interval_ms: 3_600_000,
            durability: Durability::None,
            ..EngineConfig::default()
        };
        Engine::open(storage, &dir.join("index.map"), config).await.expect("open")
    }

    /// An entry that points into a segment compaction removed is looked up
    /// again: the key is listed from where its entry is now; an entry that
    /// disappeared meanwhile lists nothing; one that never resolves is an
    /// error after `RESOLVE_ATTEMPTS_MAX` tries, not a hang or a wrong answer.
    #[test]
    fn a_removed_segment_is_looked_up_again() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let e = open(dir.path()).await;
            e.put(b"moved", Bytes::from_static(b"v"), 5, 0).await.unwrap();
            let inner = e.inner();
            let fp = fingerprint(b"moved");
            let current: Vec<Entry> = inner.index.borrow().lookup(fp).map(|(_, x)| x).collect();
            assert_eq!(current.len(), 1);
            let gone = Loc::new(crate::limits::SEGMENT_ID_MAX, 4096, current[0].loc.len_code).unwrap();
            assert!(inner.segment(gone.segment).is_none());
            let stale = Entry { loc: gone, ..current[0] };
            let listed = inner.list_fingerprint(fp, vec![stale]).await.unwrap();
            let want = ListedKey {
                fingerprint: fp,
                key: Bytes::from_static(b"moved"),
                version: 5,
                tombstone: false,
                expiry_ms: 0,
            };
            assert_eq!(listed, [want]);
            let absent = fingerprint(b"never written");
            assert_eq!(inner.list_fingerprint(absent, vec![stale]).await.unwrap(), []);
            // An index entry that always points at a missing segment.
            inner.index.borrow_mut().insert(absent, stale).unwrap();
            let err = e.list_keys(absent, absent + 1, 10).await.unwrap_err();
            assert!(matches!(err, EngineError::Closed(_)), "{err}");
            e.abandon().await;
        });
    }

    /// An entry whose record is sound but is another key's, another version,
    /// or of the wrong kind is skipped and counted as corruption.
    #[test]
    fn an_entry_that_does_not_match_its_record_is_skipped_and_counted() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let e = open(dir.path()).await;
            e.put(b"a", Bytes::from_static(b"v"), 5, 0).await.unwrap();
            let inner = e.inner();
            let fp = fingerprint(b"a");
            let real = inner.index.borrow().lookup(fp).next().unwrap().1;
            let wrong = [
                (fingerprint(b"b"), real),
                (fp, Entry { version: 6, ..real }),
                (fp, Entry { tombstone: true, ..real }),
            ];
            for (i, (fp, entry)) in wrong.into_iter().enumerate() {
                assert_eq!(inner.list_fingerprint(fp, vec![entry]).await.unwrap(), [], "case {i}");
                assert_eq!(e.stats().corrupt_records, i as u64 + 1, "case {i}");
            }
            assert_eq!(inner.list_fingerprint(fp, vec![real]).await.unwrap().len(), 1);
            assert_eq!(e.stats().corrupt_records, 3);
            e.close().await.unwrap();
        });
    }
}
