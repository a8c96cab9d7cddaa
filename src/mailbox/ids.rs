//! Finds a message by its id: a hash table of seqs, each kept as a 32-bit
//! offset from a base seq (four bytes a message); the id itself is compared
//! in the log, so the table holds no copy of it.

use super::log::Log;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::OnceLock;

fn hash(id: &[u8]) -> u64 {
    static H: OnceLock<DefaultHashBuilder> = OnceLock::new();
    H.get_or_init(Default::default).hash_one(id)
}

pub struct IdIndex {
    table: HashTable<u32>,
    base: u64,
}

impl IdIndex {
    pub fn new(base: u64) -> IdIndex {
        IdIndex {
            table: HashTable::new(),
            base,
        }
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    fn offset(&self, seq: u64) -> Option<u32> {
        seq.checked_sub(self.base)
            .and_then(|d| u32::try_from(d).ok())
    }

    /// The seq of the live message with this id.
    pub fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        let base = self.base;
        self.table
            .find(hash(id), |&o| {
                log.get(base + u64::from(o)).is_some_and(|m| m.id == id)
            })
            .map(|&o| base + u64::from(o))
    }

    /// Indexes message `seq`, which `log` already holds.
    pub fn insert(&mut self, log: &Log, seq: u64, id: &[u8]) {
        let full = self.table.len() >= self.table.capacity();
        let Some(o) = self.offset(seq).filter(|_| !full) else {
            self.rebuild(log, seq);
            return;
        };
        let base = self.base;
        self.table.insert_unique(hash(id), o, |&o| {
            log.get(base + u64::from(o)).map_or(0, |m| hash(m.id))
        });
    }

    /// Builds the table afresh from the log, which holds `seq` already: to
    /// grow it (the ids are hashed reading the log in order, which costs
    /// far less than looking up every entry a rehash moves), or around a
    /// base that covers `seq` and every live message (an import below the
    /// base, or a counter run past 2^32).
    fn rebuild(&mut self, log: &Log, seq: u64) {
        let first = log.first().map_or(seq, |m| m.seq);
        let base = first.min(seq);
        // Room for at least one more: a full table doubles, as it would
        // growing by itself.
        let live = usize::try_from(log.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut table = HashTable::with_capacity(live.max(8));
        for m in log.iter_from(0) {
            if let Ok(o) = u32::try_from(m.seq - base) {
                table.insert_unique(hash(m.id), o, |&o| {
                    log.get(base + u64::from(o)).map_or(0, |m| hash(m.id))
                });
            }
        }
        self.table = table;
        self.base = base;
    }

    /// Forgets message `seq` with this id.
    pub fn remove(&mut self, seq: u64, id: &[u8]) {
        let Some(o) = self.offset(seq) else {
            return;
        };
        if let Ok(e) = self.table.find_entry(hash(id), |&x| x == o) {
            e.remove();
        }
    }
}
