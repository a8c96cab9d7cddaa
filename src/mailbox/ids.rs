//! Finds a message by its id: a hash table of seqs, each kept as an offset
//! from a base seq in as few bytes as the live seqs' span allows (two bytes
//! a message while it is below 2^16, four below 2^32, else the whole seq);
//! the id itself is compared in the log, so the table holds no copy of it.
//! A mailbox holding at most [`LINEAR`] messages has no table at all:
//! reading its few records costs less than hashing, and most mailboxes hold
//! that few. A wider span (an old message imported with its seq below a
//! counter that ran on, SPEC §6) widens the table when it is built again.

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

/// Seqs kept as offsets from `base` in `T` (u16, u32 or u64).
struct Slots<T> {
    table: HashTable<T>,
    base: u64,
}

impl<T: Copy + Eq + Into<u64> + TryFrom<u64>> Slots<T> {
    fn build(log: &Log, base: u64, room: usize) -> Slots<T> {
        let mut o = Slots {
            table: HashTable::with_capacity(room),
            base,
        };
        for m in log.iter_from(0) {
            if let Some(slot) = o.slot(m.seq) {
                o.table
                    .insert_unique(hash(m.id), slot, |&x: &T| hash_of(log, base + x.into()));
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

/// `$body` with `$t` bound to whichever width the table has.
macro_rules! any_width {
    ($table:expr, $t:ident => $body:expr) => {
        match $table {
            Table::N16($t) => $body,
            Table::N32($t) => $body,
            Table::N64($t) => $body,
        }
    };
}

enum Table {
    N16(Slots<u16>),
    N32(Slots<u32>),
    N64(Slots<u64>),
}

/// A mailbox's live messages by id (SPEC §1: an id is unique within the
/// mailbox), for duplicate stores and acks by id (SPEC §3).
#[derive(Default)]
pub struct IdIndex {
    /// `None` while the log holds at most [`LINEAR`] messages.
    table: Option<Box<Table>>,
}

impl IdIndex {
    /// Heap bytes held (for `MEMORY USAGE`): a slot's bytes and one more
    /// a slot.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Table>()
            + match self.table.as_deref() {
                None => return 0,
                Some(table) => any_width!(table, t => t.heap_bytes()),
            }
    }

    /// Asks the CPU to start fetching the table's header (where its slots
    /// are), the first link a [`IdIndex::find`] follows; nothing while
    /// there is no table.
    pub fn prefetch(&self) {
        crate::prefetch::prefetch(self.table.as_deref());
    }

    /// The seq of the live message with this id; `None` when `log` holds
    /// none.
    pub fn find(&self, log: &Log, id: &[u8]) -> Option<u64> {
        match self.table.as_deref() {
            None => log.iter_from(0).find(|m| m.id == id).map(|m| m.seq),
            Some(table) => any_width!(table, t => t.find(log, id)),
        }
    }

    /// Indexes message `seq`, which `log` already holds.
    pub fn insert(&mut self, log: &Log, seq: u64, id: &[u8]) {
        let done = match self.table.as_deref_mut() {
            None => log.len() <= LINEAR,
            Some(table) => any_width!(table, t => t.insert(log, seq, id)),
        };
        if !done {
            self.rebuild(log, seq);
        }
    }

    /// Builds the table afresh from the log, which holds `seq` already: to
    /// grow it (the ids are hashed reading the log in order, which costs
    /// far less than looking up every entry a rehash moves), or around a
    /// base that covers `seq` and every live message (an import below the
    /// base, or a counter run on), in the narrowest slots that span them.
    fn rebuild(&mut self, log: &Log, seq: u64) {
        let first = log.first().map_or(seq, |m| m.seq).min(seq);
        let last = log.last().map_or(seq, |m| m.seq).max(seq);
        // Room for at least one more: a full table doubles, as it would
        // growing by itself.
        let room = usize::try_from(log.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .max(8);
        let span = last - first;
        let table = if u16::try_from(span).is_ok() {
            Table::N16(Slots::build(log, first, room))
        } else if u32::try_from(span).is_ok() {
            Table::N32(Slots::build(log, first, room))
        } else {
            Table::N64(Slots::build(log, first, room))
        };
        self.table = Some(Box::new(table));
    }

    /// Forgets message `seq` with this id, which `log` still holds. The
    /// table goes with the log's last message.
    pub fn remove(&mut self, log: &Log, seq: u64, id: &[u8]) {
        if log.len() <= 1 {
            self.table = None;
            return;
        }
        if let Some(table) = self.table.as_deref_mut() {
            any_width!(table, t => t.remove(seq, id));
        }
    }
}
