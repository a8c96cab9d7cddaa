//! A device's offline messages (SPEC §1, §4): their seqs, how many and the
//! sum of their stanzas' sizes, in 16 bytes of the device.
//!
//! A device's offline messages are nearly always one run of consecutive
//! seqs (a device offline is owed every message stored after it left), so
//! that run, its count and its bytes sit in the device itself, with no
//! allocation: up to 65,535 messages and 4 GiB. Anything else (a gap, a
//! longer run, more bytes) moves to one boxed spread holding a
//! [`RangeSet`] with the count and bytes as `u64`s; a spread that is one
//! run again, within those limits, comes back inline. The count and bytes
//! are kept, not recomputed, so `IM.OFFLINE.INFO` stays O(1) in them.

use super::rangeset::RangeSet;

/// A device's offline messages: a set of seqs with its size and bytes.
/// 16 bytes, and no allocation while the seqs are one run of at most
/// 65,535 messages and 4 GiB.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offline(Repr);

/// The shapes, always the smallest that holds the state (so that equal
/// states compare equal).
#[derive(Debug, Default, PartialEq, Eq)]
enum Repr {
    /// No message, no bytes.
    #[default]
    Empty,
    /// `count` (at least 1) consecutive seqs from `first`, of `bytes` in
    /// all.
    Run { first: u64, bytes: u32, count: u16 },
    /// Anything else.
    Spread(Box<Spread>),
}

/// The general shape: any set, any count and bytes (a loaded mailbox's
/// count and bytes are kept as read, so that `consistent` can compare
/// them with the set).
#[derive(Debug, PartialEq, Eq)]
struct Spread {
    set: RangeSet,
    /// How many seqs `set` holds.
    count: u64,
    /// The sum of their stanzas' sizes (bytes).
    bytes: u64,
}

/// The last seq of a run of `count` (at least 1) from `first`.
fn run_last(first: u64, count: u16) -> u64 {
    first.saturating_add(u64::from(count).saturating_sub(1))
}

/// The smallest shape holding `s`.
fn settle(s: Box<Spread>) -> Repr {
    if s.count == 0 && s.bytes == 0 && s.set.is_empty() {
        return Repr::Empty;
    }
    if s.set.range_count() == 1 {
        if let (Some(first), Some(last), Ok(count), Ok(bytes)) = (
            s.set.first(),
            s.set.last(),
            u16::try_from(s.count),
            u32::try_from(s.bytes),
        ) {
            if count > 0 && run_last(first, count) == last {
                return Repr::Run {
                    first,
                    bytes,
                    count,
                };
            }
        }
    }
    Repr::Spread(s)
}

impl Offline {
    /// A set rebuilt from persisted ranges with the count and bytes read
    /// beside them (kept as read); `None` on ranges
    /// [`RangeSet::from_ranges`] refuses.
    pub fn from_parts(
        ranges: impl IntoIterator<Item = (u64, u64)>,
        count: u64,
        bytes: u64,
    ) -> Option<Offline> {
        let set = RangeSet::from_ranges(ranges)?;
        Some(Offline(settle(Box::new(Spread { set, count, bytes }))))
    }

    /// How many messages (SPEC §4).
    pub fn count(&self) -> u64 {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Run { count, .. } => u64::from(*count),
            Repr::Spread(s) => s.count,
        }
    }

    /// The sum of their stanzas' sizes (bytes).
    pub fn bytes(&self) -> u64 {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Run { bytes, .. } => u64::from(*bytes),
            Repr::Spread(s) => s.bytes,
        }
    }

    /// The run inline, as an inclusive range.
    fn run(&self) -> Option<(u64, u64)> {
        match self.0 {
            Repr::Run { first, count, .. } => Some((first, run_last(first, count))),
            _ => None,
        }
    }

    /// The spread, if that is the shape.
    fn spread(&self) -> Option<&Spread> {
        match &self.0 {
            Repr::Spread(s) => Some(s),
            _ => None,
        }
    }

    /// Applies `f` to the state in the general shape, then keeps it in the
    /// smallest.
    fn with_spread<R>(&mut self, f: impl FnOnce(&mut Spread) -> R) -> R {
        let mut s = match std::mem::take(&mut self.0) {
            Repr::Spread(s) => s,
            Repr::Empty => Box::new(Spread {
                set: RangeSet::Empty,
                count: 0,
                bytes: 0,
            }),
            Repr::Run {
                first,
                bytes,
                count,
            } => Box::new(Spread {
                set: RangeSet::One([(first, run_last(first, count))]),
                count: u64::from(count),
                bytes: u64::from(bytes),
            }),
        };
        let r = f(&mut s);
        self.0 = settle(s);
        r
    }

    /// Adds message `seq`, of `size` bytes; answers false when it was
    /// there already.
    pub fn insert(&mut self, seq: u64, size: usize) -> bool {
        let size32 = u32::try_from(size).ok();
        match &mut self.0 {
            Repr::Empty => {
                if let Some(bytes) = size32 {
                    self.0 = Repr::Run {
                        first: seq,
                        bytes,
                        count: 1,
                    };
                    return true;
                }
            }
            Repr::Run {
                first,
                bytes,
                count,
            } => {
                let last = run_last(*first, *count);
                if (*first..=last).contains(&seq) {
                    return false;
                }
                let grown = (
                    count.checked_add(1),
                    size32.and_then(|n| bytes.checked_add(n)),
                );
                if let (Some(c), Some(b)) = grown {
                    if last.checked_add(1) == Some(seq) {
                        (*count, *bytes) = (c, b);
                        return true;
                    }
                    if first.checked_sub(1) == Some(seq) {
                        (*first, *count, *bytes) = (seq, c, b);
                        return true;
                    }
                }
            }
            Repr::Spread(_) => {}
        }
        self.with_spread(|s| {
            let added = s.set.insert(seq);
            if added {
                s.count = s.count.saturating_add(1);
                s.bytes = s.bytes.saturating_add(size as u64);
            }
            added
        })
    }

    /// Removes message `seq`, of `size` bytes; answers false when it was
    /// not there.
    pub fn remove(&mut self, seq: u64, size: usize) -> bool {
        let size32 = u32::try_from(size).unwrap_or(u32::MAX);
        match &mut self.0 {
            Repr::Empty => return false,
            Repr::Run {
                first,
                bytes,
                count,
            } => {
                let last = run_last(*first, *count);
                if !(*first..=last).contains(&seq) {
                    return false;
                }
                let left = bytes.saturating_sub(size32);
                if *count == 1 && left == 0 {
                    self.0 = Repr::Empty;
                    return true;
                }
                if *count > 1 && (seq == *first || seq == last) {
                    if seq == *first {
                        *first = seq.saturating_add(1);
                    }
                    (*count, *bytes) = (*count - 1, left);
                    return true;
                }
            }
            Repr::Spread(_) => {}
        }
        self.with_spread(|s| {
            let had = s.set.remove(seq);
            if had {
                s.count = s.count.saturating_sub(1);
                s.bytes = s.bytes.saturating_sub(size as u64);
            }
            had
        })
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        match &self.0 {
            Repr::Empty => false,
            Repr::Run { .. } => self.run().is_some_and(|(s, e)| (s..=e).contains(&seq)),
            Repr::Spread(s) => s.set.contains(seq),
        }
    }

    /// How many ranges (not seqs) the set holds.
    pub fn range_count(&self) -> usize {
        match &self.0 {
            Repr::Empty => 0,
            Repr::Run { .. } => 1,
            Repr::Spread(s) => s.set.range_count(),
        }
    }

    /// The lowest seq; `None` when the set is empty.
    pub fn first(&self) -> Option<u64> {
        match &self.0 {
            Repr::Empty => None,
            Repr::Run { first, .. } => Some(*first),
            Repr::Spread(s) => s.set.first(),
        }
    }

    /// The highest seq; `None` when the set is empty.
    pub fn last(&self) -> Option<u64> {
        match &self.0 {
            Repr::Empty => None,
            Repr::Run { .. } => self.run().map(|(_, e)| e),
            Repr::Spread(s) => s.set.last(),
        }
    }

    /// Every range (start, end, inclusive), in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let set = self.spread().map(|s| s.set.ranges());
        self.run().into_iter().chain(set.into_iter().flatten())
    }

    /// The ranges, clipped to start at `from`, in order.
    pub fn ranges_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let run = self
            .run()
            .filter(|&(_, e)| e >= from)
            .map(|(s, e)| (s.max(from), e));
        let set = self.spread().map(|s| s.set.ranges_from(from));
        run.into_iter().chain(set.into_iter().flatten())
    }

    /// Heap bytes held (for `MEMORY USAGE`): the spread and an estimate of
    /// its ranges' storage.
    pub fn heap_bytes(&self) -> usize {
        self.spread().map_or(0, |s| {
            let ranges = s.set.range_count();
            std::mem::size_of::<Spread>() + if ranges > 1 { ranges * 40 } else { 0 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The size of message `seq` in the tests: varied, never 0.
    fn size(seq: u64) -> usize {
        (seq % 7 + 1) as usize * 100
    }

    fn check(o: &Offline, model: &BTreeMap<u64, usize>) {
        assert_eq!(o.count(), model.len() as u64);
        assert_eq!(o.bytes(), model.values().map(|&n| n as u64).sum::<u64>());
        assert_eq!(o.first(), model.keys().next().copied());
        assert_eq!(o.last(), model.keys().next_back().copied());
        let flat: Vec<u64> = o.ranges().flat_map(|(s, e)| s..=e).collect();
        assert_eq!(flat, model.keys().copied().collect::<Vec<_>>());
        assert_eq!(o.range_count(), o.ranges().count());
        let back = Offline::from_parts(o.ranges(), o.count(), o.bytes());
        assert_eq!(back.as_ref(), Some(o), "the shape is canonical");
        let inline = model.is_empty()
            || (o.range_count() == 1 && model.len() <= 65_535 && o.bytes() <= u64::from(u32::MAX));
        assert_eq!(o.heap_bytes() == 0, inline, "inline exactly when it fits");
    }

    #[test]
    fn behaves_like_a_map_of_sizes() {
        let mut o = Offline::default();
        let mut model = BTreeMap::new();
        let mut x: u64 = 99;
        for i in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly appends at the end and removals at the front, as a
            // device's offline messages change; sometimes anywhere.
            let v = match (x >> 40) % 4 {
                0 => model.keys().next_back().map_or(50, |&l| l + 1),
                1 => model.keys().next().copied().unwrap_or(50),
                _ => (x >> 33) % 200,
            };
            if !(x >> 20).is_multiple_of(3) {
                assert_eq!(o.insert(v, size(v)), model.insert(v, size(v)).is_none());
            } else {
                assert_eq!(o.remove(v, size(v)), model.remove(&v).is_some());
            }
            if i.is_multiple_of(97) {
                check(&o, &model);
            }
            for v in [v.saturating_sub(1), v, v + 1] {
                assert_eq!(o.contains(v), model.contains_key(&v));
            }
        }
        check(&o, &model);
        let from: Vec<u64> = o.ranges_from(100).flat_map(|(s, e)| s..=e).collect();
        assert_eq!(
            from,
            model.range(100..).map(|(&k, _)| k).collect::<Vec<_>>()
        );
        for k in model.clone().keys() {
            assert!(o.remove(*k, size(*k)));
        }
        assert_eq!(o, Offline::default());
    }

    #[test]
    fn one_run_stays_inline() {
        assert_eq!(std::mem::size_of::<Offline>(), 16);
        let mut o = Offline::default();
        assert!(o.insert(10, 190));
        assert!(!o.insert(10, 190));
        assert!(o.insert(11, 190) && o.insert(9, 190));
        assert_eq!((o.count(), o.bytes(), o.heap_bytes()), (3, 570, 0));
        assert_eq!(o.ranges_from(10).collect::<Vec<_>>(), vec![(10, 11)]);
        assert_eq!(o.ranges_from(12).count(), 0);
        // A gap spreads it; filling the gap brings it back.
        assert!(o.remove(10, 190));
        assert_eq!((o.count(), o.range_count()), (2, 2));
        assert!(o.heap_bytes() > 0);
        assert!(o.insert(10, 190));
        assert_eq!((o.count(), o.bytes(), o.heap_bytes()), (3, 570, 0));
        assert!(o.remove(9, 190) && o.remove(11, 190) && o.remove(10, 190));
        assert_eq!(o, Offline::default());
    }

    #[test]
    fn what_overflows_the_run_spreads() {
        // Beyond 65,535 messages.
        let mut o = Offline::default();
        for s in 1..=65_536u64 {
            assert!(o.insert(s, 1));
        }
        assert_eq!((o.count(), o.bytes(), o.range_count()), (65_536, 65_536, 1));
        assert!(o.heap_bytes() > 0);
        assert!(o.remove(1, 1));
        assert_eq!((o.count(), o.bytes(), o.heap_bytes()), (65_535, 65_535, 0));
        // Beyond 4 GiB, and a single stanza past u32.
        let mut o = Offline::default();
        assert!(o.insert(1, u32::MAX as usize));
        assert!(o.insert(2, 1));
        assert_eq!((o.count(), o.bytes()), (2, u64::from(u32::MAX) + 1));
        assert!(o.heap_bytes() > 0);
        assert!(o.remove(2, 1));
        assert_eq!(
            (o.count(), o.bytes(), o.heap_bytes()),
            (1, u64::from(u32::MAX), 0)
        );
        let mut o = Offline::default();
        assert!(o.insert(7, u32::MAX as usize + 5));
        assert_eq!((o.count(), o.bytes()), (1, u64::from(u32::MAX) + 5));
        assert!(o.remove(7, u32::MAX as usize + 5));
        assert_eq!(o, Offline::default());
        // Seqs at the ends of u64.
        let mut o = Offline::default();
        assert!(o.insert(u64::MAX, 1) && o.insert(u64::MAX - 1, 1) && o.insert(0, 1));
        assert_eq!(
            o.ranges().collect::<Vec<_>>(),
            vec![(0, 0), (u64::MAX - 1, u64::MAX)]
        );
        assert!(o.remove(0, 1));
        assert_eq!(
            o.ranges().collect::<Vec<_>>(),
            vec![(u64::MAX - 1, u64::MAX)]
        );
        assert_eq!(o.heap_bytes(), 0);
    }

    #[test]
    fn loaded_counts_are_kept_as_read() {
        // A run whose count or bytes disagree with it is kept as read, so
        // that the loader's consistency check sees the disagreement.
        let o = Offline::from_parts([(5, 9)], 4, 100).unwrap();
        assert_eq!((o.count(), o.bytes(), o.range_count()), (4, 100, 1));
        let o = Offline::from_parts([], 0, 7).unwrap();
        assert_eq!((o.count(), o.bytes(), o.first()), (0, 7, None));
        let o = Offline::from_parts([(5, 9)], 5, 100).unwrap();
        assert_eq!((o.count(), o.bytes(), o.heap_bytes()), (5, 100, 0));
        assert_eq!(Offline::from_parts([(1, 2), (3, 4)], 4, 4), None);
        assert_eq!(Offline::from_parts([], 0, 0), Some(Offline::default()));
    }
}
