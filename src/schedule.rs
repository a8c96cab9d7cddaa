//! The deadline index the timer pops: for every mailbox that has timer work
//! ahead, when that work is due (ms). Ordered by due time, so a run touches
//! only what is due. Each entry is `(due, id) -> key name` (the db and the
//! key); the mailbox itself remembers its entry (see [`Entry`]), so moving
//! or dropping it needs no lookup by name and comparisons never read key
//! bytes.

use std::cell::Cell;
use std::collections::BTreeMap;

/// A mailbox's db and key: `db` (4 bytes, little endian) followed by the
/// key's bytes. Owned, not shared: every mailbox with timer work holds one
/// in the schedule, and a refcount would add 16 bytes to each.
pub type KeyName = Box<[u8]>;

/// The [`KeyName`] of `key` in `db`.
pub fn key_name(db: i32, key: &[u8]) -> KeyName {
    let mut v: smallvec::SmallVec<[u8; 64]> = smallvec::SmallVec::with_capacity(4 + key.len());
    v.extend_from_slice(&db.to_le_bytes());
    v.extend_from_slice(key);
    Box::from(&v[..])
}

/// Splits a [`KeyName`] into its db and key.
pub fn split(name: &[u8]) -> (i32, &[u8]) {
    let db = name
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, i32::from_le_bytes);
    (db, name.get(4..).unwrap_or_default())
}

/// What a mailbox knows of its own schedule entry (kept in memory only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Entry {
    /// Not known: the mailbox has no entry and its due time is to be
    /// worked out (new, loaded, or just popped by the timer).
    #[default]
    Unknown,
    /// No timer work ahead; no entry.
    Idle,
    /// The entry `(due, id)`.
    At { due: i64, id: u64 },
}

impl Entry {
    pub fn due(&self) -> Option<Option<i64>> {
        match *self {
            Entry::Unknown => None,
            Entry::Idle => Some(None),
            Entry::At { due, .. } => Some(Some(due)),
        }
    }
}

#[derive(Default)]
pub struct Schedule {
    by_due: BTreeMap<(i64, u64), KeyName>,
    next_id: u64,
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// Moves a mailbox's entry to `due` (or with `None` removes it); the
    /// mailbox's own record of it follows. `name` names the mailbox, built
    /// only when a new entry needs it.
    pub fn set(&mut self, entry: &Cell<Entry>, due: Option<i64>, name: impl FnOnce() -> KeyName) {
        let old = entry.get();
        if old.due() == Some(due) {
            return;
        }
        let kept = match old {
            Entry::At { due, id } => self.by_due.remove(&(due, id)),
            _ => None,
        };
        entry.set(match due {
            Some(due) => {
                self.next_id = self.next_id.wrapping_add(1);
                let id = self.next_id;
                self.by_due.insert((due, id), kept.unwrap_or_else(name));
                Entry::At { due, id }
            }
            None => Entry::Idle,
        });
    }

    /// Removes a mailbox's entry, if it has one; it is then unknown.
    pub fn forget(&mut self, entry: &Cell<Entry>) {
        if let Entry::At { due, id } = entry.get() {
            self.by_due.remove(&(due, id));
        }
        entry.set(Entry::Unknown);
    }

    pub fn next_due(&self) -> Option<i64> {
        self.by_due.first_key_value().map(|((d, _), _)| *d)
    }

    /// Removes and answers the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, u64, KeyName)> {
        let ((due, _), _) = self.by_due.first_key_value()?;
        if *due > now {
            return None;
        }
        let ((due, id), name) = self.by_due.pop_first()?;
        Some((due, id, name))
    }

    pub fn clear(&mut self) {
        self.by_due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_moves_and_pops() {
        let mut s = Schedule::default();
        let (a0, b0, a1) = (Cell::default(), Cell::default(), Cell::default());
        s.set(&a0, Some(30), || key_name(0, b"a"));
        s.set(&b0, Some(10), || key_name(0, b"b"));
        s.set(&a1, Some(20), || key_name(1, b"a"));
        assert_eq!(s.len(), 3);
        s.set(&b0, Some(40), || unreachable!("the entry's name is kept"));
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_due(), Some(20));
        assert_eq!(s.pop_due(15), None);
        let (due, id, name) = s.pop_due(25).unwrap();
        assert_eq!((due, split(&name)), (20, (1, &b"a"[..])));
        assert_eq!(a1.get(), Entry::At { due: 20, id });
        s.set(&a0, None, || unreachable!());
        assert_eq!(a0.get(), Entry::Idle);
        assert_eq!(s.len(), 1);
        s.forget(&b0);
        assert_eq!(b0.get(), Entry::Unknown);
        assert!(s.is_empty() && s.next_due().is_none());
    }
}
