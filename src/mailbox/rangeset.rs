//! A set of seqs kept as disjoint inclusive ranges. A device's offline
//! messages are nearly always one run of consecutive seqs, so the set costs
//! a few bytes however many messages it names.

use std::collections::BTreeMap;

#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (inclusive), disjoint and not adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, v: u64) -> bool {
        self.ranges
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &e)| e >= v)
    }

    /// Adds `v`; answers false when it was there already.
    pub fn insert(&mut self, v: u64) -> bool {
        let before = self.ranges.range(..=v).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, e)) = before {
            if e >= v {
                return false;
            }
        }
        let after = v.checked_add(1).and_then(|n| self.ranges.get(&n).copied());
        match (before, after) {
            (Some((s, e)), Some(ae)) if e.checked_add(1) == Some(v) => {
                self.ranges.remove(&(v + 1));
                self.ranges.insert(s, ae);
            }
            (Some((s, e)), _) if e.checked_add(1) == Some(v) => {
                self.ranges.insert(s, v);
            }
            (_, Some(ae)) => {
                self.ranges.remove(&(v + 1));
                self.ranges.insert(v, ae);
            }
            _ => {
                self.ranges.insert(v, v);
            }
        }
        true
    }

    /// Removes `v`; answers false when it was not there.
    pub fn remove(&mut self, v: u64) -> bool {
        let Some((s, e)) = self.ranges.range(..=v).next_back().map(|(&s, &e)| (s, e)) else {
            return false;
        };
        if e < v {
            return false;
        }
        if s == v {
            self.ranges.remove(&s);
        } else {
            self.ranges.insert(s, v - 1);
        }
        if e > v {
            self.ranges.insert(v + 1, e);
        }
        true
    }

    pub fn first(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    pub fn last(&self) -> Option<u64> {
        self.ranges.values().next_back().copied()
    }

    /// The ranges, clipped to start at `from`, in order.
    pub fn ranges_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let head = self
            .ranges
            .range(..from)
            .next_back()
            .filter(|(_, &e)| e >= from)
            .map(|(_, &e)| (from, e));
        head.into_iter()
            .chain(self.ranges.range(from..).map(|(&s, &e)| (s, e)))
    }

    /// Every range, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Rebuilds from persisted ranges; refuses overlapping or unordered ones.
    pub fn from_ranges(list: impl IntoIterator<Item = (u64, u64)>) -> Option<RangeSet> {
        let mut ranges = BTreeMap::new();
        let mut prev: Option<u64> = None;
        for (s, e) in list {
            if e < s || prev.is_some_and(|p| s <= p.saturating_add(1)) {
                return None;
            }
            ranges.insert(s, e);
            prev = Some(e);
        }
        Some(RangeSet { ranges })
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
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
        }
        let flat: Vec<u64> = rs.ranges().flat_map(|(s, e)| s..=e).collect();
        assert_eq!(flat, model.iter().copied().collect::<Vec<_>>());
        let from: Vec<u64> = rs.ranges_from(150).flat_map(|(s, e)| s..=e).collect();
        assert_eq!(from, model.range(150..).copied().collect::<Vec<_>>());
        for v in 0..300 {
            assert_eq!(rs.contains(v), model.contains(&v));
        }
        assert_eq!(RangeSet::from_ranges(rs.ranges()), Some(rs.clone()));
        assert_eq!(RangeSet::from_ranges([(5, 3)]), None);
        assert_eq!(RangeSet::from_ranges([(1, 3), (4, 5)]), None);
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
    }
}
