//! Finds a message by its id: a hash table of seqs, each kept as an offset
//! from a base seq in as few bytes as the live seqs' span allows (two bytes
//! a message while it is below 2^16, four below 2^32, else the whole seq);
//! the id itself is compared in the log, so the table holds no copy of it.
//! A mailbox holding at most [`LINEAR`] messages has no table: it keeps a
//! one-byte tag of each id's hash in the index's own eight bytes, and reads
//! its few records only when the tag of the id looked for is among them
//! (at most one look-up in 16 for a full eight, none for an id whose tag is
//! not there, which is every new message's id but a few), so that a store
//! into a small mailbox reads none of its earlier records. A wider span
//! (an old message imported with its seq below a counter that ran on, SPEC
//! §6) widens the table when it is built again.

use super::log::Log;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::OnceLock;

fn hash(id: &[u8]) -> u64 {
    static H: OnceLock<DefaultHashBuilder> = OnceLock::new();
    H.get_or_init(Default::default).hash_one(id)
}

/// The hash of the id of message `seq` as the log holds it (0 if gone).
fn hash_of(log: &Log, seq: u64) -> u64 {
    log.get(seq).map_or(0, |m| hash(m.id))
}

/// Up to this many messages, an id is found by reading the log in order
/// and no table is kept.
pub const LINEAR: u64 = 8;

/// Seqs kept as offsets from `base` in `T` (u16, u32 or u64).
struct Slots<T> {
    table: HashTable<T>,
    base: u64,
}

impl<T: Copy + Eq + Into<u64> + TryFrom<u64>> Slots<T> {
    /// The table of `log`'s messages but those in `later` (see
    /// [`Table::later`]), with room for `room`.
    fn build(log: &Log, base: u64, room: usize, later: &Later) -> Slots<T> {
        let mut o = Slots {
            table: HashTable::with_capacity(room),
            base,
        };
        for m in log.iter_from(0) {
            let h = hash(m.id);
            if !later.is_empty() && later.contains(&(h, m.seq)) {
                continue;
            }
            if let Some(slot) = o.slot(m.seq) {
                o.table
                    .insert_unique(h, slot, |&x: &T| hash_of(log, base + x.into()));
            }
        }
        o
    }

    fn slot(&self, seq: u64) -> Option<T> {
        seq.checked_sub(self.base).and_then(|d| T::try_from(d).ok())
    }

    fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        self.table
            .find(hash(id), |&x: &T| {
                log.get(self.base + x.into()).is_some_and(|m| m.id == id)
            })
            .map(|&x| self.base + x.into())
    }

    /// The lowest seq of the entries with this id (a loaded mailbox may
    /// hold an id more than once: see [`Table::later`]).
    fn find_oldest(&self, log: &Log, id: &[u8]) -> Option<u64> {
        self.table
            .iter_hash(hash(id))
            .map(|&x| self.base + x.into())
            .filter(|&seq| log.get(seq).is_some_and(|m| m.id == id))
            .min()
    }

    /// False when the table is full or `seq` is out of its span.
    fn insert(&mut self, log: &Log, seq: u64, id: &[u8]) -> bool {
        let base = self.base;
        match self.slot(seq) {
            Some(x) if self.table.len() < self.table.capacity() => {
                self.table
                    .insert_unique(hash(id), x, |&x: &T| hash_of(log, base + x.into()));
                true
            }
            _ => false,
        }
    }

    /// As [`Slots::insert`], and notes in `maybe` the entry with the same
    /// tag that the probe meets when it meets one (see [`Maybe`]). A
    /// message that meets two or more is looked up at once: when an older
    /// message has its id, it is not inserted, and the answer is
    /// `Some(false)` (the caller keeps it in [`Table::later`]), so that
    /// the table holds few entries of one id and its probes stay short.
    /// `None` when the table is full or `seq` is out of its span (nothing
    /// inserted, nothing noted); else `Some(true)`.
    fn insert_noting(&mut self, log: &Log, seq: u64, id: &[u8], maybe: &mut Maybe) -> Option<bool> {
        let base = self.base;
        let x = self.slot(seq)?;
        // Below capacity, inserting does not grow the table (growth would
        // rehash every id, reading the log).
        if self.table.len() >= self.table.capacity() {
            return None;
        }
        let h = hash(id);
        // The first two entries with the same tag, at most: a message whose
        // id many others share (a crafted payload) costs no more than one
        // that meets two, where noting every one was quadratic.
        let (mut first, mut more) = (None, false);
        self.table.find(h, |&y: &T| {
            if first.is_none() {
                first = Some(base + y.into());
                false
            } else {
                more = true;
                true
            }
        });
        match (first, more) {
            (Some(earlier), false) => maybe.pairs.push((earlier, seq, h)),
            (Some(_), true) if self.find(log, id).is_some() => {
                maybe.repeats += 1;
                return Some(false);
            }
            _ => {}
        }
        self.table
            .insert_unique(h, x, |&y: &T| hash_of(log, base + y.into()));
        Some(true)
    }

    fn remove(&mut self, seq: u64, id: &[u8]) {
        if let Some(x) = self.slot(seq) {
            if let Ok(e) = self.table.find_entry(hash(id), |&y| y == x) {
                e.remove();
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<T>() + 1)
    }
}

/// `$body` with `$t` bound to whichever width the table's slots have.
macro_rules! any_width {
    ($table:expr, $t:ident => $body:expr) => {
        match $table {
            Width::N16($t) => $body,
            Width::N32($t) => $body,
            Width::N64($t) => $body,
        }
    };
}

enum Width {
    N16(Slots<u16>),
    N32(Slots<u32>),
    N64(Slots<u64>),
}

struct Table {
    slots: Width,
    /// `(hash of the id, seq)` of the messages that a load found, by a
    /// look-up (when their probe met two or more entries of their tag, or
    /// when the table was built again), repeating the id of an older
    /// message (SPEC §1 forbids it; only a crafted payload, or a file one
    /// went into, holds such): kept out of the slots, so that a payload of
    /// many messages of one id does not make every probe walk past all of
    /// them (quadratic). While it is not empty, an id is looked up in both
    /// and the lower seq answers. Empty, and allocating nothing, in every
    /// other mailbox (boxed, so that the table fits one cache line).
    later: Option<Box<Later>>,
}

/// `(hash of the id, seq)`, in order: see [`Table::later`].
type Later = BTreeSet<(u64, u64)>;

impl Table {
    /// The seq of the oldest live message with this id.
    fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        let Some(later) = self.later.as_deref() else {
            return any_width!(&self.slots, t => t.find(log, id));
        };
        let h = hash(id);
        let later = later
            .range((h, 0)..=(h, u64::MAX))
            .map(|&(_, seq)| seq)
            .find(|&seq| log.get(seq).is_some_and(|m| m.id == id));
        let slots = any_width!(&self.slots, t => t.find_oldest(log, id));
        match (slots, later) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The tag of an id's hash: its top seven bits, and the low bit set (an
/// index holding tags is told from one holding a table by that bit).
fn tag(hash: u64) -> u8 {
    ((hash >> 56) as u8) | 1
}

/// Eight tags of `0x01` and none live: an empty index.
const NO_TAGS: u64 = 0x0101_0101_0101_0101;

/// What a load noted of ids that may repeat (for
/// [`IdIndex::insert_noting`]), for [`IdIndex::repeated`] to check once
/// the mailbox has loaded. Comparing ids as they are met would read a
/// message at a random place in the log for each (1 µs or more in a large
/// mailbox, some 0.2 s for 1,000,000 messages). Empty in a mailbox of
/// unique ids but for chance meetings of tags (about one message in ten at
/// the table's fullest), at most one note (24 bytes) a message, for the
/// load's duration.
#[derive(Default)]
pub struct Maybe {
    /// (the earlier message's seq, the loaded message's seq, the hash of
    /// the loaded message's id): the loaded message met one entry with
    /// its tag, or a lookup found its id; checked reading the earlier
    /// messages in seq order.
    pairs: Vec<(u64, u64, u64)>,
    /// Loaded messages that met two or more entries with their tag (rare
    /// but where many messages share an id) and were looked up at once,
    /// and found an older message with their id.
    repeats: u64,
}

/// A mailbox's live messages by id (SPEC §1: an id is unique within the
/// mailbox), for duplicate stores and acks by id (SPEC §3). Eight bytes
/// (the mailbox's size class has no room for more): either the tags of a
/// small log's ids, or the address of its table.
pub struct IdIndex {
    /// With its low bit set: eight tags ([`tag`]), byte `i` (bits `8i..8i +
    /// 8`) the tag of one live message's id, the first `log.len()` of them
    /// live, in no order; a log of at most [`LINEAR`] messages. With its
    /// low bit clear: the address of a `Box<Table>` the index owns (from
    /// `Box::into_raw`, aligned, so never odd), whatever the log's length.
    repr: u64,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex { repr: NO_TAGS }
    }
}

impl Drop for IdIndex {
    fn drop(&mut self) {
        self.set_table(None);
    }
}

impl IdIndex {
    fn table(&self) -> Option<&Table> {
        if self.repr & 1 == 1 {
            return None;
        }
        // SAFETY: an even `repr` is a live `Box<Table>`'s address, owned by
        // this index (see `repr`).
        Some(unsafe { &*std::ptr::with_exposed_provenance::<Table>(self.repr as usize) })
    }

    fn table_mut(&mut self) -> Option<&mut Table> {
        if self.repr & 1 == 1 {
            return None;
        }
        // SAFETY: as in `table`, and `&mut self` makes the access unique.
        Some(unsafe { &mut *std::ptr::with_exposed_provenance_mut::<Table>(self.repr as usize) })
    }

    /// Replaces the table (`None`: back to no tags), freeing the old one.
    fn set_table(&mut self, table: Option<Box<Table>>) {
        if self.repr & 1 == 0 {
            // SAFETY: an even `repr` came from `Box::into_raw` and is
            // given up here, once: `repr` changes below.
            drop(unsafe {
                Box::from_raw(std::ptr::with_exposed_provenance_mut::<Table>(
                    self.repr as usize,
                ))
            });
        }
        self.repr = match table {
            Some(t) => Box::into_raw(t).expose_provenance() as u64,
            None => NO_TAGS,
        };
        debug_assert!(self.repr != 0);
    }

    /// Where among the first `n` tags one is `t`.
    fn tag_at(&self, n: u64, t: u8) -> Option<u32> {
        (0..n.min(LINEAR) as u32).find(|&i| (self.repr >> (8 * i)) as u8 == t)
    }

    fn put_tag(&mut self, i: u32, t: u8) {
        let shift = 8 * i;
        self.repr = (self.repr & !(0xff << shift)) | (u64::from(t) << shift);
    }

    /// Heap bytes held (for `MEMORY USAGE`): a slot's bytes and one more
    /// a slot.
    pub fn heap_bytes(&self) -> usize {
        match self.table() {
            None => 0,
            Some(table) => {
                // A B-tree's node holds up to 11 entries, about two thirds
                // full: 24 bytes an entry, roughly.
                std::mem::size_of::<Table>()
                    + table
                        .later
                        .as_deref()
                        .map_or(0, |l| std::mem::size_of::<Later>() + l.len() * 24)
                    + any_width!(&table.slots, t => t.heap_bytes())
            }
        }
    }

    /// Asks the CPU to start fetching the table's header (where its slots
    /// are), the first link a [`IdIndex::find`] follows; nothing while
    /// there is no table.
    pub fn prefetch(&self) {
        crate::prefetch::prefetch(self.table());
    }

    /// The seq of the live message with this id; `None` when `log` holds
    /// none.
    pub fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        match self.table() {
            None => {
                self.tag_at(log.len(), tag(hash(id)))?;
                log.iter_from(0).find(|m| m.id == id).map(|m| m.seq)
            }
            Some(table) => table.find(log, id),
        }
    }

    /// Indexes message `seq`, which `log` already holds.
    pub fn insert(&mut self, log: &Log, seq: u64, id: &[u8]) {
        let n = log.len();
        let done = match self.table_mut() {
            None if n == 0 => true,
            None if n <= LINEAR => {
                // The new message's tag goes after the live ones.
                self.put_tag((n - 1) as u32, tag(hash(id)));
                true
            }
            None => false,
            Some(table) => any_width!(&mut table.slots, t => t.insert(log, seq, id)),
        };
        if !done {
            self.rebuild(log, seq, None);
        }
    }

    /// Indexes message `seq`, which `log` already holds, as
    /// [`IdIndex::insert`] does, for a loader, which meets ids no command
    /// checked (a `RESTORE` payload any client may craft): notes in
    /// `maybe` the messages whose id may be the same (SPEC §1: an id is
    /// unique within the mailbox), for [`IdIndex::repeated`] to check once
    /// the mailbox has loaded. A repeated id is indexed all the same, so
    /// that an id finds its messages oldest first: after the messages
    /// that have it already, or, once the table holds two or more of
    /// them, in [`Table::later`].
    pub fn insert_noting(&mut self, log: &Log, seq: u64, id: &[u8], maybe: &mut Maybe) {
        let n = log.len();
        let done = match self.table_mut() {
            None if n <= LINEAR => {
                for m in log.iter_from(0) {
                    if m.seq != seq && m.id == id {
                        maybe.pairs.push((m.seq, seq, hash(id)));
                    }
                }
                self.insert(log, seq, id);
                return;
            }
            None => false,
            Some(table) => {
                match any_width!(&mut table.slots, t => t.insert_noting(log, seq, id, maybe)) {
                    Some(true) => true,
                    Some(false) => {
                        table
                            .later
                            .get_or_insert_with(Box::default)
                            .insert((hash(id), seq));
                        true
                    }
                    None => false,
                }
            }
        };
        if !done {
            // The table is built again (as often as it doubles, or when
            // `seq` is out of its span): the id is looked up first.
            let held = match self.table() {
                Some(table) => table.find(log, id),
                None => log
                    .iter_from(0)
                    .find(|m| m.seq != seq && m.id == id)
                    .map(|m| m.seq),
            };
            // A repeat goes to `later`, not to the slots; a look-up takes
            // the lower seq of the two, so the oldest still answers.
            let later = held.map(|_| {
                maybe.repeats += 1;
                (hash(id), seq)
            });
            self.rebuild(log, seq, later);
        }
    }

    /// How many messages of `log` have an id that an earlier message of it
    /// has too, of those `maybe` noted while they loaded; forgets the
    /// notes. A pair's earlier message is read in seq order and its id
    /// hashed, and only where the hashes agree is the loaded message read
    /// and the ids compared; the messages looked up as they loaded are
    /// counted as they were found. Linear in the notes.
    pub fn repeated(&self, log: &Log, maybe: &mut Maybe) -> u64 {
        let mut pairs = std::mem::take(&mut maybe.pairs);
        pairs.sort_unstable();
        let mut repeats: Vec<u64> = pairs
            .iter()
            .filter(|&&(earlier, later, h)| {
                log.get(earlier).is_some_and(|a| {
                    hash(a.id) == h && log.get(later).is_some_and(|b| b.id == a.id)
                })
            })
            .map(|&(_, later, _)| later)
            .collect();
        repeats.sort_unstable();
        repeats.dedup();
        repeats.len() as u64 + std::mem::take(&mut maybe.repeats)
    }

    /// Builds the table afresh from the log, which holds `seq` already: to
    /// grow it (the ids are hashed reading the log in order, which costs
    /// far less than looking up every entry a rehash moves), or around a
    /// base that covers `seq` and every live message (an import below the
    /// base, or a counter run on), in the narrowest slots that span them.
    fn rebuild(&mut self, log: &Log, seq: u64, also_later: Option<(u64, u64)>) {
        let first = log.first().map_or(seq, |m| m.seq).min(seq);
        let last = log.last().map_or(seq, |m| m.seq).max(seq);
        let mut later = self
            .table_mut()
            .and_then(|t| t.later.take())
            .map_or_else(Later::new, |l| *l);
        later.extend(also_later);
        // Room for at least one more: a full table doubles, as it would
        // growing by itself. Room for the messages in `later` too: a build
        // reads the whole log, so slots sized for the few outside `later`
        // would be built again at every doubling while new messages come,
        // each time reading all of it.
        let room = usize::try_from(log.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .max(8);
        let span = last - first;
        let slots = if u16::try_from(span).is_ok() {
            Width::N16(Slots::build(log, first, room, &later))
        } else if u32::try_from(span).is_ok() {
            Width::N32(Slots::build(log, first, room, &later))
        } else {
            Width::N64(Slots::build(log, first, room, &later))
        };
        let later = (!later.is_empty()).then(|| Box::new(later));
        self.set_table(Some(Box::new(Table { slots, later })));
    }

    /// Forgets message `seq` with this id, which `log` still holds. The
    /// table goes with the log's last message.
    pub fn remove(&mut self, log: &Log, seq: u64, id: &[u8]) {
        let n = log.len();
        match self.table_mut() {
            None => {
                // Its tag gives way to the last live one.
                if let Some(i) = self.tag_at(n, tag(hash(id))) {
                    let last = (n.min(LINEAR) - 1) as u32;
                    let moved = (self.repr >> (8 * last)) as u8;
                    self.put_tag(i, moved);
                }
            }
            Some(_) if n <= 1 => self.set_table(None),
            Some(table) => {
                let in_later = table
                    .later
                    .as_deref_mut()
                    .is_some_and(|later| later.remove(&(hash(id), seq)));
                if !in_later {
                    any_width!(&mut table.slots, t => t.remove(seq, id));
                } else if table.later.as_deref().is_some_and(Later::is_empty) {
                    table.later = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::log::{IdSpec, Message, NewMsg};
    use crate::test_rng::Rng;
    use std::collections::BTreeMap;

    fn put(log: &mut Log, index: &mut IdIndex, seq: u64, id: &[u8]) {
        log.insert(&NewMsg {
            message: Message {
                seq,
                ts: 1000,
                flags: 0,
                id: IdSpec::Own(id),
                stanza: b"<message/>",
            },
            owers: 1,
        });
        index.insert(log, seq, id);
    }

    fn take(log: &mut Log, index: &mut IdIndex, seq: u64, id: &[u8]) {
        index.remove(log, seq, id);
        log.remove(seq);
    }

    /// Ids whose tags are all the same: a small log where every look-up
    /// is a tag's hit, and the right message must still be found.
    fn same_tag_ids(n: usize) -> Vec<Vec<u8>> {
        let want = tag(hash(b"c0"));
        (0..)
            .map(|i| format!("c{i}").into_bytes())
            .filter(|id| tag(hash(id)) == want)
            .take(n)
            .collect()
    }

    /// Random stores and removals against a map of the live ids, through
    /// the tags (up to `LINEAR` messages), the table and back: every live
    /// id is found at its seq and no removed or unknown one is.
    #[test]
    fn the_index_finds_exactly_the_live_ids() {
        for (case, pool) in [
            (
                0u64,
                (0..40)
                    .map(|i| format!("m{i}").into_bytes())
                    .collect::<Vec<_>>(),
            ),
            (1, same_tag_ids(12)),
        ] {
            let mut rng = Rng(0x5eed + case);
            let (mut log, mut index) = (Log::default(), IdIndex::default());
            let mut live: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let mut seq = 1;
            for step in 0..4000 {
                // The log moves about a size that changes every 400
                // steps: within the tags, across `LINEAR`, down to none.
                let target = [3usize, 8, 20, 0, 6][(step / 400) % 5];
                let store = rng.below(4) < if live.len() < target { 3 } else { 1 };
                if store {
                    let id = &pool[rng.index(pool.len())];
                    if !live.contains_key(id) {
                        put(&mut log, &mut index, seq, id);
                        live.insert(id.clone(), seq);
                        seq += 1;
                    }
                } else if let Some((id, s)) = live.iter().nth(rng.index(live.len())) {
                    let (id, s) = (id.clone(), *s);
                    take(&mut log, &mut index, s, &id);
                    live.remove(&id);
                }
                for id in &pool {
                    assert_eq!(
                        index.find(&log, id),
                        live.get(id).copied(),
                        "case {case}, step {step}, id {}",
                        String::from_utf8_lossy(id)
                    );
                }
                // A table past `LINEAR` messages, none once they are gone.
                if log.len() > LINEAR {
                    assert!(index.table().is_some(), "case {case}, step {step}");
                } else if log.is_empty() {
                    assert!(index.table().is_none(), "case {case}, step {step}");
                }
            }
        }
    }

    /// A small log keeps its ids' tags inline (no table, no heap), grows
    /// a table past `LINEAR` messages and drops it with the last one.
    #[test]
    fn a_small_log_keeps_tags_and_a_large_one_a_table() {
        let (mut log, mut index) = (Log::default(), IdIndex::default());
        for seq in 1..=LINEAR {
            put(&mut log, &mut index, seq, format!("s{seq}").as_bytes());
            assert!(index.table().is_none() && index.heap_bytes() == 0);
        }
        put(&mut log, &mut index, LINEAR + 1, b"one more");
        assert!(index.table().is_some() && index.heap_bytes() > 0);
        for seq in 1..=LINEAR {
            take(&mut log, &mut index, seq, format!("s{seq}").as_bytes());
        }
        assert_eq!(index.find(&log, b"one more"), Some(LINEAR + 1));
        take(&mut log, &mut index, LINEAR + 1, b"one more");
        assert!(index.table().is_none());
        assert_eq!(index.repr, NO_TAGS);
    }

    /// A table's header (where its slots are, and whether a load left
    /// repeats beside them) is one allocation of at most a cache line,
    /// which `IdIndex::prefetch` asks for.
    #[test]
    fn a_table_header_fits_a_cache_line() {
        assert!(std::mem::size_of::<Table>() <= 64);
    }

    /// An id whose tag is not among a small log's tags is answered without
    /// reading the log: an index whose tags leave it out says `None` even
    /// of a log that holds it (an index is never used so, but a scan would
    /// have found it).
    #[test]
    fn a_missing_tag_reads_no_record() {
        let id = (0..)
            .map(|i| format!("q{i}").into_bytes())
            .find(|id| tag(hash(id)) != tag(0))
            .unwrap_or_default();
        let (mut log, mut index) = (Log::default(), IdIndex::default());
        put(&mut log, &mut index, 1, &id);
        assert_eq!(index.find(&log, &id), Some(1));
        // The tags of another message in place of this one's.
        let other = IdIndex::default();
        assert_eq!(other.find(&log, &id), None);
    }

    /// A load of messages that all carry one id (only a crafted payload
    /// holds such) notes at most one thing a message, counts every
    /// message but the first as a repeat, and keeps all but a few of them
    /// out of the table's slots, so that acking them by the id, oldest
    /// first, stays linear too.
    #[test]
    fn a_load_where_every_message_shares_one_id_stays_linear() {
        for n in [3u64, 8, 9, 100, 5000, 100_000] {
            let (mut log, mut index, mut maybe) =
                (Log::default(), IdIndex::default(), Maybe::default());
            for seq in 1..=n {
                log.insert(&NewMsg {
                    message: Message {
                        seq,
                        ts: 1000,
                        flags: 0,
                        id: IdSpec::Own(b"same"),
                        stanza: b"<message/>",
                    },
                    owers: 1,
                });
                index.insert_noting(&log, seq, b"same", &mut maybe);
            }
            // While the log holds up to eight messages, each earlier
            // repeat is noted (28 at most); then one note a message.
            let notes = maybe.pairs.len() as u64 + maybe.repeats;
            assert!(
                notes <= n + LINEAR * (LINEAR - 1) / 2,
                "{n} messages, {notes} notes"
            );
            assert_eq!(index.repeated(&log, &mut maybe), n - 1, "{n} messages");
            if let Some(table) = index.table() {
                let in_slots = any_width!(&table.slots, t => t.table.len()) as u64;
                assert!(
                    in_slots <= LINEAR + 2,
                    "{n} messages, {in_slots} in the slots"
                );
                let later = table.later.as_ref().map_or(0, |l| l.len()) as u64;
                assert_eq!(in_slots + later, n);
            }
            // New ids after the load: the table is built again (reading
            // the whole log) once or twice, not at each doubling of the few
            // slots the repeats left.
            let mut builds = 0;
            for i in 0..3000 {
                let repr = index.repr;
                put(
                    &mut log,
                    &mut index,
                    n + 1 + i,
                    format!("new{i}").as_bytes(),
                );
                builds += u32::from(index.repr != repr);
            }
            // (A log that 3,000 more messages double or more grows as any
            // does.)
            assert!(
                n < 5000 || builds <= 2,
                "{n} messages, built {builds} times"
            );
            for i in 0..3000 {
                take(
                    &mut log,
                    &mut index,
                    n + 1 + i,
                    format!("new{i}").as_bytes(),
                );
            }
            for seq in 1..=n {
                assert_eq!(index.find(&log, b"same"), Some(seq), "{n} messages");
                take(&mut log, &mut index, seq, b"same");
            }
            assert_eq!(index.find(&log, b"same"), None);
            assert!(index.table().is_none());
        }
    }

    /// Loads of ids drawn from a small pool (so most repeat), then random
    /// removals, by the id (the oldest of it, as an ack by the id does)
    /// or by seq (as an ack `UPTO`, an expiry or a quota does), and stores
    /// of new ids: an id always finds the oldest live message with it.
    #[test]
    fn a_loaded_repeated_id_finds_its_oldest_message_to_the_last() {
        for case in 0..40u64 {
            let mut rng = Rng(0x1d5 + case);
            let pool: Vec<Vec<u8>> = if case % 2 == 0 {
                (0..1 + case / 4)
                    .map(|i| format!("r{i}").into_bytes())
                    .collect()
            } else {
                same_tag_ids(3)
            };
            let (mut log, mut index, mut maybe) =
                (Log::default(), IdIndex::default(), Maybe::default());
            let mut live: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let n = 1 + rng.below(200);
            for seq in 1..=n {
                let id = pool[rng.index(pool.len())].clone();
                log.insert(&NewMsg {
                    message: Message {
                        seq,
                        ts: 1000,
                        flags: 0,
                        id: IdSpec::Own(&id),
                        stanza: b"<message/>",
                    },
                    owers: 1,
                });
                index.insert_noting(&log, seq, &id, &mut maybe);
                live.insert(seq, id);
            }
            let mut next = n + 1;
            for step in 0..400 {
                let choice = rng.below(4);
                if choice == 0 {
                    // A store of a new id.
                    let id = format!("new{next}").into_bytes();
                    put(&mut log, &mut index, next, &id);
                    live.insert(next, id);
                    next += 1;
                } else if live.is_empty() {
                    break;
                } else {
                    let (seq, id) = if choice == 1 {
                        let id = pool[rng.index(pool.len())].clone();
                        match index.find(&log, &id) {
                            Some(seq) => (seq, id),
                            None => continue,
                        }
                    } else {
                        let (s, id) = live.iter().nth(rng.index(live.len())).unwrap();
                        (*s, id.clone())
                    };
                    take(&mut log, &mut index, seq, &id);
                    live.remove(&seq);
                }
                for id in &pool {
                    let oldest = live.iter().find(|(_, v)| *v == id).map(|(s, _)| *s);
                    assert_eq!(index.find(&log, id), oldest, "case {case}, step {step}");
                }
                // Every live message is in the slots or in `later`, once.
                if let Some(table) = index.table() {
                    let in_slots = any_width!(&table.slots, t => t.table.len());
                    assert_eq!(
                        in_slots + table.later.as_ref().map_or(0, |l| l.len()),
                        live.len(),
                        "case {case}, step {step}"
                    );
                }
            }
        }
    }
}
