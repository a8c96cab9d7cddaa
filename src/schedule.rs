//! The deadline index the timer pops: for every mailbox that has timer work
//! ahead, when that work is due. Ordered by due time, so a sweep touches only
//! what is due; keyed by (db, key) so a change to a mailbox moves its entry.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// `db` (4 bytes, little endian) followed by the key name.
pub type Slot = Arc<[u8]>;

pub fn slot(db: i32, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + key.len());
    v.extend_from_slice(&db.to_le_bytes());
    v.extend_from_slice(key);
    v
}

/// Splits a slot into its db and key name.
pub fn split(slot: &[u8]) -> (i32, &[u8]) {
    let db = slot
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, i32::from_le_bytes);
    (db, slot.get(4..).unwrap_or_default())
}

#[derive(Default)]
pub struct Schedule {
    by_due: BTreeSet<(i64, Slot)>,
    by_slot: HashMap<Slot, i64>,
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.by_slot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_slot.is_empty()
    }

    /// Sets (or with `None` removes) the due time of a mailbox.
    pub fn set(&mut self, slot: &[u8], due: Option<i64>) {
        match (self.by_slot.get(slot).copied(), due) {
            (Some(old), Some(new)) if old == new => {}
            (old, due) => {
                let key: Slot = match self.by_slot.get_key_value(slot) {
                    Some((k, _)) => k.clone(),
                    None => Arc::from(slot),
                };
                if let Some(old) = old {
                    self.by_due.remove(&(old, key.clone()));
                    self.by_slot.remove(slot);
                }
                if let Some(due) = due {
                    self.by_due.insert((due, key.clone()));
                    self.by_slot.insert(key, due);
                }
            }
        }
    }

    pub fn next_due(&self) -> Option<i64> {
        self.by_due.first().map(|(d, _)| *d)
    }

    /// Removes and answers the earliest entry due at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, Slot)> {
        let (due, _) = self.by_due.first()?;
        if *due > now {
            return None;
        }
        let (due, slot) = self.by_due.pop_first()?;
        self.by_slot.remove(&slot);
        Some((due, slot))
    }

    pub fn clear(&mut self) {
        self.by_due.clear();
        self.by_slot.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_moves_and_pops() {
        let mut s = Schedule::default();
        s.set(&slot(0, b"a"), Some(30));
        s.set(&slot(0, b"b"), Some(10));
        s.set(&slot(1, b"a"), Some(20));
        assert_eq!(s.len(), 3);
        s.set(&slot(0, b"b"), Some(40));
        assert_eq!(s.next_due(), Some(20));
        assert_eq!(s.pop_due(15), None);
        let (due, sl) = s.pop_due(25).unwrap();
        assert_eq!((due, split(&sl)), (20, (1, &b"a"[..])));
        s.set(&slot(0, b"a"), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop_due(100).map(|(d, _)| d), Some(40));
        assert!(s.is_empty() && s.next_due().is_none());
    }
}
