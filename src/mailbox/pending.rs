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
/// pointer's worth of the device); one delivery, the usual case (a session
/// acks each message before the next one comes), is one allocation of
/// 64 bytes; from two on, the two sorted deques.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Deliveries {
    /// `None` while nothing is pending.
    inner: Option<Box<Inner>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Inner {
    /// Exactly one delivery: `(seq, delivery)`. Its place in the send
    /// index is implied.
    One((u64, Pending)),
    /// Two or more (never fewer: a removal that leaves one goes back to
    /// [`Inner::One`]).
    Many(Queues),
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Queues {
    /// Sorted by seq.
    by_seq: VecDeque<(u64, Pending)>,
    /// Sorted by `(last_send, seq)`.
    by_send: VecDeque<(i64, u64)>,
}

impl Queues {
    /// Two deliveries, sorted both ways; room for exactly two.
    fn two(a: (u64, Pending), b: (u64, Pending)) -> Queues {
        let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        let mut by_seq = VecDeque::with_capacity(2);
        by_seq.push_back(lo);
        by_seq.push_back(hi);
        let (x, y) = ((lo.1.last_send, lo.0), (hi.1.last_send, hi.0));
        let mut by_send = VecDeque::with_capacity(2);
        by_send.push_back(x.min(y));
        by_send.push_back(x.max(y));
        Queues { by_seq, by_send }
    }
}

/// Makes room for one more in `q`: doubling.
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

type Slices<'a, T> = (&'a [T], &'a [T]);

impl Deliveries {
    /// The deliveries in seq order, as the two halves of a deque.
    fn by_seq(&self) -> Slices<'_, (u64, Pending)> {
        match self.inner.as_deref() {
            None => (&[], &[]),
            Some(Inner::One(d)) => (std::slice::from_ref(d), &[]),
            Some(Inner::Many(q)) => q.by_seq.as_slices(),
        }
    }

    /// How many messages are pending.
    pub fn len(&self) -> usize {
        match self.inner.as_deref() {
            None => 0,
            Some(Inner::One(_)) => 1,
            Some(Inner::Many(q)) => q.by_seq.len(),
        }
    }

    /// No message is pending.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Heap bytes held (for `MEMORY USAGE`).
    pub fn heap_bytes(&self) -> usize {
        self.inner.as_deref().map_or(0, |i| {
            std::mem::size_of::<Inner>()
                + match i {
                    Inner::One(_) => 0,
                    Inner::Many(q) => {
                        q.by_seq.capacity() * std::mem::size_of::<(u64, Pending)>()
                            + q.by_send.capacity() * std::mem::size_of::<(i64, u64)>()
                    }
                }
        })
    }

    /// Asks the CPU to fetch the deliveries' allocation, without reading
    /// it (a hint).
    pub fn prefetch(&self) {
        crate::prefetch::prefetch(self.inner.as_deref());
    }

    /// Asks the CPU to fetch the ends a new delivery is written to.
    pub fn prefetch_back(&self) {
        let Some(i) = self.inner.as_deref() else {
            return;
        };
        crate::prefetch::prefetch(Some(i));
        if let Inner::Many(q) = i {
            let (a, b) = q.by_seq.as_slices();
            crate::prefetch::prefetch(b.last().or(a.last()));
            let (a, b) = q.by_send.as_slices();
            crate::prefetch::prefetch(b.last().or(a.last()));
        }
    }

    /// Whether message `seq` is pending.
    pub fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// The delivery of message `seq`; `None` when it is not pending.
    pub fn get(&self, seq: u64) -> Option<&Pending> {
        match self.inner.as_deref()? {
            Inner::One((s, p)) => (*s == seq).then_some(p),
            Inner::Many(q) => {
                let i = q.by_seq.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
                Some(&q.by_seq[i].1)
            }
        }
    }

    /// Every delivery as `(seq, delivery)`, in seq order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pending)> + '_ {
        let (a, b) = self.by_seq();
        a.iter().chain(b).map(|(s, p)| (*s, p))
    }

    /// The pending seqs up to `upto` (inclusive), in order (`IM.ACK ...
    /// UPTO`, SPEC §3).
    pub fn seqs_upto(&self, upto: u64) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(s, _)| s).take_while(move |&s| s <= upto)
    }

    /// Makes message `seq` pending as `p`, replacing its delivery if it was
    /// pending already.
    pub fn insert(&mut self, seq: u64, p: Pending) {
        let Some(inner) = self.inner.as_deref_mut() else {
            self.inner = Some(Box::new(Inner::One((seq, p))));
            return;
        };
        let q = match inner {
            Inner::One((s, old)) if *s == seq => {
                *old = p;
                return;
            }
            Inner::One(other) => {
                *inner = Inner::Many(Queues::two(*other, (seq, p)));
                return;
            }
            Inner::Many(q) => q,
        };
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
        let inner = self.inner.as_deref_mut()?;
        let q = match inner {
            Inner::One((s, p)) => {
                let p = (*s == seq).then_some(*p)?;
                self.inner = None;
                return Some(p);
            }
            Inner::Many(q) => q,
        };
        let i = q.by_seq.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
        let (_, p) = q.by_seq.remove(i)?;
        q.remove_send(p.last_send, seq);
        match q.by_seq.front() {
            Some(&last) if q.by_seq.len() == 1 => *inner = Inner::One(last),
            _ => {
                shrink(&mut q.by_seq);
                shrink(&mut q.by_send);
            }
        }
        Some(p)
    }

    /// Empties the set; answers the seqs it held, in order.
    pub fn take(&mut self) -> Vec<u64> {
        let seqs = self.iter().map(|(s, _)| s).collect();
        self.inner = None;
        seqs
    }

    /// The delivery pending longest: `(since, seq)`; `None` when none.
    pub fn oldest(&self) -> Option<(i64, u64)> {
        let (a, b) = self.by_seq();
        a.first().or(b.first()).map(|&(s, p)| (p.since, s))
    }

    /// The earliest last send: `(last_send, seq)`; `None` when none.
    pub fn least_recently_sent(&self) -> Option<(i64, u64)> {
        match self.inner.as_deref()? {
            Inner::One((s, p)) => Some((p.last_send, *s)),
            Inner::Many(q) => q.by_send.front().copied(),
        }
    }

    /// Seqs last sent at or before `sent_by` (Unix ms), least recent first,
    /// at most `limit`.
    pub fn sent_by(&self, sent_by: i64, limit: usize) -> Vec<u64> {
        let one;
        let by_send: Slices<'_, (i64, u64)> = match self.inner.as_deref() {
            None => (&[], &[]),
            Some(Inner::One((s, p))) => {
                one = (p.last_send, *s);
                (std::slice::from_ref(&one), &[])
            }
            Some(Inner::Many(q)) => q.by_send.as_slices(),
        };
        by_send
            .0
            .iter()
            .chain(by_send.1)
            .take_while(|(t, _)| *t <= sent_by)
            .take(limit)
            .map(|&(_, s)| s)
            .collect()
    }

    /// Records a resend at `now` (Unix ms); answers the attempt number,
    /// `None` when `seq` is not pending.
    pub fn resent(&mut self, seq: u64, now: i64) -> Option<u32> {
        let q = match self.inner.as_deref_mut()? {
            Inner::One((s, p)) => {
                if *s != seq {
                    return None;
                }
                p.last_send = now;
                p.attempts = p.attempts.saturating_add(1);
                return Some(p.attempts);
            }
            Inner::Many(q) => q,
        };
        let i = q.by_seq.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
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

    #[test]
    fn one_delivery_is_one_allocation_and_two_go_back_to_one() {
        let p = |t: i64| Pending {
            since: t,
            last_send: t,
            attempts: 1,
        };
        let mut d = Deliveries::default();
        assert_eq!(d.heap_bytes(), 0);
        d.insert(7, p(10));
        assert_eq!(d.heap_bytes(), std::mem::size_of::<Inner>());
        assert!(std::mem::size_of::<Inner>() <= 64);
        assert_eq!(
            (d.len(), d.oldest(), d.least_recently_sent()),
            (1, Some((10, 7)), Some((10, 7)))
        );
        d.insert(7, p(11));
        assert_eq!((d.len(), d.get(7)), (1, Some(&p(11))));
        d.insert(3, p(20));
        assert_eq!(d.iter().map(|(s, _)| s).collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(d.sent_by(15, 10), vec![7]);
        assert!(d.heap_bytes() > std::mem::size_of::<Inner>());
        assert_eq!(d.remove(7), Some(p(11)));
        assert_eq!(d.inner.as_deref(), Some(&Inner::One((3, p(20)))));
        assert_eq!(d.resent(3, 30), Some(2));
        assert_eq!(d.sent_by(29, 10), Vec::<u64>::new());
        assert_eq!(d.sent_by(30, 10), vec![3]);
        assert_eq!(d.resent(4, 30), None);
        assert_eq!(d.remove(4), None);
        assert_eq!(d.take(), vec![3]);
        assert!(d.is_empty() && d.inner.is_none());
    }

    /// Random inserts (in and out of order), removes and resends agree
    /// with a plain ordered model, through many deliveries
    /// (`small == false`) or at most a few, which crosses between one and
    /// two most often.
    #[test]
    fn matches_a_model() {
        model(false);
        model(true);
    }

    fn model(small: bool) {
        use std::collections::{BTreeMap, BTreeSet};
        let mut d = Deliveries::default();
        let mut by_seq: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = if small {
                x % 4
            } else if x.is_multiple_of(3) {
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
            assert_eq!(d.len(), by_seq.len());
            assert_eq!(d.is_empty(), by_seq.is_empty());
            assert_eq!(d.oldest(), by_seq.iter().next().map(|(&s, p)| (p.since, s)));
            if small {
                let lrs = by_seq.iter().map(|(&s, p)| (p.last_send, s)).min();
                assert_eq!(d.least_recently_sent(), lrs);
                assert!(d
                    .iter()
                    .map(|(s, p)| (s, *p))
                    .eq(by_seq.iter().map(|(&s, &p)| (s, p))));
            }
        }
        let by_send: BTreeSet<(i64, u64)> = by_seq.iter().map(|(&s, p)| (p.last_send, s)).collect();
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
