//! A mailbox's device table: a vector whose first element lives inside
//! the mailbox and the rest in one allocation grown exactly.
//!
//! Most mailboxes have one device. Kept inline, that device costs no
//! allocation of its own and sits in the mailbox's own cache lines, so a
//! command reads its label and pending deliveries one pointer sooner.
//! The devices after the first share one allocation grown by one element
//! at a time (devices are few), so with jemalloc's size classes (48 and 80
//! bytes for one and two 40-byte devices) the second and third devices
//! add 48 and 32 bytes beside their labels: 40 on average, as before.
//! Keeping every device inline up to some count instead would make each
//! mailbox carry the space of devices it does not have.

use super::Device;
use std::iter::Chain;
use std::ops::{Index, IndexMut};

/// An ordered list of devices, indexed from 0 like a vector: `first` is
/// element 0 and `rest[i]` is element `i + 1`. `first` is `None` only
/// while the list is empty.
#[derive(Debug)]
pub struct Devices<D = Device> {
    first: Option<D>,
    rest: Vec<D>,
}

impl<D> Default for Devices<D> {
    fn default() -> Self {
        Devices {
            first: None,
            rest: Vec::new(),
        }
    }
}

/// The devices in order.
pub type Iter<'a, D> = Chain<std::option::Iter<'a, D>, std::slice::Iter<'a, D>>;
/// The devices in order, to change.
pub type IterMut<'a, D> = Chain<std::option::IterMut<'a, D>, std::slice::IterMut<'a, D>>;

impl<D> Devices<D> {
    /// How many devices.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// No device.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Device 0.
    pub fn first(&self) -> Option<&D> {
        self.first.as_ref()
    }

    /// Device `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&D> {
        match i {
            0 => self.first.as_ref(),
            _ => self.rest.get(i - 1),
        }
    }

    /// Device `i` to change, if there is one.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut D> {
        match i {
            0 => self.first.as_mut(),
            _ => self.rest.get_mut(i - 1),
        }
    }

    /// The devices in order.
    pub fn iter(&self) -> Iter<'_, D> {
        self.first.iter().chain(self.rest.iter())
    }

    /// The devices in order, to change.
    pub fn iter_mut(&mut self) -> IterMut<'_, D> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    /// Adds `d` at the end; the devices after the first grow by exactly
    /// one element.
    pub fn push(&mut self, d: D) {
        if self.first.is_none() {
            self.first = Some(d);
        } else {
            self.rest.reserve_exact(1);
            self.rest.push(d);
        }
    }

    /// Makes room for `n` more devices in one allocation (a load that
    /// knows the count).
    pub fn reserve_exact(&mut self, n: usize) {
        let inline = usize::from(self.first.is_none());
        self.rest.reserve_exact(n.saturating_sub(inline));
    }

    /// Removes device `i` and returns it; the later ones move down one
    /// place, as in a vector. The allocation of the rest shrinks to fit
    /// (removals are rare) and goes with its last device. Panics when `i` is out of range, as a vector's does
    /// (callers take `i` from a lookup).
    pub fn remove(&mut self, i: usize) -> D {
        let d = if i == 0 {
            let Some(d) = self.first.take() else {
                panic!("device 0 removed from an empty table");
            };
            if !self.rest.is_empty() {
                self.first = Some(self.rest.remove(0));
            }
            d
        } else {
            self.rest.remove(i - 1)
        };
        if self.rest.is_empty() {
            self.rest = Vec::new();
        } else {
            self.rest.shrink_to_fit();
        }
        d
    }

    /// Removes every device.
    pub fn clear(&mut self) {
        self.first = None;
        self.rest = Vec::new();
    }

    /// Asks the CPU to fetch the devices past the first (a hint: nothing
    /// is read).
    pub fn prefetch_rest(&self) {
        crate::prefetch::prefetch(self.rest.first());
    }

    /// Heap bytes of the table itself (the devices past the first; their
    /// own allocations not included).
    pub fn heap_bytes(&self) -> usize {
        self.rest.capacity() * std::mem::size_of::<D>()
    }
}

impl<D> Index<usize> for Devices<D> {
    type Output = D;
    fn index(&self, i: usize) -> &D {
        match self.get(i) {
            Some(d) => d,
            None => panic!("device {i} of {}", self.len()),
        }
    }
}

impl<D> IndexMut<usize> for Devices<D> {
    fn index_mut(&mut self, i: usize) -> &mut D {
        let len = self.len();
        match self.get_mut(i) {
            Some(d) => d,
            None => panic!("device {i} of {len}"),
        }
    }
}

impl<'a, D> IntoIterator for &'a Devices<D> {
    type Item = &'a D;
    type IntoIter = Iter<'a, D>;
    fn into_iter(self) -> Iter<'a, D> {
        self.iter()
    }
}

impl<'a, D> IntoIterator for &'a mut Devices<D> {
    type Item = &'a mut D;
    type IntoIter = IterMut<'a, D>;
    fn into_iter(self) -> IterMut<'a, D> {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::Devices;
    use crate::test_rng::Rng;

    fn check(t: &Devices<u32>, model: &[u32]) {
        assert_eq!(t.len(), model.len());
        assert_eq!(t.is_empty(), model.is_empty());
        assert_eq!(t.first(), model.first());
        assert!(t.iter().eq(model.iter()));
        assert!(t.iter().rev().eq(model.iter().rev()));
        for i in 0..model.len() + 2 {
            assert_eq!(t.get(i), model.get(i));
        }
        for (i, m) in model.iter().enumerate() {
            assert_eq!(&t[i], m);
        }
        // The inline element is used first, and the rest hold no spare room
        // (grown one at a time) and no allocation once empty.
        assert_eq!(t.first.is_some(), !model.is_empty());
        assert_eq!(t.rest.capacity(), model.len().saturating_sub(1));
    }

    /// Pushes, removals at every place, changes and clears against a
    /// vector.
    #[test]
    fn behaves_as_a_vector_grown_exactly() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut t = Devices::<u32>::default();
            let mut model: Vec<u32> = Vec::new();
            for step in 0..400u32 {
                match rng.index(10) {
                    0..=4 if model.len() < 12 => {
                        t.push(step);
                        model.push(step);
                    }
                    5..=7 if !model.is_empty() => {
                        let i = rng.index(model.len());
                        assert_eq!(t.remove(i), model.remove(i));
                    }
                    8 if !model.is_empty() => {
                        let i = rng.index(model.len());
                        t[i] += 1000;
                        model[i] += 1000;
                        for d in &mut t {
                            *d += 1;
                        }
                        for d in &mut model {
                            *d += 1;
                        }
                    }
                    9 if rng.index(8) == 0 => {
                        t.clear();
                        model.clear();
                    }
                    _ => {}
                }
                check(&t, &model);
            }
        }
    }

    /// A load reserves for the devices past the inline one.
    #[test]
    fn reserve_counts_the_inline_place() {
        let mut t = Devices::<u32>::default();
        t.reserve_exact(3);
        assert_eq!(t.rest.capacity(), 2);
        for i in 0..3 {
            t.push(i);
        }
        assert_eq!(t.rest.capacity(), 2);
        assert_eq!(t.heap_bytes(), 8);
    }
}
