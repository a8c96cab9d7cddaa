//! A device's pending deliveries, indexed by seq (acks, and expiry: a
//! mailbox's messages are stored in time order, so the lowest seq is the
//! one pending longest) and by when each was last sent (resends), so the
//! timer finds what is due without walking the rest.
//!
//! Both indexes are sorted deques: a new delivery has the highest seq and
//! the latest send time, and a resend moves the least recently sent one to
//! the back, so the common changes happen at the ends; an ack in the middle
//! shifts the shorter side.

use std::collections::VecDeque;

/// A message handed to a device's live session, waiting for its ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// When it became pending (Unix ms; expiry counts from here).
    pub since: i64,
    /// When it was last sent (Unix ms; resends count from here).
    pub last_send: i64,
    /// How many times it was sent.
    pub attempts: u32,
}

/// A device's pending deliveries: a [`Pending`] per seq, indexed by seq and
/// by last send. A device with nothing pending holds no allocation (a
/// pointer's worth of the device).
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Deliveries {
    /// `None` while nothing is pending.
    queues: Option<Box<Queues>>,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Queues {
    /// Sorted by seq.
    by_seq: VecDeque<(u64, Pending)>,
    /// Sorted by `(last_send, seq)`.
    by_send: VecDeque<(i64, u64)>,
}

/// Makes room for one more in `q`: exactly one while it holds none (most
/// devices have one message pending at a time), then doubling.
fn room_for_one<T>(q: &mut VecDeque<T>) {
    if q.len() == q.capacity() {
        q.reserve_exact(q.len().max(1));
    }
}

/// Inserts `v` into the sorted deque `q` (at the back when it goes last);
/// answers false when it was there already.
fn insert_sorted<T: Ord + Copy>(q: &mut VecDeque<T>, v: T) -> bool {
    match q.back() {
        Some(last) if *last >= v => match q.binary_search(&v) {
            Ok(_) => false,
            Err(i) => {
                room_for_one(q);
                q.insert(i, v);
                true
            }
        },
        _ => {
            room_for_one(q);
            q.push_back(v);
            true
        }
    }
}

/// Gives memory back once a deque holds a quarter of what it could.
fn shrink<T>(q: &mut VecDeque<T>) {
    if q.capacity() > 16 && q.len() * 4 < q.capacity() {
        q.shrink_to(q.len() * 2);
    }
}

static NONE: Queues = Queues {
    by_seq: VecDeque::new(),
    by_send: VecDeque::new(),
};

impl Deliveries {
    fn q(&self) -> &Queues {
        self.queues.as_deref().unwrap_or(&NONE)
    }

    /// How many messages are pending.
    pub fn len(&self) -> usize {
        self.q().by_seq.len()
    }

    /// No message is pending.
    pub fn is_empty(&self) -> bool {
        self.q().by_seq.is_empty()
    }

    /// Heap bytes held (for `MEMORY USAGE`).
    pub fn heap_bytes(&self) -> usize {
        self.queues.as_deref().map_or(0, |q| {
            std::mem::size_of::<Queues>()
                + q.by_seq.capacity() * std::mem::size_of::<(u64, Pending)>()
                + q.by_send.capacity() * std::mem::size_of::<(i64, u64)>()
        })
    }

    /// Asks the CPU to fetch the ends a new delivery is written to.
    pub fn prefetch_back(&self) {
        let Some(q) = self.queues.as_deref() else {
            return;
        };
        let (a, b) = q.by_seq.as_slices();
        super::prefetch(b.last().or(a.last()));
        let (a, b) = q.by_send.as_slices();
        super::prefetch(b.last().or(a.last()));
    }

    fn index(&self, seq: u64) -> Option<usize> {
        self.q().by_seq.binary_search_by_key(&seq, |&(s, _)| s).ok()
    }

    /// Whether message `seq` is pending.
    pub fn contains(&self, seq: u64) -> bool {
        self.index(seq).is_some()
    }

    /// The delivery of message `seq`; `None` when it is not pending.
    pub fn get(&self, seq: u64) -> Option<&Pending> {
        self.index(seq).map(|i| &self.q().by_seq[i].1)
    }

    /// Every delivery as `(seq, delivery)`, in seq order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        self.q().by_seq.iter().map(|(s, p)| (*s, p))
    }

    /// The pending seqs up to `upto` (inclusive), in order (`IM.ACK ...
    /// UPTO`, SPEC §3).
    pub fn seqs_upto(&self, upto: u64) -> impl Iterator<Item = u64> + '_ {
        self.q()
            .by_seq
            .iter()
            .map(|&(s, _)| s)
            .take_while(move |&s| s <= upto)
    }

    /// Makes message `seq` pending as `p`, replacing its delivery if it was
    /// pending already.
    pub fn insert(&mut self, seq: u64, p: Pending) {
        let q = self.queues.get_or_insert_with(Default::default);
        match q.by_seq.back() {
            Some(&(last, _)) if last >= seq => {
                match q.by_seq.binary_search_by_key(&seq, |&(s, _)| s) {
                    Ok(i) => {
                        let old = std::mem::replace(&mut q.by_seq[i].1, p);
                        q.remove_send(old.last_send, seq);
                    }
                    Err(i) => {
                        room_for_one(&mut q.by_seq);
                        q.by_seq.insert(i, (seq, p))
                    }
                }
            }
            _ => {
                room_for_one(&mut q.by_seq);
                q.by_seq.push_back((seq, p))
            }
        }
        insert_sorted(&mut q.by_send, (p.last_send, seq));
    }

    /// Removes message `seq`; answers its delivery, `None` when it was not
    /// pending. The last one gives the memory back.
    pub fn remove(&mut self, seq: u64) -> Option<Pending> {
        let i = self.index(seq)?;
        let q = self.queues.as_deref_mut()?;
        let (_, p) = q.by_seq.remove(i)?;
        q.remove_send(p.last_send, seq);
        if q.by_seq.is_empty() {
            self.queues = None;
        } else {
            shrink(&mut q.by_seq);
            shrink(&mut q.by_send);
        }
        Some(p)
    }

    /// Empties the set; answers the seqs it held, in order.
    pub fn take(&mut self) -> Vec<u64> {
        self.queues
            .take()
            .map(|q| q.by_seq.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default()
    }

    /// The delivery pending longest: `(since, seq)`; `None` when none.
    pub fn oldest(&self) -> Option<(i64, u64)> {
        self.q().by_seq.front().map(|&(s, p)| (p.since, s))
    }

    /// The earliest last send: `(last_send, seq)`; `None` when none.
    pub fn least_recently_sent(&self) -> Option<(i64, u64)> {
        self.q().by_send.front().copied()
    }

    /// Seqs last sent at or before `sent_by` (Unix ms), least recent first,
    /// at most `limit`.
    pub fn sent_by(&self, sent_by: i64, limit: usize) -> Vec<u64> {
        self.q()
            .by_send
            .iter()
            .take_while(|(t, _)| *t <= sent_by)
            .take(limit)
            .map(|&(_, s)| s)
            .collect()
    }

    /// Records a resend at `now` (Unix ms); answers the attempt number,
    /// `None` when `seq` is not pending.
    pub fn resent(&mut self, seq: u64, now: i64) -> Option<u32> {
        let i = self.index(seq)?;
        let q = self.queues.as_deref_mut()?;
        let p = &mut q.by_seq[i].1;
        let old = p.last_send;
        p.last_send = now;
        p.attempts = p.attempts.saturating_add(1);
        let attempts = p.attempts;
        q.remove_send(old, seq);
        insert_sorted(&mut q.by_send, (now, seq));
        Some(attempts)
    }
}

impl Queues {
    fn remove_send(&mut self, last_send: i64, seq: u64) {
        if let Ok(i) = self.by_send.binary_search(&(last_send, seq)) {
            self.by_send.remove(i);
        }
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

    /// Random inserts (in and out of order), removes and resends agree
    /// with a plain ordered model.
    #[test]
    fn matches_a_model() {
        use std::collections::{BTreeMap, BTreeSet};
        let mut d = Deliveries::default();
        let mut by_seq: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = if x.is_multiple_of(3) {
                x % 500
            } else {
                500 + step as u64
            };
            match x % 7 {
                0..=3 => {
                    let p = Pending {
                        since: step,
                        last_send: step - (x % 50) as i64,
                        attempts: 1,
                    };
                    d.insert(seq, p);
                    by_seq.insert(seq, p);
                }
                4 | 5 => {
                    let victim = by_seq.keys().nth((x % 97) as usize).copied().unwrap_or(seq);
                    assert_eq!(d.remove(victim), by_seq.remove(&victim));
                }
                _ => {
                    let s = by_seq.keys().next().copied().unwrap_or(seq);
                    let want = by_seq.get_mut(&s).map(|p| {
                        p.last_send = step;
                        p.attempts += 1;
                        p.attempts
                    });
                    assert_eq!(d.resent(s, step), want);
                }
            }
        }
        let by_send: BTreeSet<(i64, u64)> = by_seq.iter().map(|(&s, p)| (p.last_send, s)).collect();
        assert_eq!(d.len(), by_seq.len());
        assert!(d
            .iter()
            .map(|(s, p)| (s, *p))
            .eq(by_seq.iter().map(|(&s, &p)| (s, p))));
        assert_eq!(d.least_recently_sent(), by_send.first().copied());
        let cut = by_send.iter().nth(by_send.len() / 2).map_or(0, |&(t, _)| t);
        let want: Vec<u64> = by_send
            .iter()
            .take_while(|(t, _)| *t <= cut)
            .map(|&(_, s)| s)
            .collect();
        assert_eq!(d.sent_by(cut, usize::MAX), want);
    }
}
