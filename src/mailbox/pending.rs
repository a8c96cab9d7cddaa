//! A device's pending deliveries, indexed by seq (acks, and expiry: a
//! mailbox's messages are stored in time order, so the lowest seq is the
//! one pending longest) and by when each was last sent (resends), so the
//! timer finds what is due without walking the rest.

use std::collections::{BTreeMap, BTreeSet};

/// A message handed to a device's live session, waiting for its ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// When it became pending (expiry counts from here).
    pub since: i64,
    /// When it was last sent (resends count from here).
    pub last_send: i64,
    /// How many times it was sent.
    pub attempts: u32,
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Deliveries {
    by_seq: BTreeMap<u64, Pending>,
    by_send: BTreeSet<(i64, u64)>,
}

impl Deliveries {
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    pub fn get(&self, seq: u64) -> Option<&Pending> {
        self.by_seq.get(&seq)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        self.by_seq.iter().map(|(&s, p)| (s, p))
    }

    pub fn seqs_upto(&self, upto: u64) -> impl Iterator<Item = u64> + '_ {
        self.by_seq.range(..=upto).map(|(&s, _)| s)
    }

    pub fn insert(&mut self, seq: u64, p: Pending) {
        if let Some(old) = self.by_seq.insert(seq, p) {
            self.by_send.remove(&(old.last_send, seq));
        }
        self.by_send.insert((p.last_send, seq));
    }

    pub fn remove(&mut self, seq: u64) -> Option<Pending> {
        let p = self.by_seq.remove(&seq)?;
        self.by_send.remove(&(p.last_send, seq));
        Some(p)
    }

    /// Empties the set; answers the seqs it held, in order.
    pub fn take(&mut self) -> Vec<u64> {
        self.by_send.clear();
        std::mem::take(&mut self.by_seq).into_keys().collect()
    }

    /// The delivery pending longest: `(since, seq)`.
    pub fn oldest(&self) -> Option<(i64, u64)> {
        self.by_seq.first_key_value().map(|(&s, p)| (p.since, s))
    }

    /// The earliest last send: `(last_send, seq)`.
    pub fn least_recently_sent(&self) -> Option<(i64, u64)> {
        self.by_send.first().copied()
    }

    /// Seqs last sent at or before `sent_by`, least recent first.
    pub fn sent_by(&self, sent_by: i64, limit: usize) -> Vec<u64> {
        self.by_send
            .iter()
            .take_while(|(t, _)| *t <= sent_by)
            .take(limit)
            .map(|&(_, s)| s)
            .collect()
    }

    /// Records a resend at `now`; answers the attempt number.
    pub fn resent(&mut self, seq: u64, now: i64) -> Option<u32> {
        let p = self.by_seq.get_mut(&seq)?;
        self.by_send.remove(&(p.last_send, seq));
        p.last_send = now;
        p.attempts = p.attempts.saturating_add(1);
        self.by_send.insert((now, seq));
        Some(p.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_changes() {
        let mut d = Deliveries::default();
        for s in 1..=5u64 {
            d.insert(
                s,
                Pending {
                    since: 100 + s as i64,
                    last_send: 100 + s as i64,
                    attempts: 1,
                },
            );
        }
        assert_eq!(d.oldest(), Some((101, 1)));
        assert_eq!(d.sent_by(103, 10), vec![1, 2, 3]);
        assert_eq!(d.resent(1, 200), Some(2));
        assert_eq!(d.sent_by(103, 10), vec![2, 3]);
        assert_eq!(d.least_recently_sent(), Some((102, 2)));
        assert_eq!(d.oldest(), Some((101, 1)), "resends do not reset expiry");
        assert!(d.remove(1).is_some());
        assert_eq!(d.oldest(), Some((102, 2)));
        assert_eq!(d.seqs_upto(3).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(d.take(), vec![2, 3, 4, 5]);
        assert!(d.is_empty() && d.oldest().is_none() && d.least_recently_sent().is_none());
    }
}
