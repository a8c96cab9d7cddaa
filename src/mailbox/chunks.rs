//! A log's chunk list: a deque whose only element, while there is one,
//! lives inline.
//!
//! Most mailboxes hold a few messages, all in one chunk. Kept inline, that
//! chunk's place costs no allocation (a deque of one 48-byte element is a
//! 48-byte allocation) and its buffer's address sits in the mailbox's own
//! cache lines, one pointer nearer for the store that appends to it. The
//! enum takes no more room than the chunk itself: the deque's 32 bytes
//! and the tag fit around the chunk's buffer pointer, which cannot be
//! null. From two chunks on they are a deque as before, and a deque left
//! with one chunk gives its allocation back.

use std::collections::VecDeque;
use std::iter::Chain;
use std::ops::{Index, IndexMut};

/// The chunks in order: [`Chunks::One`] holds the only one; otherwise the
/// deque holds them all (none, or at least two).
#[derive(Debug)]
pub enum Chunks<T> {
    One(T),
    Deque(VecDeque<T>),
}

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Chunks::Deque(VecDeque::new())
    }
}

/// The chunks from some place on, in order.
pub type Iter<'a, T> = Chain<std::slice::Iter<'a, T>, std::slice::Iter<'a, T>>;

impl<T> Chunks<T> {
    /// The chunks as two slices, in order (as [`VecDeque::as_slices`]).
    fn as_slices(&self) -> (&[T], &[T]) {
        match self {
            Chunks::One(t) => (std::slice::from_ref(t), &[]),
            Chunks::Deque(d) => d.as_slices(),
        }
    }

    /// How many chunks.
    pub fn len(&self) -> usize {
        match self {
            Chunks::One(_) => 1,
            Chunks::Deque(d) => d.len(),
        }
    }

    /// How many chunks fit without allocating (1 for the inline one).
    pub fn capacity(&self) -> usize {
        match self {
            Chunks::One(_) => 1,
            Chunks::Deque(d) => d.capacity(),
        }
    }

    /// Heap bytes of the list itself (0 for none or one chunk).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Chunks::One(_) => 0,
            Chunks::Deque(d) => d.capacity() * std::mem::size_of::<T>(),
        }
    }

    /// The only chunk, when it is inline.
    pub fn inline(&self) -> Option<&T> {
        match self {
            Chunks::One(t) => Some(t),
            Chunks::Deque(_) => None,
        }
    }

    /// Chunk `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        match self {
            Chunks::One(t) => (i == 0).then_some(t),
            Chunks::Deque(d) => d.get(i),
        }
    }

    /// Chunk `i`, to change.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match self {
            Chunks::One(t) => (i == 0).then_some(t),
            Chunks::Deque(d) => d.get_mut(i),
        }
    }

    /// The first chunk.
    pub fn front(&self) -> Option<&T> {
        match self {
            Chunks::One(t) => Some(t),
            Chunks::Deque(d) => d.front(),
        }
    }

    /// The last chunk.
    pub fn back(&self) -> Option<&T> {
        match self {
            Chunks::One(t) => Some(t),
            Chunks::Deque(d) => d.back(),
        }
    }

    /// The last chunk, to change.
    pub fn back_mut(&mut self) -> Option<&mut T> {
        match self {
            Chunks::One(t) => Some(t),
            Chunks::Deque(d) => d.back_mut(),
        }
    }

    /// The chunks in order.
    pub fn iter(&self) -> Iter<'_, T> {
        self.range_from(0)
    }

    /// The chunks from chunk `i` on (none when `i` is past the end).
    pub fn range_from(&self, i: usize) -> Iter<'_, T> {
        let (a, b) = self.as_slices();
        match i.checked_sub(a.len()) {
            None => a[i..].iter().chain(b.iter()),
            Some(j) => a[a.len()..].iter().chain(b.get(j..).unwrap_or(&[]).iter()),
        }
    }

    /// The number of leading chunks for which `pred` holds (they must come
    /// first, as for [`slice::partition_point`]).
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (a, b) = self.as_slices();
        let n = a.partition_point(&mut pred);
        if n < a.len() {
            n
        } else {
            n + b.partition_point(pred)
        }
    }

    /// Makes room for `n` more chunks in the deque; none or one chunk
    /// has no deque to grow (a second chunk makes a deque of two).
    pub fn reserve_exact(&mut self, n: usize) {
        if let Chunks::Deque(d) = self {
            if !d.is_empty() {
                d.reserve_exact(n);
            }
        }
    }

    /// Adds `t` at the end.
    pub fn push_back(&mut self, t: T) {
        self.insert(self.len(), t);
    }

    /// Inserts `t` at place `i` (at most [`Chunks::len`], as for
    /// [`VecDeque::insert`]). A second chunk moves the inline one into a
    /// deque of two.
    pub fn insert(&mut self, i: usize, t: T) {
        match self {
            Chunks::Deque(d) if !d.is_empty() => d.insert(i, t),
            Chunks::Deque(_) => *self = Chunks::One(t),
            Chunks::One(_) => {
                let mut d = VecDeque::with_capacity(2);
                if let Chunks::One(first) = std::mem::take(self) {
                    d.push_back(first);
                }
                d.insert(i, t);
                *self = Chunks::Deque(d);
            }
        }
    }

    /// A deque left with one chunk keeps it inline and frees itself.
    fn settle(&mut self) {
        if let Chunks::Deque(d) = self {
            if d.len() == 1 {
                if let Some(t) = d.pop_front() {
                    *self = Chunks::One(t);
                }
            } else if d.is_empty() && d.capacity() > 0 {
                *self = Chunks::default();
            }
        }
    }

    /// Removes chunk `i` and returns it.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let t = match self {
            Chunks::One(_) if i == 0 => match std::mem::take(self) {
                Chunks::One(t) => Some(t),
                Chunks::Deque(_) => None,
            },
            Chunks::One(_) => None,
            Chunks::Deque(d) => d.remove(i),
        };
        self.settle();
        t
    }

    /// Removes the first chunk.
    pub fn pop_front(&mut self) -> Option<T> {
        self.remove(0)
    }

    /// Removes the last chunk.
    pub fn pop_back(&mut self) -> Option<T> {
        self.remove(self.len().checked_sub(1)?)
    }

    /// Keeps the chunks for which `keep` holds, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            Chunks::One(t) => {
                if !keep(t) {
                    *self = Chunks::default();
                }
            }
            Chunks::Deque(d) => d.retain(keep),
        }
        self.settle();
    }

    /// Gives back room beyond `n` chunks (at least the chunks held).
    pub fn shrink_to(&mut self, n: usize) {
        if let Chunks::Deque(d) = self {
            d.shrink_to(n);
        }
    }
}

impl<T> Index<usize> for Chunks<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(t) => t,
            None => panic!("chunk {i} of {}", self.len()),
        }
    }
}

impl<T> IndexMut<usize> for Chunks<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len();
        match self.get_mut(i) {
            Some(t) => t,
            None => panic!("chunk {i} of {len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chunks;
    use crate::test_rng::Rng;
    use std::collections::VecDeque;

    fn check(c: &Chunks<u32>, model: &VecDeque<u32>) {
        assert_eq!(c.len(), model.len());
        assert!(c.iter().eq(model.iter()));
        assert_eq!((c.front(), c.back()), (model.front(), model.back()));
        for i in 0..model.len() + 2 {
            assert_eq!(c.get(i), model.get(i));
            assert!(c.range_from(i).eq(model.range(i.min(model.len())..)));
        }
        for x in 0..40 {
            assert_eq!(
                c.partition_point(|&v| v < x),
                model.partition_point(|&v| v < x)
            );
        }
        // One chunk is always inline and costs no allocation; none costs
        // none either.
        assert_eq!(c.inline().is_some(), model.len() == 1);
        if model.len() <= 1 {
            assert_eq!(c.heap_bytes(), 0);
        }
    }

    /// Pushes, inserts and removals at every place, pops, retains and
    /// reservations against a `VecDeque`, the model kept sorted as the
    /// log keeps its chunks.
    #[test]
    fn behaves_as_a_deque() {
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut c = Chunks::<u32>::default();
            let mut model = VecDeque::new();
            for _ in 0..300 {
                match rng.index(9) {
                    0 | 1 if model.len() < 10 => {
                        let v = model.back().map_or(0, |&b| b + 1 + rng.index(3) as u32);
                        c.push_back(v);
                        model.push_back(v);
                    }
                    2 if model.len() < 10 => {
                        let v = rng.index(40) as u32;
                        let at = model.partition_point(|&x| x < v);
                        assert_eq!(c.partition_point(|&x| x < v), at);
                        c.insert(at, v);
                        model.insert(at, v);
                    }
                    3 => {
                        let i = rng.index(model.len() + 1);
                        assert_eq!(c.remove(i), model.remove(i));
                    }
                    4 => assert_eq!(c.pop_front(), model.pop_front()),
                    5 => assert_eq!(c.pop_back(), model.pop_back()),
                    6 => {
                        let m = rng.index(3) as u32;
                        c.retain(|&x| x % 3 != m);
                        model.retain(|&x| x % 3 != m);
                    }
                    7 => {
                        let n = rng.index(4);
                        c.reserve_exact(n);
                        c.shrink_to(c.len());
                    }
                    8 if !model.is_empty() => {
                        let i = rng.index(model.len());
                        c[i] += 100;
                        model[i] += 100;
                        if let Some(b) = c.back_mut() {
                            *b += 1;
                        }
                        if let Some(b) = model.back_mut() {
                            *b += 1;
                        }
                        // The model stays sorted only up to these bumps;
                        // sort both alike.
                        let mut v: Vec<u32> = model.iter().copied().collect();
                        v.sort_unstable();
                        model = v.iter().copied().collect();
                        c = Chunks::default();
                        for x in v {
                            c.push_back(x);
                        }
                    }
                    _ => {}
                }
                check(&c, &model);
            }
        }
    }
}
