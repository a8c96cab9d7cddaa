//! A set of seqs kept as disjoint inclusive ranges: a device's offline
//! messages once they are more than the one run of consecutive seqs a
//! device holds inline (`super::offline`), so the set lives in the
//! device's one boxed spread and keeps its shapes unboxed. One range sits
//! in the set itself, up to `SMALL` ranges in a sorted vector (one small
//! allocation); beyond that in a B-tree, so that every operation stays
//! logarithmic however scattered the set becomes.

use std::collections::{btree_map, BTreeMap};

const SMALL: usize = 16;

/// A set of seqs (a device's offline messages) as disjoint inclusive
/// ranges, sorted, disjoint and not adjacent. 32 bytes. Two sets are equal
/// when they hold the same seqs, whatever shape each is kept in (a set of
/// 9 to 16 ranges may be a vector or a tree, by its history).
#[derive(Clone, Debug, Default)]
pub enum RangeSet {
    /// No seq.
    #[default]
    Empty,
    /// One range: start, end (inclusive), with no allocation.
    One([(u64, u64); 1]),
    /// Two to `SMALL` ranges: start, end.
    Small(Vec<(u64, u64)>),
    /// More: start -> end.
    Big(BTreeMap<u64, u64>),
}

impl PartialEq for RangeSet {
    fn eq(&self, other: &RangeSet) -> bool {
        self.range_count() == other.range_count() && self.ranges().eq(other.ranges())
    }
}

impl Eq for RangeSet {}

/// The ranges of a set, in order.
pub enum Ranges<'a> {
    /// Over the ranges of a set held in a slice.
    Small(std::slice::Iter<'a, (u64, u64)>),
    /// Over a [`RangeSet::Big`].
    Big(btree_map::Range<'a, u64, u64>),
}

impl Iterator for Ranges<'_> {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        match self {
            Ranges::Small(it) => it.next().copied(),
            Ranges::Big(it) => it.next().map(|(&s, &e)| (s, e)),
        }
    }
}

/// A set's ranges, wherever they are kept.
enum View<'a> {
    Runs(&'a [(u64, u64)]),
    Tree(&'a BTreeMap<u64, u64>),
}

impl RangeSet {
    /// Holds no seq.
    pub fn is_empty(&self) -> bool {
        self.range_count() == 0
    }

    /// The ranges in a slice, unless the set is a tree.
    fn view(&self) -> View<'_> {
        match self {
            RangeSet::Empty => View::Runs(&[]),
            RangeSet::One(r) => View::Runs(r),
            RangeSet::Small(v) => View::Runs(v),
            RangeSet::Big(m) => View::Tree(m),
        }
    }

    /// How many ranges (not seqs) it holds.
    pub fn range_count(&self) -> usize {
        match self.view() {
            View::Runs(r) => r.len(),
            View::Tree(m) => m.len(),
        }
    }

    /// The range starting at or before `v`, if any.
    fn at_or_before(&self, v: u64) -> Option<(u64, u64)> {
        match self.view() {
            View::Runs(r) => {
                let i = r.partition_point(|&(s, _)| s <= v);
                i.checked_sub(1).map(|i| r[i])
            }
            View::Tree(m) => m.range(..=v).next_back().map(|(&s, &e)| (s, e)),
        }
    }

    fn starting_at(&self, v: u64) -> Option<u64> {
        match self.view() {
            View::Runs(r) => r.binary_search_by_key(&v, |&(s, _)| s).ok().map(|i| r[i].1),
            View::Tree(m) => m.get(&v).copied(),
        }
    }

    fn put(&mut self, s: u64, e: u64) {
        match self {
            RangeSet::Empty => *self = RangeSet::One([(s, e)]),
            RangeSet::One([(a, b)]) if *a == s => *b = e,
            RangeSet::One([x]) => {
                let (x, y) = if x.0 < s { (*x, (s, e)) } else { ((s, e), *x) };
                let mut v = Vec::with_capacity(2);
                v.extend([x, y]);
                *self = RangeSet::Small(v);
            }
            RangeSet::Small(r) => match r.binary_search_by_key(&s, |&(x, _)| x) {
                Ok(i) => r[i].1 = e,
                Err(i) => {
                    if r.len() == r.capacity() {
                        r.reserve_exact((r.len() / 2).max(1));
                    }
                    r.insert(i, (s, e));
                    if r.len() > SMALL {
                        *self = RangeSet::Big(r.iter().copied().collect());
                    }
                }
            },
            RangeSet::Big(m) => {
                m.insert(s, e);
            }
        }
    }

    fn take(&mut self, s: u64) {
        match self {
            RangeSet::Empty => {}
            RangeSet::One([(a, _)]) => {
                if *a == s {
                    *self = RangeSet::Empty;
                }
            }
            RangeSet::Small(r) => {
                if let Ok(i) = r.binary_search_by_key(&s, |&(x, _)| x) {
                    r.remove(i);
                }
                if let [only] = r[..] {
                    *self = RangeSet::One([only]);
                } else if r.capacity() >= 4 * r.len() {
                    // A set that lost most of its ranges gives the room back.
                    r.shrink_to(2 * r.len());
                }
            }
            RangeSet::Big(m) => {
                m.remove(&s);
                // Back to a vector (or inline) once half of what a vector
                // holds: a set that was scattered and is mostly drained
                // does not keep a tree's nodes; the gap to `SMALL` keeps a
                // set near the edge from moving at every change.
                if m.len() <= SMALL / 2 {
                    let ranges: Vec<(u64, u64)> = m.iter().map(|(&s, &e)| (s, e)).collect();
                    *self = match ranges[..] {
                        [] => RangeSet::Empty,
                        [only] => RangeSet::One([only]),
                        _ => RangeSet::Small(ranges),
                    };
                }
            }
        }
    }

    /// Moves the start of the range starting at `from` to `to`, keeping
    /// its end. The caller keeps `to` past the previous range's end + 1
    /// and at most the range's end, so the ranges stay sorted, disjoint
    /// and not adjacent, and their count, the shape and any allocation
    /// stay as they are.
    fn move_start(&mut self, from: u64, to: u64) {
        match self {
            RangeSet::Empty => {}
            RangeSet::One([(a, _)]) => {
                if *a == from {
                    *a = to;
                }
            }
            RangeSet::Small(r) => {
                if let Ok(i) = r.binary_search_by_key(&from, |&(x, _)| x) {
                    r[i].0 = to;
                }
            }
            RangeSet::Big(m) => {
                if let Some(e) = m.remove(&from) {
                    m.insert(to, e);
                }
            }
        }
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        self.at_or_before(v).is_some_and(|(_, e)| e >= v)
    }

    /// Adds `v`; answers false when it was there already.
    pub fn insert(&mut self, v: u64) -> bool {
        let before = self.at_or_before(v);
        if before.is_some_and(|(_, e)| e >= v) {
            return false;
        }
        let after = v.checked_add(1).and_then(|n| self.starting_at(n));
        match (before, after) {
            (Some((s, e)), Some(ae)) if e.checked_add(1) == Some(v) => {
                self.take(v + 1);
                self.put(s, ae);
            }
            (Some((s, e)), _) if e.checked_add(1) == Some(v) => self.put(s, v),
            // `v` is past the range before it by more than one.
            (_, Some(_)) => self.move_start(v + 1, v),
            _ => self.put(v, v),
        }
        true
    }

    /// Removes `v`; answers false when it was not there.
    pub fn remove(&mut self, v: u64) -> bool {
        let Some((s, e)) = self.at_or_before(v) else {
            return false;
        };
        if e < v {
            return false;
        }
        if s == v && e > v {
            // The range's first seq: the range starts one later, in place.
            self.move_start(s, v + 1);
            return true;
        }
        if s == v {
            self.take(s);
        } else {
            self.put(s, v - 1);
        }
        if e > v {
            self.put(v + 1, e);
        }
        true
    }

    /// The lowest seq; `None` when the set is empty.
    pub fn first(&self) -> Option<u64> {
        match self.view() {
            View::Runs(r) => r.first().map(|&(s, _)| s),
            View::Tree(m) => m.keys().next().copied(),
        }
    }

    /// The highest seq; `None` when the set is empty.
    pub fn last(&self) -> Option<u64> {
        match self.view() {
            View::Runs(r) => r.last().map(|&(_, e)| e),
            View::Tree(m) => m.values().next_back().copied(),
        }
    }

    fn ranges_starting_from(&self, from: u64) -> Ranges<'_> {
        match self.view() {
            View::Runs(r) => Ranges::Small(r[r.partition_point(|&(s, _)| s < from)..].iter()),
            View::Tree(m) => Ranges::Big(m.range(from..)),
        }
    }

    /// The ranges, clipped to start at `from`, in order.
    pub fn ranges_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let head = self
            .at_or_before(from)
            .filter(|&(s, e)| s < from && e >= from)
            .map(|(_, e)| (from, e));
        head.into_iter().chain(self.ranges_starting_from(from))
    }

    /// Every range, in order.
    pub fn ranges(&self) -> Ranges<'_> {
        self.ranges_starting_from(0)
    }

    /// Rebuilds from persisted ranges; `None` on unordered, overlapping or
    /// adjacent ones, or one that ends before it starts.
    pub fn from_ranges(list: impl IntoIterator<Item = (u64, u64)>) -> Option<RangeSet> {
        let mut set = RangeSet::default();
        let mut prev: Option<u64> = None;
        for (s, e) in list {
            if e < s || prev.is_some_and(|p| s <= p.saturating_add(1)) {
                return None;
            }
            set.put(s, e);
            prev = Some(e);
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn behaves_like_a_set() {
        let mut rs = RangeSet::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 12345;
        for _ in 0..20000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 33) % 300;
            if (x >> 20) & 1 == 0 {
                assert_eq!(rs.insert(v), model.insert(v));
            } else {
                assert_eq!(rs.remove(v), model.remove(&v));
            }
            assert_eq!(rs.first(), model.first().copied());
            assert_eq!(rs.last(), model.last().copied());
            shape_fits(&rs);
        }
        let flat: Vec<u64> = rs.ranges().flat_map(|(s, e)| s..=e).collect();
        assert_eq!(flat, model.iter().copied().collect::<Vec<_>>());
        let from: Vec<u64> = rs.ranges_from(150).flat_map(|(s, e)| s..=e).collect();
        assert_eq!(from, model.range(150..).copied().collect::<Vec<_>>());
        for v in 0..300 {
            assert_eq!(rs.contains(v), model.contains(&v));
        }
        assert_eq!(
            RangeSet::from_ranges(rs.ranges()).map(|r| r.ranges().collect::<Vec<_>>()),
            Some(rs.ranges().collect())
        );
        assert!(
            matches!(rs, RangeSet::Big(_)),
            "scattered sets move to the tree"
        );
        assert_eq!(RangeSet::from_ranges([(5, 3)]), None);
        assert_eq!(RangeSet::from_ranges([(1, 3), (4, 5)]), None);
        // Drained in a scattered order, through every shape.
        let mut left: Vec<u64> = model.iter().copied().collect();
        while !left.is_empty() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = left.swap_remove((x >> 33) as usize % left.len());
            assert!(rs.remove(v) && model.remove(&v));
            shape_fits(&rs);
            assert_eq!(rs.range_count(), rs.ranges().count());
            assert_eq!(rs.first(), model.first().copied());
        }
        assert!(matches!(rs, RangeSet::Empty), "{rs:?}");
    }

    /// The set is in the shape its size calls for: inline for at most one
    /// range, a vector for up to `SMALL`, a tree only past half of that.
    fn shape_fits(rs: &RangeSet) {
        let n = rs.range_count();
        match rs {
            RangeSet::Empty => assert_eq!(n, 0),
            RangeSet::One(_) => assert_eq!(n, 1),
            RangeSet::Small(r) => assert!((2..=SMALL).contains(&n) && r.capacity() <= 4 * n),
            RangeSet::Big(_) => assert!(n > SMALL / 2, "a tree of {n} ranges"),
        }
    }

    #[test]
    fn a_drained_set_gives_its_room_back() {
        // Scattered: every other seq, so every seq is a range of its own.
        let mut rs = RangeSet::default();
        for v in 0..100u64 {
            rs.insert(2 * v);
        }
        assert!(matches!(rs, RangeSet::Big(_)));
        // Drained to half a vector's worth: a vector again, then inline,
        // then nothing; and scattered again, a tree again.
        for v in 0..(100 - SMALL as u64 / 2) {
            rs.remove(2 * v);
        }
        match &rs {
            RangeSet::Small(r) => {
                assert_eq!(r.len(), SMALL / 2);
                assert!(r.capacity() <= 2 * SMALL, "{}", r.capacity());
            }
            other => panic!("{other:?}"),
        }
        for v in (100 - SMALL as u64 / 2)..99 {
            rs.remove(2 * v);
        }
        assert!(matches!(rs, RangeSet::One([(198, 198)])), "{rs:?}");
        rs.remove(198);
        assert!(matches!(rs, RangeSet::Empty), "{rs:?}");
        for v in 0..(SMALL as u64 + 1) {
            rs.insert(2 * v);
        }
        assert!(matches!(rs, RangeSet::Big(_)));
        // A small vector that loses most of its ranges shrinks.
        let mut rs = RangeSet::default();
        for v in 0..SMALL as u64 {
            rs.insert(2 * v);
        }
        for v in 0..(SMALL as u64 - 2) {
            rs.remove(2 * v);
        }
        match &rs {
            RangeSet::Small(r) => assert!(r.capacity() <= 4, "{}", r.capacity()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equal_sets_are_equal_in_any_shape() {
        // 16 ranges, reached from 17: still a tree; the same ranges built
        // afresh: a vector. Equal all the same.
        let mut tree = RangeSet::default();
        for v in 0..=SMALL as u64 {
            tree.insert(2 * v);
        }
        tree.remove(0);
        assert!(matches!(tree, RangeSet::Big(_)));
        let vector = RangeSet::from_ranges(tree.ranges()).unwrap_or_default();
        assert!(matches!(vector, RangeSet::Small(_)));
        assert_eq!(tree, vector);
        tree.remove(2);
        assert_ne!(tree, vector);
        assert_ne!(
            RangeSet::from_ranges([(1, 2)]),
            RangeSet::from_ranges([(1, 3)])
        );
    }

    #[test]
    fn a_range_start_moves_in_place() {
        // Taking a range's first seq, or adding the seq before it, moves
        // its start: no reallocation, whatever the count of ranges.
        // Two ranges in a vector with room for three (a third range came
        // and went): moving a start in place keeps that room, where taking
        // the range and putting it back would have gone inline and then
        // to a new vector of two.
        let mut rs = RangeSet::from_ranges([(1, 5), (10, 15), (20, 22)]).unwrap_or_default();
        assert!(rs.remove(20) && rs.remove(21) && rs.remove(22));
        let room = match &rs {
            RangeSet::Small(r) => r.capacity(),
            other => panic!("{other:?}"),
        };
        assert_eq!(room, 3);
        assert!(rs.remove(1) && rs.remove(10) && rs.insert(10) && rs.insert(9));
        match &rs {
            RangeSet::Small(r) => {
                assert_eq!(r[..], [(2, 5), (9, 15)]);
                assert_eq!(r.capacity(), room);
            }
            other => panic!("{other:?}"),
        }
        let mut one = RangeSet::from_ranges([(1, 5)]).unwrap_or_default();
        assert!(one.remove(1));
        assert!(matches!(one, RangeSet::One([(2, 5)])), "{one:?}");
        assert!(one.insert(1));
        assert!(matches!(one, RangeSet::One([(1, 5)])), "{one:?}");
    }

    #[test]
    fn consecutive_is_one_range() {
        let mut rs = RangeSet::default();
        for v in 1000..2000 {
            rs.insert(v);
        }
        assert_eq!(rs.range_count(), 1);
        rs.remove(1500);
        assert_eq!(rs.range_count(), 2);
        assert!(matches!(rs, RangeSet::Small(_)));
        rs.remove(1501);
        rs.insert(1500);
        rs.insert(1501);
        assert!(matches!(rs, RangeSet::One(_)), "one range again is inline");
        for v in 1000..2000 {
            rs.remove(v);
        }
        assert!(matches!(rs, RangeSet::Empty), "{rs:?}");
        assert_eq!(std::mem::size_of::<RangeSet>(), 32);
    }
}
