//! The message log of one mailbox: every stored message, ordered by `seq`.
//!
//! Messages are packed back to back into chunks of at most `CHUNK_BYTES`
//! (a larger stanza gets a chunk of its own), and the chunks sit in a
//! `BTreeMap` under the lowest seq they may hold. A message therefore costs
//! its stanza bytes plus a header of about ten bytes, with no allocation of
//! its own: the layout that keeps a stored message near its stanza's size.
//!
//! A record is
//! `flags:u8 owers:u16le varint(seq-base) zigzag(ts-base_ts) varint(len)
//!  id stanza`, where the id is either an offset/length into the stanza
//! (when it is the stanza's own `id` attribute, verbatim) or its own bytes.
//! Removal marks a record dead; a chunk is dropped when nothing in it lives
//! and compacted when more than half of it is dead.

use crate::codec::{put_bytes, put_i64, put_u64, Reader};
use std::collections::BTreeMap;

/// The record is removed and waits for compaction.
pub const DEAD: u8 = 1;
/// At least one device has acknowledged the message.
pub const ACKED: u8 = 2;
/// The offline policy forbids keeping it offline: dropped instead.
pub const VOLATILE: u8 = 4;
/// The id is a slice of the stanza (its `id` attribute, verbatim).
pub const ID_IN_STANZA: u8 = 8;
/// The stanza already carries a `<delay xmlns='urn:xmpp:delay'>`.
pub const HAS_DELAY: u8 = 16;
/// Flags that describe the message (kept through persistence).
pub const PERSISTED_FLAGS: u8 = ACKED | VOLATILE | ID_IN_STANZA | HAS_DELAY;

const CHUNK_BYTES: usize = 4096;

/// Where a message's id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpec<'a> {
    InStanza { off: usize, len: usize },
    Own(&'a [u8]),
}

/// A message as read from the log.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    pub seq: u64,
    pub ts: i64,
    pub flags: u8,
    pub owers: u16,
    pub id: &'a [u8],
    pub stanza: &'a [u8],
}

impl Msg<'_> {
    pub fn id_spec(&self) -> IdSpec<'_> {
        if self.flags & ID_IN_STANZA != 0 {
            let off = self.id.as_ptr() as usize - self.stanza.as_ptr() as usize;
            IdSpec::InStanza {
                off,
                len: self.id.len(),
            }
        } else {
            IdSpec::Own(self.id)
        }
    }
}

struct Chunk {
    base_ts: i64,
    data: Vec<u8>,
    live: u32,
    dead_bytes: u32,
}

/// Decodes the record at `pos`; returns it and the position after it.
fn decode(data: &[u8], pos: usize, base: u64, base_ts: i64) -> Option<(Msg<'_>, usize)> {
    let head = data.get(pos..pos.checked_add(3)?)?;
    let flags = head[0];
    let owers = u16::from_le_bytes([head[1], head[2]]);
    let mut r = Reader::new(data.get(pos + 3..)?);
    let seq = base.checked_add(r.u64()?)?;
    let ts = base_ts.checked_add(r.i64()?)?;
    let len = usize::try_from(r.u64()?).ok()?;
    let (own_id, id_off, id_len) = if flags & ID_IN_STANZA != 0 {
        let off = usize::try_from(r.u64()?).ok()?;
        let l = usize::try_from(r.u64()?).ok()?;
        (None, off, l)
    } else {
        (Some(r.bytes()?), 0, 0)
    };
    let stanza = r.take(len)?;
    let id = match own_id {
        Some(id) => id,
        None => stanza.get(id_off..id_off.checked_add(id_len)?)?,
    };
    let next = pos + 3 + r.pos();
    Some((
        Msg {
            seq,
            ts,
            flags,
            owers,
            id,
            stanza,
        },
        next,
    ))
}

#[allow(clippy::too_many_arguments)]
fn encode(
    out: &mut Vec<u8>,
    base: u64,
    base_ts: i64,
    seq: u64,
    ts: i64,
    flags: u8,
    owers: u16,
    id: IdSpec<'_>,
    stanza: &[u8],
) {
    let flags = match id {
        IdSpec::InStanza { .. } => flags | ID_IN_STANZA,
        IdSpec::Own(_) => flags & !ID_IN_STANZA,
    };
    out.push(flags);
    out.extend_from_slice(&owers.to_le_bytes());
    put_u64(out, seq - base);
    put_i64(out, ts.wrapping_sub(base_ts));
    put_u64(out, stanza.len() as u64);
    match id {
        IdSpec::InStanza { off, len } => {
            put_u64(out, off as u64);
            put_u64(out, len as u64);
        }
        IdSpec::Own(b) => put_bytes(out, b),
    }
    out.extend_from_slice(stanza);
}

impl Chunk {
    fn records(&self, base: u64) -> ChunkIter<'_> {
        ChunkIter {
            data: &self.data,
            pos: 0,
            base,
            base_ts: self.base_ts,
        }
    }

    /// Position of the live record `seq`.
    fn find(&self, base: u64, seq: u64) -> Option<usize> {
        let mut it = self.records(base);
        loop {
            let pos = it.pos;
            let m = it.next()?;
            if m.seq == seq && m.flags & DEAD == 0 {
                return Some(pos);
            }
            if m.seq > seq {
                return None;
            }
        }
    }

    fn compact(&mut self, base: u64) {
        let mut data = Vec::with_capacity(self.data.len() - self.dead_bytes as usize);
        let mut it = self.records(base);
        loop {
            let pos = it.pos;
            let Some(m) = it.next() else { break };
            if m.flags & DEAD == 0 {
                data.extend_from_slice(&self.data[pos..it.pos]);
            }
        }
        self.data = data;
        self.dead_bytes = 0;
    }
}

/// Iterates every record of a chunk, dead ones included. Stops at the first
/// record that does not decode (only possible with corrupted input, which
/// loading rejects before it gets here).
struct ChunkIter<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    base_ts: i64,
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        if self.pos >= self.data.len() {
            return None;
        }
        let (m, next) = decode(self.data, self.pos, self.base, self.base_ts)?;
        self.pos = next;
        Some(m)
    }
}

/// The ordered log of a mailbox's messages.
#[derive(Default)]
pub struct Log {
    chunks: BTreeMap<u64, Chunk>,
    len: u64,
    bytes: u64,
}

impl Log {
    /// Number of messages.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the stanzas' sizes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Heap bytes held by the log.
    pub fn mem_usage(&self) -> usize {
        self.chunks
            .values()
            .map(|c| c.data.capacity() + std::mem::size_of::<Chunk>() + 16)
            .sum()
    }

    pub fn get(&self, seq: u64) -> Option<Msg<'_>> {
        let (&base, chunk) = self.chunks.range(..=seq).next_back()?;
        let pos = chunk.find(base, seq)?;
        decode(&chunk.data, pos, base, chunk.base_ts).map(|(m, _)| m)
    }

    /// Rewrites the flags and the owing-device count of message `seq`.
    pub fn set_header(&mut self, seq: u64, flags: u8, owers: u16) -> bool {
        let Some((&base, chunk)) = self.chunks.range_mut(..=seq).next_back() else {
            return false;
        };
        let Some(pos) = chunk.find(base, seq) else {
            return false;
        };
        let keep = chunk.data[pos] & ID_IN_STANZA;
        chunk.data[pos] = (flags & !(ID_IN_STANZA | DEAD)) | keep;
        chunk.data[pos + 1..pos + 3].copy_from_slice(&owers.to_le_bytes());
        true
    }

    pub fn first(&self) -> Option<Msg<'_>> {
        self.iter_from(0).next()
    }

    pub fn last(&self) -> Option<Msg<'_>> {
        // The last chunk always holds a live record: empty chunks are dropped.
        let (&base, chunk) = self.chunks.iter().next_back()?;
        chunk.records(base).filter(|m| m.flags & DEAD == 0).last()
    }

    /// Live messages with `seq >= from`, in order.
    pub fn iter_from(&self, from: u64) -> LogIter<'_> {
        let start = self
            .chunks
            .range(..=from)
            .next_back()
            .map(|(&k, _)| k)
            .unwrap_or(from);
        LogIter {
            chunks: self.chunks.range(start..),
            current: None,
            from,
        }
    }

    /// Live messages with `from <= seq <= to`, in order.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = Msg<'_>> {
        self.iter_from(from).take_while(move |m| m.seq <= to)
    }

    /// Adds a message. `seq` must not be held already.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        seq: u64,
        ts: i64,
        flags: u8,
        owers: u16,
        id: IdSpec<'_>,
        stanza: &[u8],
    ) {
        let flags = flags & PERSISTED_FLAGS;
        self.len += 1;
        self.bytes += stanza.len() as u64;
        let last_base = self.chunks.keys().next_back().copied();
        let fits_last = match self.chunks.iter_mut().next_back() {
            Some((&base, chunk)) if seq >= base => {
                let after_all = chunk.records(base).last().is_none_or(|m| m.seq < seq);
                let room = chunk.data.len() + stanza.len() + 24 <= CHUNK_BYTES;
                if after_all && room {
                    let mut rec = Vec::with_capacity(stanza.len() + 24);
                    encode(
                        &mut rec,
                        base,
                        chunk.base_ts,
                        seq,
                        ts,
                        flags,
                        owers,
                        id,
                        stanza,
                    );
                    let need = chunk.data.len() + rec.len();
                    if chunk.data.capacity() < need {
                        let grown =
                            (chunk.data.capacity() * 3 / 2).clamp(need, CHUNK_BYTES.max(need));
                        chunk.data.reserve_exact(grown - chunk.data.len());
                    }
                    chunk.data.extend_from_slice(&rec);
                    chunk.live += 1;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if fits_last {
            return;
        }
        if last_base.is_none_or(|b| seq > b) && self.last().is_none_or(|m| m.seq < seq) {
            self.new_chunk(seq, ts, flags, owers, id, stanza);
            return;
        }
        // In the middle (an import keeping an old seq): insert in order.
        let Some((&base, chunk)) = self.chunks.range_mut(..=seq).next_back() else {
            self.new_chunk(seq, ts, flags, owers, id, stanza);
            return;
        };
        let mut it = chunk.records(base);
        let mut at = chunk.data.len();
        loop {
            let pos = it.pos;
            match it.next() {
                Some(m) if m.seq > seq => {
                    at = pos;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let mut rec = Vec::new();
        encode(
            &mut rec,
            base,
            chunk.base_ts,
            seq,
            ts,
            flags,
            owers,
            id,
            stanza,
        );
        chunk.data.splice(at..at, rec);
        chunk.live += 1;
        if chunk.data.len() > 2 * CHUNK_BYTES && chunk.live > 1 {
            self.split(base);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_chunk(
        &mut self,
        seq: u64,
        ts: i64,
        flags: u8,
        owers: u16,
        id: IdSpec<'_>,
        stanza: &[u8],
    ) {
        let mut data = Vec::new();
        encode(&mut data, seq, ts, seq, ts, flags, owers, id, stanza);
        data.shrink_to_fit();
        self.chunks.insert(
            seq,
            Chunk {
                base_ts: ts,
                data,
                live: 1,
                dead_bytes: 0,
            },
        );
    }

    /// Splits an oversized chunk in two halves of live records.
    fn split(&mut self, base: u64) {
        let Some(chunk) = self.chunks.remove(&base) else {
            return;
        };
        let live: Vec<Msg<'_>> = chunk
            .records(base)
            .filter(|m| m.flags & DEAD == 0)
            .collect();
        let half = live.len() / 2;
        for part in [&live[..half], &live[half..]] {
            let Some(first) = part.first() else { continue };
            let mut data = Vec::new();
            for m in part {
                encode(
                    &mut data,
                    first.seq,
                    first.ts,
                    m.seq,
                    m.ts,
                    m.flags,
                    m.owers,
                    m.id_spec(),
                    m.stanza,
                );
            }
            data.shrink_to_fit();
            self.chunks.insert(
                first.seq,
                Chunk {
                    base_ts: first.ts,
                    data,
                    live: part.len() as u32,
                    dead_bytes: 0,
                },
            );
        }
    }

    /// Removes message `seq`; answers its stanza size when it was there.
    pub fn remove(&mut self, seq: u64) -> Option<usize> {
        let (&base, chunk) = self.chunks.range_mut(..=seq).next_back()?;
        let pos = chunk.find(base, seq)?;
        let (m, next) = decode(&chunk.data, pos, base, chunk.base_ts)?;
        let size = m.stanza.len();
        chunk.data[pos] |= DEAD;
        chunk.live -= 1;
        chunk.dead_bytes += (next - pos) as u32;
        self.len -= 1;
        self.bytes -= size as u64;
        if chunk.live == 0 {
            self.chunks.remove(&base);
        } else if chunk.dead_bytes as usize * 2 > chunk.data.len() {
            chunk.compact(base);
        }
        Some(size)
    }
}

/// Iterator over live messages from a seq on.
pub struct LogIter<'a> {
    chunks: std::collections::btree_map::Range<'a, u64, Chunk>,
    current: Option<ChunkIter<'a>>,
    from: u64,
}

impl<'a> Iterator for LogIter<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        loop {
            if let Some(it) = &mut self.current {
                for m in it.by_ref() {
                    if m.flags & DEAD == 0 && m.seq >= self.from {
                        return Some(m);
                    }
                }
            }
            let (&base, chunk) = self.chunks.next()?;
            self.current = Some(chunk.records(base));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(log: &mut Log, seq: u64, s: &str) {
        log.insert(
            seq,
            1000 + seq as i64,
            0,
            1,
            IdSpec::Own(format!("id{seq}").as_bytes()),
            s.as_bytes(),
        );
    }

    #[test]
    fn append_get_remove() {
        let mut log = Log::default();
        for seq in 10..500u64 {
            add(&mut log, seq, &"x".repeat((seq % 50) as usize + 100));
        }
        assert_eq!(log.len(), 490);
        let m = log.get(77).unwrap();
        assert_eq!(m.id, b"id77");
        assert_eq!(m.ts, 1077);
        assert_eq!(m.stanza.len(), 77 % 50 + 100);
        assert!(log.chunks.len() > 10);
        for seq in (10..500u64).filter(|s| s % 3 != 0) {
            assert!(log.remove(seq).is_some());
        }
        assert!(log.remove(11).is_none());
        let left: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        let want: Vec<u64> = (10..500u64).filter(|s| s % 3 == 0).collect();
        assert_eq!(left, want);
        assert_eq!(log.len(), want.len() as u64);
        assert_eq!(log.first().unwrap().seq, 12);
        assert_eq!(log.last().unwrap().seq, 498);
        let r: Vec<u64> = log.range(100, 120).map(|m| m.seq).collect();
        assert_eq!(r, vec![102, 105, 108, 111, 114, 117, 120]);
        assert!(log.set_header(102, ACKED, 7));
        let m = log.get(102).unwrap();
        assert_eq!((m.flags & ACKED, m.owers), (ACKED, 7));
        for s in want {
            log.remove(s);
        }
        assert!(log.is_empty());
        assert_eq!(log.bytes(), 0);
        assert!(log.chunks.is_empty());
    }

    #[test]
    fn insert_in_middle_and_before() {
        let mut log = Log::default();
        for seq in (100..2000u64).step_by(2) {
            add(&mut log, seq, &"y".repeat(150));
        }
        for seq in (101..2000u64).step_by(2) {
            add(&mut log, seq, &"z".repeat(150));
        }
        add(&mut log, 5, "early");
        let all: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        let mut want: Vec<u64> = (100..2000u64).collect();
        want.insert(0, 5);
        assert_eq!(all, want);
        assert!(log
            .chunks
            .values()
            .all(|c| c.data.len() <= 2 * CHUNK_BYTES + 200));
    }

    #[test]
    fn id_in_stanza() {
        let mut log = Log::default();
        let s = b"<message id='abc'/>";
        log.insert(1, 5, 0, 0, IdSpec::InStanza { off: 13, len: 3 }, s);
        let m = log.get(1).unwrap();
        assert_eq!(m.id, b"abc");
        assert_eq!(m.id_spec(), IdSpec::InStanza { off: 13, len: 3 });
        assert_ne!(m.flags & ID_IN_STANZA, 0);
    }
}
