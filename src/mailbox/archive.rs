//! The archive side of a mailbox (SPEC §6): messages waiting in the
//! archive queue, and what an evicted mailbox remembers.
//!
//! A queued message has left the mailbox for its devices (none owes it any
//! more, none pages it) but stays in the log until an archiver confirms it
//! with `IM.ARCHIVE.ACK`: nothing leaves Redis unconfirmed. It remembers
//! which devices still owed it, for the archive's row. Retention and
//! `drop-oldest` queue messages one by one (with `archive yes`); eviction
//! queues them all and forgets the devices, and the mailbox then counts
//! what the archiver took, so that a device coming back learns how many
//! messages wait in the archive and a restore brings them back
//! (`IM.IMPORT`).

use super::log::Msg;
use super::rangeset::RangeSet;
use super::Mailbox;
use crate::codec::{put_bytes, put_i64, put_u64, Reader};
use std::collections::BTreeMap;

/// A mailbox's archive state; absent (`None` in the mailbox) while it has
/// none, which is the usual case.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Archive {
    /// The seqs of the queued messages.
    pub queued: RangeSet,
    /// How many messages are queued.
    pub count: u64,
    /// The sum of their stanzas' sizes (bytes).
    pub bytes: u64,
    /// For a queued message, the devices that still owed it when it was
    /// queued: names, each length-prefixed (none: no entry).
    owed: BTreeMap<u64, Box<[u8]>>,
    /// The mailbox was evicted (idle for `mailbox-idle`) and no device has
    /// come back since.
    pub evicted: bool,
    /// Messages the archive took from this mailbox since its eviction that
    /// have not come back (by `IM.IMPORT`): what `IM.CONNECT` reports as
    /// `archived`.
    pub archived: u64,
    /// Retention queues no message before this time plus `retention`
    /// (Unix ms): a mailbox given its messages back (a device returning
    /// after an eviction, an import) gets a fresh retention window, or
    /// what came back would leave again at once.
    pub retention_floor: i64,
    /// The mailbox's name in the node's archive index while it is there
    /// (memory only; not persisted).
    pub indexed: std::cell::RefCell<Option<crate::schedule::KeyName>>,
}

impl Archive {
    /// Heap bytes held (for `MEMORY USAGE`): the state itself, an estimate
    /// of the queue's ranges (40 bytes a range past the first, as for a
    /// device's offline ranges), and for each queued message that devices
    /// owed, its entry (about 40 bytes) and their names; the name in the
    /// archive index.
    pub fn heap_bytes(&self) -> usize {
        let ranges = self.queued.range_count();
        let owed: usize = self.owed.values().map(|names| 40 + names.len()).sum();
        let indexed = self.indexed.borrow().as_ref().map_or(0, |n| n.len());
        std::mem::size_of::<Archive>() + if ranges > 1 { ranges * 40 } else { 0 } + owed + indexed
    }

    /// Nothing queued, nothing to remember: the state can go.
    fn is_idle(&self) -> bool {
        self.count == 0
            && !self.evicted
            && self.archived == 0
            && self.retention_floor == 0
            && self.indexed.borrow().is_none()
    }

    /// The devices that still owed queued message `seq` when it was
    /// queued.
    pub fn owed_by(&self, seq: u64) -> Vec<&[u8]> {
        let mut out = Vec::new();
        if let Some(b) = self.owed.get(&seq) {
            let mut r = Reader::new(b);
            while let Some(name) = r.bytes() {
                out.push(name);
            }
        }
        out
    }

    /// Appends the state to a mailbox's header (persistence, SPEC §8).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.evicted));
        put_u64(out, self.archived);
        put_i64(out, self.retention_floor);
        put_u64(out, self.queued.range_count() as u64);
        for (s, e) in self.queued.ranges() {
            put_u64(out, s);
            put_u64(out, e - s);
        }
        put_u64(out, self.owed.len() as u64);
        for (seq, names) in &self.owed {
            put_u64(out, *seq);
            put_bytes(out, names);
        }
    }

    /// Reads what [`Archive::encode`] wrote; `None` when it does not
    /// decode. The counts are made again from the log (`recount`).
    pub fn decode(r: &mut Reader<'_>) -> Option<Archive> {
        let evicted = match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let archived = r.u64()?;
        let retention_floor = r.i64()?;
        let n = r.count()?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            let s = r.u64()?;
            ranges.push((s, s.checked_add(r.u64()?)?));
        }
        let queued = RangeSet::from_ranges(ranges)?;
        let n = r.count()?;
        let mut owed = BTreeMap::new();
        for _ in 0..n {
            let seq = r.u64()?;
            let names = r.bytes()?;
            if !queued.contains(seq) || owed.insert(seq, names.into()).is_some() {
                return None;
            }
        }
        Some(Archive {
            queued,
            count: 0,
            bytes: 0,
            owed,
            evicted,
            archived,
            retention_floor,
            indexed: Default::default(),
        })
    }
}

impl Mailbox {
    /// Whether message `seq` waits in the archive queue.
    pub fn is_queued(&self, seq: u64) -> bool {
        self.archive
            .as_ref()
            .is_some_and(|a| a.queued.contains(seq))
    }

    /// How many messages wait in the archive queue.
    pub fn queued_count(&self) -> u64 {
        self.archive.as_ref().map_or(0, |a| a.count)
    }

    /// The sum of the queued messages' stanza sizes (bytes).
    pub fn queued_bytes(&self) -> u64 {
        self.archive.as_ref().map_or(0, |a| a.bytes)
    }

    /// Whether the mailbox was evicted and no device came back since.
    pub fn is_evicted(&self) -> bool {
        self.archive.as_ref().is_some_and(|a| a.evicted)
    }

    /// Messages the archive holds for this mailbox that have not come back
    /// (what `IM.CONNECT` reports as `archived`).
    pub fn archived(&self) -> u64 {
        self.archive.as_ref().map_or(0, |a| a.archived)
    }

    /// Retention queues or deletes no message before this (Unix ms).
    pub fn retention_floor(&self) -> i64 {
        self.archive.as_ref().map_or(0, |a| a.retention_floor)
    }

    /// The live messages that are not queued, from `from` on, in seq order:
    /// what the mailbox holds for its devices.
    pub fn held_from(&self, from: u64) -> impl Iterator<Item = Msg<'_>> + '_ {
        let queued = self.archive.as_ref().map(|a| &a.queued);
        self.log
            .iter_from(from)
            .filter(move |m| !queued.is_some_and(|q| q.contains(m.seq)))
    }

    /// The oldest message that is not queued (what retention looks at).
    pub fn oldest_held(&self) -> Option<Msg<'_>> {
        let Some(a) = self.archive.as_ref().filter(|a| a.count > 0) else {
            return self.log.first();
        };
        // Queued seqs are nearly always the front of the log: skip their
        // ranges rather than every message.
        let mut from = 0;
        loop {
            let m = self.log.iter_from(from).next()?;
            match a.queued.ranges_from(m.seq).next() {
                Some((s, e)) if s <= m.seq => from = e.checked_add(1)?,
                _ => return Some(m),
            }
        }
    }

    /// The time (Unix ms) of the oldest message that is not queued: with
    /// no archive queue the log's own record of its first message, so
    /// that the retention deadline of every store reads no chunk.
    pub fn oldest_held_ts(&self) -> Option<i64> {
        if self.archive.as_ref().is_none_or(|a| a.count == 0) {
            return self.log.head().map(|(_, ts)| ts);
        }
        self.oldest_held().map(|m| m.ts)
    }

    /// The newest message that is not queued.
    pub fn newest_held(&self) -> Option<Msg<'_>> {
        match self.archive.as_ref().filter(|a| a.count > 0) {
            None => self.log.last(),
            // Rare (messages queued at the end: an eviction); linear then.
            Some(_) => self.held_from(0).last(),
        }
    }

    fn archive_mut(&mut self) -> &mut Archive {
        self.archive.get_or_insert_with(Default::default)
    }

    /// Lets the archive state go when it holds nothing (after a change,
    /// once the node's archive index has been told).
    pub fn tidy_archive(&mut self) {
        if self.archive.as_ref().is_some_and(|a| a.is_idle()) {
            self.archive = None;
        }
    }

    /// Puts message `seq` in the archive queue: no device owes it any
    /// more; the ones that did are remembered. False when the log does not
    /// hold it or it is queued already.
    pub(super) fn queue(&mut self, seq: u64) -> bool {
        if self.is_queued(seq) {
            return false;
        }
        let Some(size) = self.log.get(seq).map(|m| m.stanza.len()) else {
            return false;
        };
        let mut names = Vec::new();
        for d in &mut self.devices {
            let owed = d.pending.remove(seq).is_some() || d.offline.remove(seq, size);
            if owed {
                put_bytes(&mut names, d.name());
            }
        }
        if let Some(flags) = self.log.get(seq).map(|m| m.flags) {
            self.log.set_header(seq, flags, 0);
        }
        let a = self.archive_mut();
        a.queued.insert(seq);
        a.count += 1;
        a.bytes += size as u64;
        if !names.is_empty() {
            a.owed.insert(seq, names.into());
        }
        true
    }

    /// Message `seq` leaves the queue and the mailbox for good (the
    /// archiver confirmed it). False when it is not queued.
    pub(super) fn archive_ack(&mut self, seq: u64) -> bool {
        if !self.is_queued(seq) {
            return false;
        }
        let size = self.log.get(seq).map_or(0, |m| m.stanza.len());
        let a = self.archive_mut();
        a.queued.remove(seq);
        a.owed.remove(&seq);
        a.count = a.count.saturating_sub(1);
        a.bytes = a.bytes.saturating_sub(size as u64);
        if a.evicted {
            a.archived += 1;
        }
        self.delete_message(seq);
        true
    }

    /// Queued message `seq` comes back to the mailbox: owed, offline, to
    /// every registered device (or held for the first one). False when it
    /// is not queued.
    pub(super) fn unqueue(&mut self, seq: u64) -> bool {
        if !self.is_queued(seq) {
            return false;
        }
        let Some((size, flags)) = self.log.get(seq).map(|m| (m.stanza.len(), m.flags)) else {
            return false;
        };
        let a = self.archive_mut();
        a.queued.remove(seq);
        a.owed.remove(&seq);
        a.count = a.count.saturating_sub(1);
        a.bytes = a.bytes.saturating_sub(size as u64);
        for d in &mut self.devices {
            d.offline.insert(seq, size);
        }
        let owers = u16::try_from(self.devices.len()).unwrap_or(u16::MAX);
        self.log.set_header(seq, flags, owers);
        true
    }

    /// Every queued seq, in order.
    pub(super) fn queued_seqs(&self) -> Vec<u64> {
        self.archive.as_ref().map_or(Vec::new(), |a| {
            a.queued.ranges().flat_map(|(s, e)| s..=e).collect()
        })
    }

    /// Eviction (SPEC §6): every message goes to the archive queue, every
    /// device is forgotten, and the mailbox counts from now on what the
    /// archive takes. Answers how many messages were queued now.
    pub(super) fn evict(&mut self) -> u64 {
        let seqs: Vec<u64> = self.log.iter_from(0).map(|m| m.seq).collect();
        let queued = seqs.into_iter().filter(|&s| self.queue(s)).count() as u64;
        self.devices.clear();
        self.archive_mut().evicted = true;
        queued
    }

    /// A device came back to an evicted mailbox: what is still queued
    /// comes back, and the mailbox gets a fresh retention window. Answers
    /// how many messages came back.
    pub(super) fn come_back(&mut self, now: i64) -> u64 {
        let back = self
            .queued_seqs()
            .into_iter()
            .filter(|&s| self.unqueue(s))
            .count() as u64;
        let a = self.archive_mut();
        a.evicted = false;
        a.retention_floor = now;
        back
    }

    /// A message came back from the archive (`IM.IMPORT`): one fewer
    /// waits there, and the mailbox gets a fresh retention window.
    pub(super) fn imported(&mut self, now: i64) {
        let a = self.archive_mut();
        a.archived = a.archived.saturating_sub(1);
        a.retention_floor = now;
    }

    /// Counts a message loaded (from an RDB, an AOF rewrite, a copy) in
    /// the queue's counts when it is queued.
    pub(super) fn count_if_queued(&mut self, seq: u64, size: usize) {
        if let Some(a) = self.archive.as_mut().filter(|a| a.queued.contains(seq)) {
            a.count += 1;
            a.bytes += size as u64;
        }
    }

    /// After a load: every queued seq is a message of the log, and no
    /// device owes a queued message. False for a payload that says
    /// otherwise (a corrupt RDB or `RESTORE`).
    pub fn archive_consistent(&self) -> bool {
        let Some(a) = self.archive.as_ref() else {
            return true;
        };
        let mut span: u64 = 0;
        for (s, e) in a.queued.ranges() {
            match (e - s).checked_add(1).and_then(|n| span.checked_add(n)) {
                Some(n) => span = n,
                None => return false,
            }
        }
        span == a.count
            && a.queued.ranges().all(|(s, e)| {
                self.devices.iter().all(|d| {
                    d.pending.iter().all(|(q, _)| q < s || q > e)
                        && d.offline.ranges_from(s).next().is_none_or(|(os, _)| os > e)
                })
            })
    }
}
