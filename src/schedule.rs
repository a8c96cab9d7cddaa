//! The deadline index the timer pops: for every mailbox that has timer work
//! ahead, when that work is due (ms). A run touches only what is due, and
//! [`Schedule::next_due`] is exact (SPEC §5: `IM.SWEEP`'s `next`).
//!
//! Each entry is a slot in a slab (its due time and the mailbox's key
//! name); the mailbox remembers its slot (see [`Entry`]), so moving or
//! dropping an entry needs no lookup by name. The order lives in two tiers:
//!
//! - the **near** tree, ordered by `(due, slot)`: the entries due within
//!   about [`LEAD_MS`] of now (resends and ack timeouts: the ones that
//!   move on every ack), and
//! - the **far** buckets, one per [`BUCKET_MS`] of due time, each an
//!   unordered list of slot handles: the deadlines days away (retention,
//!   `device-idle`, `mailbox-idle`). Removing or moving such an entry
//!   touches only its slot and its bucket's live count; the handle left
//!   behind is dropped when the bucket is compacted (queued when its
//!   handles pass three times its live ones) or reaches the near tree.
//!
//! The timer moves the far buckets into the near tree ahead of time
//! ([`Schedule::advance`], a bounded number of handles per run). Whatever
//! has not been moved yet is moved when an exact answer needs it: every
//! far entry is due no sooner than its bucket's start, so the near tree's
//! first entry is the earliest while it is due no later than that.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A mailbox's db and key: `db` (4 bytes, little endian) followed by the
/// key's bytes. Owned, not shared: every mailbox with timer work holds one
/// in the schedule, and a refcount would add 16 bytes to each.
pub type KeyName = Box<[u8]>;

/// The [`KeyName`] of `key` in `db`.
pub fn key_name(db: i32, key: &[u8]) -> KeyName {
    // Built in place: the capacity is exact, so the box keeps the buffer.
    let mut v = Vec::with_capacity(4 + key.len());
    v.extend_from_slice(&db.to_le_bytes());
    v.extend_from_slice(key);
    v.into_boxed_slice()
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
    /// The entry due at `due` (ms); `id` is its slot (low 32 bits) and the
    /// slot's generation (high 32 bits), so that an entry popped or
    /// dropped is never mistaken for a later one in the same slot.
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

/// log2 of a far bucket's span of due times: 2^20 ms, about 17.5 minutes
/// (about 2,500 buckets for 30 days of deadlines).
const BUCKET_SHIFT: u32 = 20;
/// A far bucket's span of due times (ms).
pub const BUCKET_MS: i64 = 1 << BUCKET_SHIFT;
/// How far ahead of now (ms) the timer moves far buckets into the near
/// tree: two buckets, so that a deadline set within about half an hour
/// (a resend, an ack timeout) goes straight to the near tree.
pub const LEAD_MS: i64 = 2 * BUCKET_MS;
/// Slots per page of the slab: pages are never moved, so the slab grows
/// without copying.
const PAGE: usize = 1024;

fn bucket_of(due: i64) -> i64 {
    due >> BUCKET_SHIFT
}

fn bucket_start(bucket: i64) -> i64 {
    bucket << BUCKET_SHIFT
}

/// One entry: 32 bytes.
#[derive(Default)]
struct Slot {
    /// The mailbox's db and key; `None` while the slot is free.
    name: Option<KeyName>,
    /// When its work is due (ms).
    due: i64,
    /// Bumped each time the slot is freed: the high half of its entries'
    /// ids.
    generation: u32,
    /// Odd while the slot sits in a far bucket, and then the handle's own
    /// number; bumped on the way in and on the way out, so that a handle
    /// left behind never matches again.
    far: u32,
}

/// The entries due within one [`BUCKET_MS`] span: handles `(slot, far)`,
/// the live ones those whose slot still holds that `far` number.
#[derive(Default)]
struct Bucket {
    handles: Vec<(u32, u32)>,
    /// Live handles.
    live: u32,
    /// Handles before this one were moved to the near tree already.
    moved: usize,
    /// Queued for compaction (its handles passed three times its live
    /// ones), which has looked at the handles before `checked`.
    dirty: bool,
    checked: usize,
}

pub struct Schedule {
    /// The slab: pages of [`PAGE`] slots.
    pages: Vec<Box<[Slot]>>,
    /// Slots free for reuse.
    free: Vec<u32>,
    /// Entries.
    len: usize,
    near: BTreeSet<(i64, u32)>,
    far: BTreeMap<i64, Bucket>,
    /// Buckets queued for compaction.
    dirty: VecDeque<i64>,
    /// An entry due in a bucket before this one goes to the near tree;
    /// every far bucket is at or after it.
    horizon: i64,
    /// The generation new slots start at (see [`Schedule::clear`]).
    floor: u32,
}

fn slot(pages: &[Box<[Slot]>], h: u32) -> Option<&Slot> {
    pages.get(h as usize / PAGE)?.get(h as usize % PAGE)
}

fn slot_mut(pages: &mut [Box<[Slot]>], h: u32) -> Option<&mut Slot> {
    pages.get_mut(h as usize / PAGE)?.get_mut(h as usize % PAGE)
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            pages: Vec::new(),
            free: Vec::new(),
            len: 0,
            near: BTreeSet::new(),
            far: BTreeMap::new(),
            dirty: VecDeque::new(),
            horizon: i64::MIN,
            floor: 0,
        }
    }
}

impl Schedule {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn id(&self, h: u32) -> u64 {
        let generation = slot(&self.pages, h).map_or(0, |s| s.generation);
        (u64::from(generation) << 32) | u64::from(h)
    }

    /// The slot of entry `id`, while it is in the schedule.
    fn live(&self, id: u64) -> Option<u32> {
        let h = id as u32;
        slot(&self.pages, h)
            .filter(|s| s.name.is_some() && u64::from(s.generation) == id >> 32)
            .map(|_| h)
    }

    fn alloc(&mut self, name: KeyName) -> u32 {
        let h = match self.free.pop() {
            Some(h) => h,
            None => {
                let h = (self.pages.len() * PAGE) as u32;
                let generation = self.floor;
                self.pages.push(
                    (0..PAGE)
                        .map(|_| Slot {
                            generation,
                            ..Slot::default()
                        })
                        .collect(),
                );
                self.free.extend((h + 1..h + PAGE as u32).rev());
                h
            }
        };
        if let Some(s) = slot_mut(&mut self.pages, h) {
            s.name = Some(name);
        }
        self.len += 1;
        h
    }

    /// Frees slot `h` (out of the near tree and the far buckets already)
    /// and answers its name.
    fn release(&mut self, h: u32) -> Option<KeyName> {
        let s = slot_mut(&mut self.pages, h)?;
        let name = s.name.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(h);
        self.len -= 1;
        Some(name)
    }

    /// Puts slot `h` at `due` in the near tree or its far bucket.
    fn link(&mut self, h: u32, due: i64) {
        let horizon = self.horizon;
        let Some(s) = slot_mut(&mut self.pages, h) else {
            return;
        };
        s.due = due;
        let b = bucket_of(due);
        if b < horizon {
            self.near.insert((due, h));
        } else {
            s.far = s.far.wrapping_add(1);
            let handle = (h, s.far);
            let bucket = self.far.entry(b).or_default();
            bucket.handles.push(handle);
            bucket.live += 1;
        }
    }

    /// Takes slot `h` out of the near tree or its far bucket.
    fn unlink(&mut self, h: u32) {
        let Some(s) = slot_mut(&mut self.pages, h) else {
            return;
        };
        if s.far & 1 == 0 {
            self.near.remove(&(s.due, h));
            return;
        }
        s.far = s.far.wrapping_add(1);
        let b = bucket_of(s.due);
        let Some(bucket) = self.far.get_mut(&b) else {
            return;
        };
        bucket.live = bucket.live.saturating_sub(1);
        if bucket.live == 0 {
            self.far.remove(&b);
        } else if !bucket.dirty
            && bucket.handles.len() - bucket.moved > 3 * bucket.live as usize + 16
        {
            bucket.dirty = true;
            bucket.checked = bucket.moved;
            self.dirty.push_back(b);
        }
        if !self.dirty.is_empty() {
            // A share of the compaction here too, so that dead handles stay
            // bounded however fast they come (the upkeep alone looks at a
            // fixed number per tick).
            self.compact(4);
        }
    }

    /// Drops up to `limit` dead handles' worth of the queued buckets'
    /// handles (the order within a bucket does not matter); answers how
    /// many it looked at.
    fn compact(&mut self, limit: usize) -> usize {
        let mut seen = 0;
        while seen < limit {
            let Some(&b) = self.dirty.front() else {
                break;
            };
            let Some(bucket) = self.far.get_mut(&b).filter(|k| k.dirty) else {
                self.dirty.pop_front();
                continue;
            };
            let mut i = bucket.checked.max(bucket.moved);
            while i < bucket.handles.len() && seen < limit {
                seen += 1;
                if let Some(&(h, _)) = bucket.handles.get(i + 8) {
                    crate::prefetch::prefetch(slot(&self.pages, h));
                }
                let (h, far) = bucket.handles[i];
                if slot(&self.pages, h).is_some_and(|s| s.far == far && bucket_of(s.due) == b) {
                    i += 1;
                } else {
                    bucket.handles.swap_remove(i);
                }
            }
            bucket.checked = i;
            if i >= bucket.handles.len() {
                bucket.dirty = false;
                if bucket.handles.capacity() > 2 * bucket.handles.len() + 16 {
                    bucket.handles.shrink_to_fit();
                }
                self.dirty.pop_front();
            }
        }
        seen
    }

    /// Moves up to `limit` handles of the first far bucket into the near
    /// tree; answers how many it looked at. With `raise`, a bucket moved
    /// to its end moves the horizon past it; an exact answer about a
    /// bucket far ahead does not, so that later deadlines of that time
    /// still go to a far bucket.
    fn move_first(&mut self, limit: usize, raise: bool) -> usize {
        let Some(mut first) = self.far.first_entry() else {
            return 0;
        };
        let b = *first.key();
        let bucket = first.get_mut();
        let end = bucket.handles.len().min(bucket.moved.saturating_add(limit));
        let seen = end.saturating_sub(bucket.moved);
        for &(h, far) in bucket.handles.get(bucket.moved..end).unwrap_or_default() {
            let Some(s) = slot_mut(&mut self.pages, h) else {
                continue;
            };
            // The bucket too: a handle whose number came round again
            // (2^31 moves of its slot) is not taken for a live one.
            if s.far == far && bucket_of(s.due) == b {
                s.far = s.far.wrapping_add(1);
                self.near.insert((s.due, h));
                bucket.live = bucket.live.saturating_sub(1);
            }
        }
        bucket.moved = end;
        if bucket.live == 0 || end >= bucket.handles.len() {
            first.remove();
            if raise {
                self.horizon = self.horizon.max(b.saturating_add(1));
            }
        }
        seen
    }

    /// The near tree's first entry, when it is the earliest of all.
    fn earliest_near(&self) -> Option<(i64, u32)> {
        let &(due, h) = self.near.first()?;
        match self.far.first_key_value() {
            Some((&b, _)) if due > bucket_start(b) => None,
            _ => Some((due, h)),
        }
    }

    /// Where entry `entry`'s slot is in memory (to prefetch it), if it has
    /// one.
    pub fn address(&self, entry: Entry) -> Option<*const u8> {
        match entry {
            Entry::At { id, .. } => slot(&self.pages, id as u32).map(|s| (s as *const Slot).cast()),
            _ => None,
        }
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
            Entry::At { id, .. } => self.live(id),
            _ => None,
        };
        entry.set(match (kept, due) {
            (Some(h), Some(due)) => {
                let same_bucket = slot(&self.pages, h)
                    .is_some_and(|s| s.far & 1 == 1 && bucket_of(s.due) == bucket_of(due));
                if same_bucket {
                    if let Some(s) = slot_mut(&mut self.pages, h) {
                        s.due = due;
                    }
                } else {
                    self.unlink(h);
                    self.link(h, due);
                }
                Entry::At {
                    due,
                    id: self.id(h),
                }
            }
            (Some(h), None) => {
                self.unlink(h);
                self.release(h);
                Entry::Idle
            }
            (None, Some(due)) => {
                let h = self.alloc(name());
                self.link(h, due);
                Entry::At {
                    due,
                    id: self.id(h),
                }
            }
            (None, None) => Entry::Idle,
        });
    }

    /// Removes a mailbox's entry, if it has one; it is then unknown.
    pub fn forget(&mut self, entry: &Cell<Entry>) {
        if let Entry::At { id, .. } = entry.get() {
            if let Some(h) = self.live(id) {
                self.unlink(h);
                self.release(h);
            }
        }
        entry.set(Entry::Unknown);
    }

    /// The earliest due time (ms), exactly: far buckets that could hold it
    /// are moved into the near tree first.
    pub fn next_due(&mut self) -> Option<i64> {
        loop {
            if let Some((due, _)) = self.earliest_near() {
                return Some(due);
            }
            if self.far.is_empty() {
                return None;
            }
            self.move_first(usize::MAX, false);
        }
    }

    /// A time (ms) no later than the earliest due time, without moving
    /// anything: when the timer is armed for.
    pub fn next_due_bound(&self) -> Option<i64> {
        let near = self.near.first().map(|&(due, _)| due);
        let far = self.far.first_key_value().map(|(&b, _)| bucket_start(b));
        match (near, far) {
            (Some(n), Some(f)) => Some(n.min(f)),
            (n, f) => n.or(f),
        }
    }

    /// Removes and answers the earliest entry due at or before `now`: its
    /// due time, id and name.
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, u64, KeyName)> {
        loop {
            if let Some((due, h)) = self.earliest_near() {
                if due > now {
                    return None;
                }
                let id = self.id(h);
                self.near.remove(&(due, h));
                return self.release(h).map(|name| (due, id, name));
            }
            let (&b, _) = self.far.first_key_value()?;
            if bucket_start(b) > now {
                return None;
            }
            self.move_first(usize::MAX, true);
        }
    }

    /// Upkeep, on every node (a server cron tick): drops dead handles of
    /// the buckets queued for compaction, then moves far buckets due to
    /// start within [`LEAD_MS`] of `now` into the near tree; at most
    /// `limit` handles in all (the rest waits for the next tick, or for
    /// an exact answer).
    pub fn advance(&mut self, now: i64, limit: usize) {
        let limit = limit.saturating_sub(self.compact(limit / 2));
        let target = bucket_of(now.saturating_add(LEAD_MS));
        let mut left = limit;
        while left > 0 {
            match self.far.first_key_value() {
                Some((&b, _)) if b <= target => match self.move_first(left, true) {
                    0 => break,
                    seen => left = left.saturating_sub(seen),
                },
                _ => break,
            }
        }
        if self.far.first_key_value().is_none_or(|(&b, _)| b > target) {
            self.horizon = self.horizon.max(target.saturating_add(1));
        }
    }

    /// Empties the schedule (before a rebuild at `now`, ms). Slots made
    /// afterwards start at a generation above every earlier one, so that a
    /// mailbox's record of an entry from before is never taken for a new
    /// entry in the same slot; the horizon is set from `now`, so that the
    /// deadlines of the next [`LEAD_MS`] go straight to the near tree (in
    /// the current far bucket, whose start is past, the first pop would
    /// have to move them all at once).
    pub fn clear(&mut self, now: i64) {
        let floor = self
            .pages
            .iter()
            .flat_map(|p| p.iter())
            .map(|s| s.generation.wrapping_add(1))
            .fold(self.floor, u32::max);
        *self = Schedule {
            floor,
            horizon: bucket_of(now.saturating_add(LEAD_MS)).saturating_add(1),
            ..Schedule::default()
        };
    }

    /// Handles held in far buckets, live or not (for tests of the bound
    /// on dead ones).
    #[cfg(test)]
    fn far_handles(&self) -> usize {
        self.far.values().map(|b| b.handles.len() - b.moved).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    fn index(name: &[u8]) -> usize {
        let (_, key) = split(name);
        usize::from_le_bytes(key.try_into().unwrap())
    }

    /// The structure's invariants: every far bucket at or after the
    /// horizon, with its live count right and nonzero; every entry in
    /// exactly one place (the near tree at its due time, or one live
    /// handle in its due time's bucket).
    fn check(s: &Schedule) {
        let mut live_total = 0usize;
        for (&b, bucket) in &s.far {
            assert!(
                b >= s.horizon,
                "far bucket {b} before the horizon {}",
                s.horizon
            );
            assert!(bucket.moved <= bucket.handles.len());
            let mut live = 0;
            for &(h, far) in &bucket.handles[bucket.moved..] {
                let sl = slot(&s.pages, h).unwrap();
                if sl.far == far {
                    assert!(far & 1 == 1 && sl.name.is_some());
                    assert_eq!(bucket_of(sl.due), b, "a live handle in another bucket");
                    live += 1;
                }
            }
            assert_eq!(live, bucket.live as usize, "live count of bucket {b}");
            assert!(live > 0, "empty bucket {b} kept");
            live_total += live;
        }
        for &(due, h) in &s.near {
            let sl = slot(&s.pages, h).unwrap();
            assert!(sl.name.is_some() && sl.far & 1 == 0 && sl.due == due);
        }
        let mut named = 0;
        for (p, page) in s.pages.iter().enumerate() {
            for (i, sl) in page.iter().enumerate() {
                if sl.name.is_none() {
                    continue;
                }
                named += 1;
                let h = (p * PAGE + i) as u32;
                if sl.far & 1 == 0 {
                    assert!(s.near.contains(&(sl.due, h)), "slot {h} lost (near)");
                } else {
                    let b = s.far.get(&bucket_of(sl.due)).expect("the slot's bucket");
                    let n = b.handles[b.moved..]
                        .iter()
                        .filter(|&&x| x == (h, sl.far))
                        .count();
                    assert_eq!(n, 1, "slot {h}'s live handles");
                }
            }
        }
        assert_eq!(named, s.len);
        assert_eq!(s.near.len() + live_total, s.len);
    }

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

    /// Random sets, moves, forgets, pops and advances of time, against a
    /// map of what each mailbox is due: the next due time is exact, pops
    /// come in order, and the bound never passes the exact time.
    #[test]
    fn agrees_with_a_model() {
        const N: usize = 48;
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut s = Schedule::default();
            let cells: Vec<Cell<Entry>> = (0..N).map(|_| Cell::default()).collect();
            let mut model: BTreeMap<usize, i64> = BTreeMap::new();
            let mut now = 1_700_000_000_000 + rng.below(BUCKET_MS as u64) as i64;
            // Half the runs stay within a bucket's time, so that the far
            // buckets stay far and gather dead handles.
            let step_ms = if seed % 2 == 0 {
                1_000
            } else {
                2 * BUCKET_MS as u64
            };
            for _ in 0..2_000 {
                let i = rng.below(N as u64) as usize;
                match rng.below(12) {
                    0..=4 => {
                        let ahead = match rng.below(6) {
                            0 => rng.below(10_000) as i64,
                            1 => rng.below(3 * BUCKET_MS as u64) as i64,
                            2 => rng.below(40 * BUCKET_MS as u64) as i64,
                            // A few far buckets, so that dead handles pile
                            // up and are compacted.
                            3 => (10 + rng.below(3) as i64) * BUCKET_MS + rng.below(1000) as i64,
                            // Within the bucket it is in now.
                            4 => model.get(&i).map_or(0, |d| d - now) + rng.below(500) as i64,
                            _ => -(rng.below(5_000) as i64),
                        };
                        let due = (rng.below(6) != 0).then_some(now + ahead);
                        s.set(&cells[i], due, || key_name(0, &i.to_le_bytes()));
                        match due {
                            Some(d) => model.insert(i, d),
                            None => model.remove(&i),
                        };
                    }
                    5 => {
                        s.forget(&cells[i]);
                        model.remove(&i);
                    }
                    6 => now += rng.below(step_ms) as i64,
                    7 => s.advance(now, rng.below(8) as usize),
                    8 | 9 => {
                        let min = model.values().min().copied();
                        match s.pop_due(now) {
                            Some((due, id, name)) => {
                                let j = index(&name);
                                assert_eq!(model.remove(&j), Some(due));
                                assert_eq!(Some(due), min);
                                assert!(due <= now);
                                assert_eq!(cells[j].get(), Entry::At { due, id });
                                cells[j].set(Entry::Unknown);
                            }
                            None => assert!(min.is_none_or(|m| m > now), "{min:?} due at {now}"),
                        }
                    }
                    _ => {
                        let bound = s.next_due_bound();
                        let exact = s.next_due();
                        assert_eq!(exact, model.values().min().copied());
                        assert_eq!(bound.is_some(), exact.is_some());
                        assert!(bound <= exact);
                    }
                }
                assert_eq!(s.len(), model.len());
                check(&s);
                for (j, c) in cells.iter().enumerate() {
                    assert_eq!(
                        c.get().due().flatten(),
                        model.get(&j).copied(),
                        "mailbox {j}"
                    );
                }
            }
            while let Some((due, _, name)) = s.pop_due(i64::MAX) {
                assert_eq!(model.remove(&index(&name)), Some(due));
            }
            assert!(model.is_empty() && s.is_empty());
        }
    }

    /// An entry popped and its slot taken by another mailbox: the first
    /// mailbox's stale record neither moves nor removes the new entry.
    #[test]
    fn a_popped_entry_is_not_mistaken_for_the_next_in_its_slot() {
        let mut s = Schedule::default();
        let (a, b) = (Cell::default(), Cell::default());
        s.set(&a, Some(10), || key_name(0, b"a"));
        let (_, id, _) = s.pop_due(10).unwrap();
        assert_eq!(a.get(), Entry::At { due: 10, id });
        s.set(&b, Some(10), || key_name(0, b"b"));
        let Entry::At { id: id_b, .. } = b.get() else {
            panic!("b is scheduled")
        };
        assert_eq!(id_b as u32, id as u32, "the slot is reused");
        s.forget(&a);
        s.set(&a, Some(20), || key_name(0, b"a"));
        assert_eq!(s.len(), 2);
        let (due, _, name) = s.pop_due(100).unwrap();
        assert_eq!((due, &name[4..]), (10, &b"b"[..]));
    }

    /// An entry that moves between two far buckets again and again leaves
    /// a handle behind each time; the upkeep drops the dead ones, so the
    /// buckets hold at most about three times their live handles.
    #[test]
    fn dead_handles_stay_bounded() {
        let mut s = Schedule::default();
        let now = 1_700_000_000_000;
        let cells: Vec<Cell<Entry>> = (0..11).map(|_| Cell::default()).collect();
        for (i, c) in cells.iter().enumerate().take(10) {
            let due = now + 10 * BUCKET_MS + (i as i64 % 2) * BUCKET_MS;
            s.set(c, Some(due), || key_name(0, &i.to_le_bytes()));
        }
        for round in 0..10_000 {
            let due = now + 10 * BUCKET_MS + (round % 2) * BUCKET_MS + 7;
            s.set(&cells[10], Some(due), || key_name(0, b"x"));
            if round % 10 == 0 {
                s.advance(now, 64);
                assert!(
                    s.far_handles() <= 2 * (3 * 6 + 16 + 10),
                    "{}",
                    s.far_handles()
                );
            }
        }
        assert_eq!(s.len(), 11);
        assert_eq!(s.next_due(), Some(now + 10 * BUCKET_MS));
    }

    /// After the timer's advance, a deadline seconds away goes to the near
    /// tree, and one days away to a far bucket.
    #[test]
    fn advance_moves_what_comes_soon_into_the_near_tree() {
        let mut s = Schedule::default();
        let now = 1_700_000_000_000;
        let (a, b, c) = (Cell::default(), Cell::default(), Cell::default());
        s.set(&a, Some(now + BUCKET_MS), || key_name(0, b"a"));
        s.set(&b, Some(now + 100 * BUCKET_MS), || key_name(0, b"b"));
        assert_eq!((s.near.len(), s.far_handles()), (0, 2));
        s.advance(now, 100);
        assert_eq!((s.near.len(), s.far_handles()), (1, 1));
        s.set(&c, Some(now + 3_000), || key_name(0, b"c"));
        assert_eq!((s.near.len(), s.far_handles()), (2, 1));
        assert_eq!(s.next_due_bound(), Some(now + 3_000));
        assert_eq!(s.next_due(), Some(now + 3_000));
    }

    /// A mailbox with a device online and one offline: each store moves
    /// its entry from a far bucket to the near tree, each ack back. Dead
    /// handles come faster than the upkeep's share per tick drops them,
    /// and stay bounded all the same.
    #[test]
    fn dead_handles_stay_bounded_under_sustained_load() {
        let mut s = Schedule::default();
        let now = 1_700_000_000_000;
        let n = 20_000;
        let cells: Vec<Cell<Entry>> = (0..n).map(|_| Cell::default()).collect();
        let far = now + 1000 * BUCKET_MS;
        for (i, c) in cells.iter().enumerate() {
            s.set(c, Some(far + i as i64 % 1000), || {
                key_name(0, &i.to_le_bytes())
            });
        }
        s.advance(now, 2048);
        let mut rng = Rng(7);
        for _tick in 0..100 {
            for _ in 0..5_000 {
                let i = rng.below(n as u64) as usize;
                s.set(&cells[i], Some(now + 5_000), || unreachable!());
                s.set(
                    &cells[i],
                    Some(far + rng.below(1000) as i64),
                    || unreachable!(),
                );
            }
            s.advance(now, 2048);
            assert!(s.far_handles() <= 4 * n + 16, "{}", s.far_handles());
        }
        check(&s);
    }

    /// An exact answer about a deadline a month away moves its bucket into
    /// the near tree, and leaves the horizon where it was: later deadlines
    /// of the next days still go to far buckets.
    #[test]
    fn an_exact_answer_leaves_the_horizon() {
        let mut s = Schedule::default();
        let now = 1_700_000_000_000;
        let day = 86_400_000;
        s.advance(now, 2048);
        let a = Cell::default();
        s.set(&a, Some(now + 30 * day), || key_name(0, b"a"));
        assert_eq!(s.next_due(), Some(now + 30 * day));
        let cells: Vec<Cell<Entry>> = (0..100).map(|_| Cell::default()).collect();
        for (i, c) in cells.iter().enumerate() {
            s.set(c, Some(now + 10 * day + i as i64), || {
                key_name(0, &i.to_le_bytes())
            });
        }
        assert_eq!((s.near.len(), s.far_handles()), (1, 100));
        assert_eq!(s.next_due(), Some(now + 10 * day));
        check(&s);
    }

    /// A dead handle whose number comes round again (2^32 moves of its
    /// slot, simulated by setting the counter) is not taken for a live
    /// one: no entry is lost.
    #[test]
    fn a_handle_number_that_comes_round_loses_nothing() {
        let mut s = Schedule::default();
        let now = 1_700_000_000_000;
        let x = Cell::default();
        let others: Vec<Cell<Entry>> = (0..3).map(|_| Cell::default()).collect();
        s.advance(now, 2048);
        let (bx, by) = (now + 10 * BUCKET_MS, now + 20 * BUCKET_MS);
        s.set(&x, Some(bx), || key_name(0, b"x"));
        for (i, c) in others.iter().enumerate() {
            s.set(c, Some(bx + 1 + i as i64), || key_name(0, &i.to_le_bytes()));
        }
        s.set(&x, Some(by), || unreachable!());
        s.set(&x, Some(now + 5), || unreachable!());
        s.pages[0][0].far = 0;
        s.set(&x, Some(by), || unreachable!());
        for _ in 0..5 {
            s.advance(bx - LEAD_MS, 1);
        }
        let mut popped = 0;
        while s.pop_due(i64::MAX).is_some() {
            popped += 1;
        }
        assert_eq!(popped, 4);
    }

    /// After `clear` (a rebuild), a mailbox's record of an entry from
    /// before is not taken for the new entry in its slot.
    #[test]
    fn a_record_from_before_a_clear_matches_nothing() {
        let mut s = Schedule::default();
        let (a, b) = (Cell::default(), Cell::default());
        s.set(&a, Some(10), || key_name(0, b"a"));
        s.clear(0);
        s.set(&b, Some(20), || key_name(0, b"b"));
        s.forget(&a);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_due(), Some(20));
    }
}
