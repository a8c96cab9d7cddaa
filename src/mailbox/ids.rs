//! Finds a message by its id: a hash table of seqs, each kept as a 32-bit
//! offset from a base seq (four bytes a message); the id itself is compared
//! in the log, so the table holds no copy of it. A mailbox holding at most
//! [`LINEAR`] messages has no table at all: reading its few records costs
//! less than hashing, and most mailboxes hold that few. When the live seqs span
//! more than 2^32 (an old message imported with its seq below a counter
//! that ran on, SPEC §6), the table keeps whole seqs instead (eight bytes a
//! message) until it is built again over a narrower span.

use super::log::Log;
use hashbrown::{DefaultHashBuilder, HashTable};
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

enum Table {
    /// Offsets from `base`.
    Narrow { table: HashTable<u32>, base: u64 },
    /// Whole seqs.
    Wide(HashTable<u64>),
}

/// A mailbox's live messages by id (SPEC §1: an id is unique within the
/// mailbox), for duplicate stores and acks by id (SPEC §3).
pub struct IdIndex {
    /// `None` while the log holds at most [`LINEAR`] messages.
    table: Option<Box<Table>>,
}

impl IdIndex {
    /// An empty index (no table: the log is empty).
    pub fn new() -> IdIndex {
        IdIndex { table: None }
    }

    /// Heap bytes held (for `MEMORY USAGE`): about five a slot.
    pub fn heap_bytes(&self) -> usize {
        match self.table.as_deref() {
            None => 0,
            Some(Table::Narrow { table, .. }) => {
                std::mem::size_of::<Table>() + table.capacity() * 5
            }
            Some(Table::Wide(t)) => std::mem::size_of::<Table>() + t.capacity() * 9,
        }
    }

    /// The seq of the live message with this id; `None` when `log` holds
    /// none.
    pub fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        let Some(table) = self.table.as_deref() else {
            return log.iter_from(0).find(|m| m.id == id).map(|m| m.seq);
        };
        let is = |seq: u64| log.get(seq).is_some_and(|m| m.id == id);
        match table {
            Table::Narrow { table, base } => table
                .find(hash(id), |&o| is(base + u64::from(o)))
                .map(|&o| base + u64::from(o)),
            Table::Wide(t) => t.find(hash(id), |&s| is(s)).copied(),
        }
    }

    /// Indexes message `seq`, which `log` already holds.
    pub fn insert(&mut self, log: &Log, seq: u64, id: &[u8]) {
        let Some(table) = self.table.as_deref_mut() else {
            if log.len() > LINEAR {
                self.rebuild(log, seq);
            }
            return;
        };
        match table {
            Table::Narrow { table, base } => {
                let base = *base;
                let offset = seq
                    .checked_sub(base)
                    .and_then(|d| u32::try_from(d).ok())
                    .filter(|_| table.len() < table.capacity());
                let Some(o) = offset else {
                    self.rebuild(log, seq);
                    return;
                };
                table.insert_unique(hash(id), o, |&o| hash_of(log, base + u64::from(o)));
            }
            Table::Wide(t) => {
                if t.len() >= t.capacity() {
                    self.rebuild(log, seq);
                    return;
                }
                t.insert_unique(hash(id), seq, |&s| hash_of(log, s));
            }
        }
    }

    /// Builds the table afresh from the log, which holds `seq` already: to
    /// grow it (the ids are hashed reading the log in order, which costs
    /// far less than looking up every entry a rehash moves), or around a
    /// base that covers `seq` and every live message (an import below the
    /// base, or a counter run past 2^32); whole seqs when no 32-bit span
    /// covers them all.
    fn rebuild(&mut self, log: &Log, seq: u64) {
        let first = log.first().map_or(seq, |m| m.seq).min(seq);
        let last = log.last().map_or(seq, |m| m.seq).max(seq);
        // Room for at least one more: a full table doubles, as it would
        // growing by itself.
        let live = usize::try_from(log.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .max(8);
        if u32::try_from(last - first).is_ok() {
            let mut table = HashTable::with_capacity(live);
            for m in log.iter_from(0) {
                let o = (m.seq - first) as u32;
                table.insert_unique(hash(m.id), o, |&o| hash_of(log, first + u64::from(o)));
            }
            self.table = Some(Box::new(Table::Narrow { table, base: first }));
        } else {
            let mut table = HashTable::with_capacity(live);
            for m in log.iter_from(0) {
                table.insert_unique(hash(m.id), m.seq, |&s| hash_of(log, s));
            }
            self.table = Some(Box::new(Table::Wide(table)));
        }
    }

    /// Forgets message `seq` with this id, which `log` still holds. The
    /// table goes with the log's last message.
    pub fn remove(&mut self, log: &Log, seq: u64, id: &[u8]) {
        if log.len() <= 1 {
            self.table = None;
            return;
        }
        let Some(table) = self.table.as_deref_mut() else {
            return;
        };
        match table {
            Table::Narrow { table, base } => {
                let Some(o) = seq.checked_sub(*base).and_then(|d| u32::try_from(d).ok()) else {
                    return;
                };
                if let Ok(e) = table.find_entry(hash(id), |&x| x == o) {
                    e.remove();
                }
            }
            Table::Wide(t) => {
                if let Ok(e) = t.find_entry(hash(id), |&x| x == seq) {
                    e.remove();
                }
            }
        }
    }
}
