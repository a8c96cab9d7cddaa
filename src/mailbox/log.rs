//! The message log of one mailbox: every stored message, ordered by `seq`.
//!
//! Messages are packed back to back into chunks of at most `CHUNK_BYTES`
//! (a larger stanza gets a chunk of its own), and the chunks sit in a deque
//! ordered by the lowest seq they may hold (chunks empty at the front as
//! messages are acked, and fill at the back). A message therefore costs
//! its stanza bytes plus a header of about ten bytes and a two-byte offset,
//! with no allocation of its own: the layout that keeps a stored message
//! near its stanza's size. A chunk grows through the allocator's size
//! classes, so the memory it holds is the memory it uses.
//!
//! A record is
//! `flags:5 bits|owers:11 bits (u16le) varint(seq-base) zigzag(ts-base_ts)
//!  varint(len) id stanza`, where the id is either an offset/length into the stanza
//! (when it is the stanza's own `id` attribute, verbatim) or its own bytes.
//! Removal marks a record dead; a chunk is dropped when nothing in it lives
//! and compacted when more than half of it is dead.

use super::chunks::{self, Chunks};
use crate::codec::{put_bytes, put_i64, put_u64, u64_len, Reader};

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
/// The most devices that may owe one message (11 bits of the header).
pub const MAX_OWERS: u16 = (1 << 11) - 1;

/// Bytes of a record's fixed header (flags and owing-device count).
const HEADER: usize = 2;

fn header(flags: u8, owers: u16) -> [u8; HEADER] {
    ((u16::from(flags) & 0x1f) | (owers.min(MAX_OWERS) << 5)).to_le_bytes()
}

/// Where a message's id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpec<'a> {
    /// The stanza's own `id` attribute, verbatim: bytes `off..off + len` of
    /// the stanza (the id costs no bytes of its own).
    InStanza {
        /// Where it starts in the stanza (bytes).
        off: usize,
        /// Its length (bytes).
        len: usize,
    },
    /// Its own bytes: the `ID` option, a generated id, or the resolved
    /// value of a stanza `id` written with entity references.
    Own(&'a [u8]),
}

/// A message as read from the log.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    /// Its seq (SPEC §1).
    pub seq: u64,
    /// Its creation time (Unix ms).
    pub ts: i64,
    /// Its record's flags ([`ACKED`], [`VOLATILE`], [`ID_IN_STANZA`],
    /// [`HAS_DELAY`]).
    pub flags: u8,
    /// How many registered devices still owe it (pending or offline).
    pub owers: u16,
    /// Its id (SPEC §1: unique within the mailbox).
    pub id: &'a [u8],
    /// The stanza's bytes, exactly as stored.
    pub stanza: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The message as something to insert again (a copy, a split).
    pub fn to_new(&self) -> NewMsg<'a> {
        NewMsg {
            message: Message {
                seq: self.seq,
                ts: self.ts,
                flags: self.flags,
                id: self.id_spec(),
                stanza: self.stanza,
            },
            owers: self.owers,
        }
    }

    /// Where its id is: a slice of the stanza when the record says so
    /// ([`ID_IN_STANZA`]), else its own bytes.
    pub fn id_spec(&self) -> IdSpec<'a> {
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

/// The most bytes a chunk holds (unless one record alone is larger).
const CHUNK_BYTES: usize = 8 * 1024;

/// A chunk this small (bytes) that an append reallocates is fetched whole
/// first, since the reallocation copies it: about eight chat messages.
const SMALL_CHUNK_BYTES: usize = 2 * 1024;

/// The most bytes a record takes beside its stanza and an id of its own:
/// header, seq, time and length.
const MAX_RECORD_HEADER: usize = HEADER + 3 * 10;

/// The allocation size jemalloc gives for `n` bytes: four size classes per
/// power of two. Growing a buffer straight to its class wastes nothing.
pub fn size_class(n: usize) -> usize {
    if n <= 16 {
        return 16;
    }
    let k = usize::BITS - (n - 1).leading_zeros(); // 2^(k-1) < n <= 2^k
    let step = (1usize << k.saturating_sub(3)).max(16);
    n.div_ceil(step) * step
}

/// A coarser size class, two per power of two (also jemalloc classes): a
/// chunk being appended to grows in fewer, larger steps.
pub fn growth_class(n: usize) -> usize {
    if n <= 32 {
        return size_class(n);
    }
    let half = 1usize << (usize::BITS - (n - 1).leading_zeros() - 1); // half < n <= 2*half
    if n <= half + half / 2 {
        half + half / 2
    } else {
        half * 2
    }
}

/// Up to this many live records, a chunk keeps no offsets: a record is
/// found by reading the chunk from its start (a mailbox with little in it
/// allocates nothing for them; compaction keeps the dead ones beside them
/// to about as many).
const WALK: usize = 8;

/// Where each record of a chunk starts, once it holds more than [`WALK`].
type Offsets = Option<Box<Vec<u16>>>;

/// A stored message as a store gives it (SPEC §1): its seq, its time (Unix
/// ms), its flags (`VOLATILE`, `HAS_DELAY`, ...), where its id is, and the
/// stanza's bytes. `Effect::Store` carries one; the log keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its seq: the stable handle of the message (SPEC §1).
    pub seq: u64,
    /// Its creation time (Unix ms), kept through every move.
    pub ts: i64,
    /// Its flags; the log keeps only [`PERSISTED_FLAGS`] and sets
    /// [`ID_IN_STANZA`] from `id`.
    pub flags: u8,
    /// Where its id is.
    pub id: IdSpec<'a>,
    /// The stanza's bytes, exactly as given.
    pub stanza: &'a [u8],
}

/// A message to add to the log, with how many devices owe it.
#[derive(Clone, Copy, Debug)]
pub struct NewMsg<'a> {
    /// The message.
    pub message: Message<'a>,
    /// How many devices owe it (pending or offline); the record holds at
    /// most [`MAX_OWERS`].
    pub owers: u16,
}

impl<'a> std::ops::Deref for NewMsg<'a> {
    type Target = Message<'a>;
    fn deref(&self) -> &Message<'a> {
        &self.message
    }
}

/// Records packed back to back. 40 bytes beside its records, 48 with its
/// base seq: a log's only chunk keeps them inline ([`Chunks`]), so a
/// mailbox's first message costs its record alone; from two chunks on
/// each takes a 48-byte slot of a deque.
struct Chunk {
    /// The records (`buf[..len]`), then room to grow.
    buf: Box<[u8]>,
    base_ts: i64,
    /// Where each record (live or dead) starts, in seq order; `None` while
    /// the chunk holds at most [`WALK`] live records.
    offsets: Offsets,
    /// Bytes of `buf` in use: below 2^32, since a stanza is at most
    /// 512 MiB (`max-stanza-bytes`, and loading refuses larger).
    len: u32,
    /// Records not dead. A chunk of more than one record holds at most
    /// `CHUNK_BYTES`, so this and `dead_bytes` fit 16 bits; a larger
    /// record is alone in its chunk.
    live: u16,
    /// Bytes of dead records (saturating: only a chunk with a live record
    /// reads it, and then it is at most `CHUNK_BYTES`).
    dead_bytes: u16,
}

/// Decodes the record at `pos`; returns it and the position after it.
fn decode(data: &[u8], pos: usize, base: u64, base_ts: i64) -> Option<(Msg<'_>, usize)> {
    let head = data.get(pos..pos.checked_add(HEADER)?)?;
    let h = u16::from_le_bytes([head[0], head[1]]);
    let (flags, owers) = ((h & 0x1f) as u8, h >> 5);
    let mut r = Reader::new(data.get(pos + HEADER..)?);
    let seq = base.checked_add(r.u64()?)?;
    // Written as `ts - base_ts` wrapping (any two times of a chunk: an
    // import or a RESTORE may bring any i64), so read back wrapping.
    let ts = base_ts.wrapping_add(r.i64()?);
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
    let next = pos + HEADER + r.pos();
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

/// The seq of the record at `pos`, without decoding the rest.
fn seq_at(data: &[u8], pos: usize, base: u64) -> Option<u64> {
    Reader::new(data.get(pos + HEADER..)?)
        .u64()
        .and_then(|d| base.checked_add(d))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// How many bytes `encode` writes for `m`.
fn encoded_len(base: u64, base_ts: i64, m: &NewMsg<'_>) -> usize {
    let id = match m.id {
        IdSpec::InStanza { off, len } => u64_len(off as u64) + u64_len(len as u64),
        IdSpec::Own(b) => u64_len(b.len() as u64) + b.len(),
    };
    HEADER
        + u64_len(m.seq - base)
        + u64_len(zigzag(m.ts.wrapping_sub(base_ts)))
        + u64_len(m.stanza.len() as u64)
        + id
        + m.stanza.len()
}

fn encode(out: &mut Vec<u8>, base: u64, base_ts: i64, m: &NewMsg<'_>) {
    let flags = match m.id {
        IdSpec::InStanza { .. } => m.flags | ID_IN_STANZA,
        IdSpec::Own(_) => m.flags & !ID_IN_STANZA,
    };
    out.extend_from_slice(&header(flags, m.owers));
    put_u64(out, m.seq - base);
    put_i64(out, m.ts.wrapping_sub(base_ts));
    put_u64(out, m.stanza.len() as u64);
    match m.id {
        IdSpec::InStanza { off, len } => {
            put_u64(out, off as u64);
            put_u64(out, len as u64);
        }
        IdSpec::Own(b) => put_bytes(out, b),
    }
    out.extend_from_slice(m.stanza);
}

impl Chunk {
    /// The records.
    fn data(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Heap bytes held: the buffer and the offsets.
    fn heap_bytes(&self) -> usize {
        self.buf.len()
            + self
                .offsets
                .as_ref()
                .map_or(0, |o| std::mem::size_of::<Vec<u16>>() + o.capacity() * 2)
    }

    fn new(base: u64, m: &NewMsg<'_>) -> Chunk {
        let mut c = Chunk {
            buf: Box::default(),
            base_ts: m.ts,
            offsets: None,
            len: 0,
            live: 0,
            dead_bytes: 0,
        };
        c.push(base, m, size_class(encoded_len(base, m.ts, m)));
        c
    }

    /// Writes `m` after the records, growing the buffer to `room` bytes
    /// first when it has less room.
    fn push(&mut self, base: u64, m: &NewMsg<'_>, room: usize) {
        let at = self.len as usize;
        let mut v = std::mem::take(&mut self.buf).into_vec();
        let grown = v.len() < room;
        v.truncate(at);
        if grown {
            v.reserve_exact(room - at);
        }
        encode(&mut v, base, self.base_ts, m);
        let end = v.len();
        if grown {
            v.resize(v.capacity(), 0);
        } else {
            // SAFETY: the bytes up to the capacity were the boxed slice's
            // (initialized) bytes before `truncate`, which writes nothing,
            // and `encode` wrote within the capacity (it had room).
            unsafe { v.set_len(v.capacity()) };
        }
        self.buf = v.into_boxed_slice();
        self.len = end as u32;
        self.live += 1;
        if let Some(o) = &mut self.offsets {
            if o.len() == o.capacity() {
                // Through size classes: one reallocation every few records.
                let want = size_class((o.len() + 1) * 2) / 2;
                o.reserve_exact(want - o.len());
            }
            o.push(at as u16);
        } else if usize::from(self.live) > WALK {
            // Dead records count too: every record gets its offset.
            self.offsets = Some(Box::new(self.positions().map(|p| p as u16).collect()));
        }
    }

    fn records(&self, base: u64) -> ChunkIter<'_> {
        ChunkIter {
            data: self.data(),
            pos: 0,
            base,
            base_ts: self.base_ts,
        }
    }

    /// Where each record starts, in order.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let data = self.data();
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= data.len() {
                return None;
            }
            let at = pos;
            pos = decode(data, at, 0, 0)?.1;
            Some(at)
        })
    }

    /// Where the first record whose seq is `>= seq` starts; the end of
    /// the records when there is none.
    fn lower_bound(&self, base: u64, seq: u64) -> usize {
        let data = self.data();
        if seq <= base {
            return 0;
        }
        let below = |p: usize| seq_at(data, p, base).is_some_and(|s| s < seq);
        match &self.offsets {
            Some(o) => o
                .get(o.partition_point(|&p| below(p as usize)))
                .map_or(data.len(), |&p| p as usize),
            None => self.positions().find(|&p| !below(p)).unwrap_or(data.len()),
        }
    }

    /// Where the live record `seq` starts. A chunk filled by appends holds
    /// consecutive seqs, so with offsets record `seq - base` is tried first.
    fn find(&self, base: u64, seq: u64) -> Option<usize> {
        let data = self.data();
        let guess = usize::try_from(seq.wrapping_sub(base)).unwrap_or(usize::MAX);
        let pos = match self.offsets.as_ref().and_then(|o| o.get(guess)) {
            Some(&p) if seq_at(data, p as usize, base) == Some(seq) => p as usize,
            _ => self.lower_bound(base, seq),
        };
        let (m, _) = decode(data, pos, base, self.base_ts)?;
        (m.seq == seq && m.flags & DEAD == 0).then_some(pos)
    }

    /// Appends a record after every other when it fits in the chunk.
    fn append(&mut self, base: u64, m: &NewMsg<'_>) -> bool {
        let len = encoded_len(base, self.base_ts, m);
        let at = self.len as usize;
        if at + len > CHUNK_BYTES {
            return false;
        }
        // Growing, room for one more record of this size too where the
        // growth class leaves less: a small chunk (a few messages) is
        // reallocated, and copied, every other store instead of every one.
        let room = if self.buf.len() < at + len {
            growth_class(at + len).max(size_class(at + 2 * len))
        } else {
            0
        };
        self.push(base, m, room);
        true
    }

    /// Drops dead records; the base stays, so live records keep their bytes.
    fn compact(&mut self, base: u64) {
        let kept = self.len as usize - usize::from(self.dead_bytes);
        let mut data = Vec::with_capacity(size_class(kept));
        let mut offsets = Vec::with_capacity(usize::from(self.live));
        let mut it = self.records(base);
        loop {
            let pos = it.pos;
            let Some(m) = it.next() else { break };
            if m.flags & DEAD == 0 {
                offsets.push(data.len() as u16);
                data.extend_from_slice(&self.data()[pos..it.pos]);
            }
        }
        self.len = data.len() as u32;
        data.resize(data.capacity(), 0);
        self.buf = data.into_boxed_slice();
        self.offsets = (offsets.len() > WALK).then(|| Box::new(offsets));
        self.dead_bytes = 0;
    }

    /// Marks the record at `pos` (ending at `next`) dead.
    fn kill(&mut self, pos: usize, next: usize) {
        self.buf[pos] |= DEAD;
        self.live -= 1;
        self.dead_bytes = self
            .dead_bytes
            .saturating_add(u16::try_from(next - pos).unwrap_or(u16::MAX));
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
    /// `(base seq, chunk)`, ordered by base. The first and the last chunk
    /// hold a live record; a chunk emptied in the middle stays, without
    /// memory, until such chunks are half of all (removing it at once
    /// would shift half the deque).
    chunks: Chunks<(u64, Chunk)>,
    /// Empty chunks in the middle.
    empty_chunks: usize,
    len: u64,
    bytes: u64,
    /// One more than the highest seq ever inserted (0 before the first):
    /// a seq from here on appends at the end. Seqs are below 2^63 (RESP
    /// integers), so this does not overflow.
    end: u64,
    /// The highest time ever inserted.
    max_ts: i64,
    /// The first live message's seq and time (the timer's retention
    /// deadline), kept here so that reading it touches no chunk; read
    /// only while the log holds a message.
    head_seq: u64,
    head_ts: i64,
}

impl Log {
    /// Number of messages.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Holds no message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the stanzas' sizes (bytes).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Heap bytes held by the log.
    pub fn mem_usage(&self) -> usize {
        self.chunks.heap_bytes()
            + self
                .chunks
                .iter()
                .map(|(_, c)| c.heap_bytes())
                .sum::<usize>()
    }

    /// Asks the CPU to fetch the last chunk, about to take a record of
    /// about `incoming` bytes (the stanza's): when it is the only one
    /// (inline: its buffer's address is in the log itself), its end, or
    /// all of it when it is small and must grow (a grown buffer is a copy);
    /// else its place in the chunk list (where its buffer's address is). A
    /// store reads no earlier record otherwise: a small log's ids are
    /// found by their tags first (`super::ids`).
    pub fn prefetch_last_chunk(&self, incoming: usize) {
        match self.chunks.inline() {
            Some((_, c)) => Self::prefetch_end(c, incoming),
            None => crate::prefetch::prefetch(self.chunks.back()),
        }
    }

    /// Asks the CPU to fetch where the next appended record goes in a log
    /// of several chunks, after [`Log::prefetch_last_chunk`] fetched the
    /// last chunk's place. A log's only chunk is inline, and that call
    /// asked for its end already.
    pub fn prefetch_tail(&self, incoming: usize) {
        if let Chunks::Deque(d) = &self.chunks {
            if let Some((_, c)) = d.back() {
                Self::prefetch_end(c, incoming);
            }
        }
    }

    /// The cache line of chunk `c`'s last byte, where an append starts,
    /// and every line of a chunk of at most [`SMALL_CHUNK_BYTES`] that an
    /// append of `incoming` bytes (plus a record's header) reallocates.
    fn prefetch_end(c: &Chunk, incoming: usize) {
        let data = c.data();
        let grows = c.buf.len() < data.len() + incoming + MAX_RECORD_HEADER;
        if grows && data.len() <= SMALL_CHUNK_BYTES {
            for at in (0..data.len()).step_by(64) {
                crate::prefetch::prefetch(data.get(at));
            }
        }
        crate::prefetch::prefetch(data.last());
    }

    /// The index of the chunk that would hold `seq`: the last one whose
    /// base is at most `seq`.
    fn chunk_index(&self, seq: u64) -> Option<usize> {
        self.chunks
            .partition_point(|(b, _)| *b <= seq)
            .checked_sub(1)
    }

    /// Puts a chunk in its place in base order; the deque grows one place at
    /// a time while small (most mailboxes hold one or two chunks).
    fn put_chunk(&mut self, base: u64, chunk: Chunk) {
        if self.chunks.len() == self.chunks.capacity() {
            self.chunks
                .reserve_exact(self.chunks.len().clamp(1, 1 << 20));
        }
        match self.chunks.back() {
            Some((last, _)) if *last > base => {
                let at = self.chunks.partition_point(|(b, _)| *b < base);
                self.chunks.insert(at, (base, chunk));
            }
            _ => self.chunks.push_back((base, chunk)),
        }
    }

    fn shrink_chunks(&mut self) {
        if self.chunks.capacity() > 8 && self.chunks.len() * 4 < self.chunks.capacity() {
            self.chunks.shrink_to(self.chunks.len() * 2);
        }
    }

    /// Chunk `i` has no live record left: at an end it goes (with the
    /// empty chunks it uncovers), in the middle it gives its memory back
    /// and stays until the empty chunks are half of all; then they all go
    /// at once.
    fn chunk_emptied(&mut self, i: usize) {
        if i == 0 || i + 1 == self.chunks.len() {
            self.chunks.remove(i);
            while self.chunks.front().is_some_and(|(_, c)| c.live == 0) {
                self.chunks.pop_front();
                self.empty_chunks -= 1;
            }
            while self.chunks.back().is_some_and(|(_, c)| c.live == 0) {
                self.chunks.pop_back();
                self.empty_chunks -= 1;
            }
        } else {
            let c = &mut self.chunks[i].1;
            c.buf = Box::default();
            c.len = 0;
            c.offsets = None;
            c.dead_bytes = 0;
            self.empty_chunks += 1;
            if self.empty_chunks * 2 > self.chunks.len() {
                self.chunks.retain(|(_, c)| c.live > 0);
                self.empty_chunks = 0;
            }
        }
        self.shrink_chunks();
    }

    /// Message `seq`; `None` when the log does not hold it (never stored,
    /// or removed).
    pub fn get(&self, seq: u64) -> Option<Msg<'_>> {
        if seq >= self.end {
            return None;
        }
        let (base, chunk) = self.chunks.get(self.chunk_index(seq)?)?;
        let pos = chunk.find(*base, seq)?;
        decode(chunk.data(), pos, *base, chunk.base_ts).map(|(m, _)| m)
    }

    /// Whether the log holds message `seq`.
    pub fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Rewrites the flags and the owing-device count of message `seq`;
    /// false when the log does not hold it.
    pub fn set_header(&mut self, seq: u64, flags: u8, owers: u16) -> bool {
        let Some((base, chunk)) = self.chunk_index(seq).and_then(|i| self.chunks.get_mut(i)) else {
            return false;
        };
        let Some(pos) = chunk.find(*base, seq) else {
            return false;
        };
        let keep = chunk.buf[pos] & ID_IN_STANZA;
        let h = header((flags & !(ID_IN_STANZA | DEAD)) | keep, owers);
        chunk.buf[pos..pos + HEADER].copy_from_slice(&h);
        true
    }

    /// The first live message's seq and time (Unix ms); `None` when the
    /// log is empty.
    pub fn head(&self) -> Option<(u64, i64)> {
        (!self.is_empty()).then_some((self.head_seq, self.head_ts))
    }

    /// The highest time of any message stored (live or not); 0 when none.
    pub fn max_ts(&self) -> i64 {
        self.max_ts
    }

    /// The message with the lowest seq; `None` when the log is empty.
    pub fn first(&self) -> Option<Msg<'_>> {
        // The first chunk always holds a live record: empty chunks are dropped.
        let (base, chunk) = self.chunks.front()?;
        chunk.records(*base).find(|m| m.flags & DEAD == 0)
    }

    /// The message with the highest seq; `None` when the log is empty.
    pub fn last(&self) -> Option<Msg<'_>> {
        // The last chunk always holds a live record: empty chunks are dropped.
        let (base, chunk) = self.chunks.back()?;
        let live = |&p: &u16| {
            decode(chunk.data(), usize::from(p), *base, chunk.base_ts)
                .map(|(m, _)| m)
                .filter(|m| m.flags & DEAD == 0)
        };
        match &chunk.offsets {
            Some(o) => o.iter().rev().find_map(live),
            None => chunk.records(*base).filter(|m| m.flags & DEAD == 0).last(),
        }
    }

    /// Live messages with `seq >= from`, in order.
    pub fn iter_from(&self, from: u64) -> LogIter<'_> {
        let mut chunks = self.chunks.range_from(self.chunk_index(from).unwrap_or(0));
        // Start inside the first chunk at the first record >= from.
        let current = chunks.next().map(|(base, c)| {
            let mut it = c.records(*base);
            it.pos = c.lower_bound(*base, from);
            it
        });
        LogIter { chunks, current }
    }

    /// Live messages with `from <= seq <= to`, in order.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = Msg<'_>> {
        self.iter_from(from).take_while(move |m| m.seq <= to)
    }

    /// Adds a message. `m.seq` must not be held already.
    pub fn insert(&mut self, m: &NewMsg<'_>) {
        let m = NewMsg {
            message: Message {
                flags: m.flags & PERSISTED_FLAGS,
                ..m.message
            },
            owers: m.owers,
        };
        if self.is_empty() || m.seq < self.head_seq {
            (self.head_seq, self.head_ts) = (m.seq, m.ts);
        }
        self.len += 1;
        self.bytes += m.stanza.len() as u64;
        let appends = m.seq >= self.end;
        self.end = self.end.max(m.seq.saturating_add(1));
        self.max_ts = self.max_ts.max(m.ts);
        if appends {
            if let Some((base, chunk)) = self.chunks.back_mut() {
                if chunk.append(*base, &m) {
                    return;
                }
            }
            self.put_chunk(m.seq, Chunk::new(m.seq, &m));
            return;
        }
        // In the middle (an import keeping an old seq): the chunk that
        // holds the seq's place is built again with it, by the rule of
        // appends (a chunk holds at most CHUNK_BYTES unless one record
        // alone is larger), so that a large record gets a chunk of its own
        // and no chunk outgrows its 16-bit offsets.
        let Some(i) = self.chunk_index(m.seq) else {
            self.put_chunk(m.seq, Chunk::new(m.seq, &m));
            return;
        };
        self.rebuild_with(i, &m);
    }

    /// Replaces chunk `i` by chunks holding its live records and `new`, in
    /// seq order.
    fn rebuild_with(&mut self, i: usize, new: &NewMsg<'_>) {
        let Some((base, old)) = self.chunks.remove(i) else {
            return;
        };
        if old.live == 0 {
            self.empty_chunks -= 1;
        }
        let mut records: Vec<NewMsg<'_>> = old
            .records(base)
            .filter(|m| m.flags & DEAD == 0)
            .map(|m| m.to_new())
            .collect();
        let at = records.partition_point(|r| r.seq < new.seq);
        records.insert(at, *new);
        let mut current: Option<(u64, Chunk)> = None;
        for r in &records {
            if let Some((b, c)) = &mut current {
                if c.append(*b, r) {
                    continue;
                }
            }
            if let Some((b, c)) = current.take() {
                self.put_chunk(b, c);
            }
            current = Some((r.seq, Chunk::new(r.seq, r)));
        }
        if let Some((b, c)) = current {
            self.put_chunk(b, c);
        }
        self.shrink_chunks();
    }

    /// Removes message `seq`; answers its stanza size when it was there.
    pub fn remove(&mut self, seq: u64) -> Option<usize> {
        let i = self.chunk_index(seq)?;
        let (base, chunk) = self.chunks.get_mut(i)?;
        let base = *base;
        let pos = chunk.find(base, seq)?;
        let (m, next) = decode(chunk.data(), pos, base, chunk.base_ts)?;
        let size = m.stanza.len();
        chunk.kill(pos, next);
        self.len -= 1;
        self.bytes -= size as u64;
        if chunk.live == 0 {
            self.chunk_emptied(i);
        } else if usize::from(chunk.dead_bytes) * 2 > chunk.len as usize {
            chunk.compact(base);
        }
        if self.head_seq == seq {
            if let Some(m) = self.first() {
                (self.head_seq, self.head_ts) = (m.seq, m.ts);
            }
        }
        Some(size)
    }
}

/// Iterator over live messages from a seq on.
pub struct LogIter<'a> {
    chunks: chunks::Iter<'a, (u64, Chunk)>,
    current: Option<ChunkIter<'a>>,
}

impl<'a> Iterator for LogIter<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        loop {
            if let Some(it) = &mut self.current {
                for m in it.by_ref() {
                    if m.flags & DEAD == 0 {
                        return Some(m);
                    }
                }
            }
            let (base, chunk) = self.chunks.next()?;
            self.current = Some(chunk.records(*base));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(log: &mut Log, seq: u64, s: &str) {
        log.insert(&NewMsg {
            message: Message {
                seq,
                ts: 1000 + seq as i64,
                flags: 0,
                id: IdSpec::Own(format!("id{seq}").as_bytes()),
                stanza: s.as_bytes(),
            },
            owers: 1,
        });
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
        assert!(log.chunks.len() > 3);
        for seq in (10..500u64).filter(|s| s % 3 != 0) {
            assert!(log.remove(seq).is_some());
        }
        assert!(log.remove(11).is_none());
        let left: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        let want: Vec<u64> = (10..500u64).filter(|s| s % 3 == 0).collect();
        assert_eq!(left, want);
        assert_eq!(log.len(), want.len() as u64);
        assert_eq!(log.first().unwrap().seq, 12);
        assert_eq!(log.head(), Some((12, 1012)));
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
        assert!(log.chunks.len() == 0);
    }

    /// Chunks emptied in the middle stay (without memory) until they are
    /// half of all; everything reads the same meanwhile.
    #[test]
    fn chunks_emptied_in_the_middle() {
        let mut log = Log::default();
        for seq in 0..3000u64 {
            add(&mut log, seq, &"m".repeat(200));
        }
        let chunks = log.chunks.len();
        assert!(chunks > 40);
        let bases: Vec<u64> = log.chunks.iter().map(|(b, _)| *b).collect();
        // Empty the second chunk: it stays.
        for seq in bases[1]..bases[2] {
            log.remove(seq);
        }
        assert_eq!((log.chunks.len(), log.empty_chunks), (chunks, 1));
        assert!(log.get(bases[1]).is_none() && log.get(bases[2]).is_some());
        assert_eq!(log.range(bases[1] - 1, bases[2]).count(), 2);
        // An old seq put back lands in the empty chunk.
        add(&mut log, bases[1] + 3, "back");
        assert_eq!(log.empty_chunks, 0);
        assert_eq!(log.get(bases[1] + 3).map(|m| m.stanza), Some(&b"back"[..]));
        log.remove(bases[1] + 3);
        // Emptying the first chunk takes the empty second one with it.
        for seq in 0..bases[1] {
            log.remove(seq);
        }
        assert_eq!((log.chunks.len(), log.empty_chunks), (chunks - 2, 0));
        assert_eq!(log.first().map(|m| m.seq), Some(bases[2]));
        // Every other chunk emptied: past half, the empty ones all go.
        let rest: Vec<u64> = log.chunks.iter().map(|(b, _)| *b).collect();
        for w in rest.windows(2).skip(1).step_by(2) {
            for seq in w[0]..w[1] {
                log.remove(seq);
            }
        }
        assert!(log.empty_chunks * 2 <= log.chunks.len());
        assert!(log.chunks.front().is_some_and(|(_, c)| c.live > 0));
        assert!(log.chunks.back().is_some_and(|(_, c)| c.live > 0));
        let live: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        assert_eq!(live.len() as u64, log.len());
        assert!(live.iter().all(|&s| log.get(s).is_some()));
        for s in live {
            log.remove(s);
        }
        assert!(log.is_empty() && log.chunks.len() == 0 && log.empty_chunks == 0);
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
            .iter()
            .all(|(_, c)| c.len as usize <= 2 * CHUNK_BYTES + 200));
        assert!(log
            .chunks
            .iter()
            .zip(log.chunks.iter().skip(1))
            .all(|(a, b)| a.0 < b.0));
    }

    /// Random appends, inserts in the middle, removals and header changes
    /// agree with an ordered map, whatever mix of small chunks (read from
    /// the start), indexed chunks, compacted and emptied ones they make.
    #[test]
    fn matches_a_model() {
        use std::collections::BTreeMap;
        let mut log = Log::default();
        let mut model: BTreeMap<u64, (String, u16)> = BTreeMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = 1u64;
        for step in 0..30_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=4 => {
                    let body = "s".repeat((x % 300) as usize + 1);
                    let seq = if x.is_multiple_of(17) && next > 50 {
                        (x >> 8) % next
                    } else {
                        next += 1;
                        next - 1
                    };
                    if seq > 0 && !model.contains_key(&seq) {
                        add(&mut log, seq, &body);
                        model.insert(seq, (body, 1));
                    }
                }
                5..=8 => {
                    let pick = model
                        .keys()
                        .nth((x >> 8) as usize % model.len().max(1))
                        .copied();
                    if let Some(seq) = pick {
                        let (body, _) = model.remove(&seq).unwrap_or_default();
                        assert_eq!(log.remove(seq), Some(body.len()));
                    }
                }
                _ => {
                    if let Some((&seq, v)) = model.iter_mut().next_back() {
                        v.1 = (step % 2000) as u16;
                        assert!(log.set_header(seq, 0, v.1));
                    }
                }
            }
            assert_eq!(log.len(), model.len() as u64);
            assert_eq!(
                log.head(),
                model.keys().next().map(|&s| (s, 1000 + s as i64))
            );
            assert_eq!(log.chunks.inline().is_some(), log.chunks.len() == 1);
            if step % 97 == 0 {
                let got: Vec<(u64, Vec<u8>, u16)> = log
                    .iter_from(0)
                    .map(|m| (m.seq, m.stanza.to_vec(), m.owers))
                    .collect();
                let want: Vec<(u64, Vec<u8>, u16)> = model
                    .iter()
                    .map(|(&s, (b, o))| (s, b.as_bytes().to_vec(), *o))
                    .collect();
                assert_eq!(got, want);
                assert_eq!(log.first().map(|m| m.seq), model.keys().next().copied());
                assert_eq!(log.last().map(|m| m.seq), model.keys().next_back().copied());
                let from = (x >> 4) % next.max(1);
                assert_eq!(
                    log.iter_from(from).next().map(|m| m.seq),
                    model.range(from..).next().map(|(&s, _)| s)
                );
                for s in from..from + 20 {
                    assert_eq!(log.get(s).map(|m| m.seq), model.get(&s).map(|_| s));
                }
            }
        }
    }

    /// Any two times share a chunk: a time delta is written and read
    /// wrapping, so a RESTOREd mailbox with times far apart (any i64) reads
    /// back every record rather than stopping at the one whose delta
    /// overflows.
    #[test]
    fn times_far_apart_read_back() {
        let times = [i64::MIN, 1, i64::MAX, -5, 0, i64::MIN + 1];
        let mut log = Log::default();
        for (i, &ts) in times.iter().enumerate() {
            let seq = i as u64 + 1;
            log.insert(&NewMsg {
                message: Message {
                    seq,
                    ts,
                    flags: 0,
                    id: IdSpec::Own(format!("id{seq}").as_bytes()),
                    stanza: b"<message/>",
                },
                owers: 1,
            });
        }
        assert_eq!(log.chunks.len(), 1);
        let got: Vec<i64> = log.iter_from(0).map(|m| m.ts).collect();
        assert_eq!(got, times);
        assert_eq!(log.get(3).map(|m| m.ts), Some(i64::MAX));
    }

    /// A mailbox's first message costs its record and nothing more: its
    /// chunk is inline in the log, in no more room than the chunk itself.
    /// A second chunk makes a deque of two 48-byte places, and a deque
    /// left with one chunk gives its memory back (docs/DESIGN.md, "Memory
    /// layout of a mailbox").
    #[test]
    fn a_chunk_is_forty_bytes_beside_its_records() {
        assert_eq!(std::mem::size_of::<(u64, Chunk)>(), 48);
        assert_eq!(std::mem::size_of::<Chunks<(u64, Chunk)>>(), 48);
        assert!(std::mem::size_of::<Log>() <= 104);
        let mut log = Log::default();
        assert_eq!(log.mem_usage(), 0);
        add(&mut log, 1, "one");
        assert!(log.chunks.inline().is_some());
        assert_eq!(log.mem_usage(), log.chunks[0].1.heap_bytes());
        assert!(log.chunks[0].1.offsets.is_none());
        for seq in 2..=(WALK as u64 + 1) {
            add(&mut log, seq, "more");
        }
        assert_eq!(
            log.chunks[0].1.offsets.as_ref().map(|o| o.len()),
            Some(WALK + 1),
            "past WALK records a chunk keeps offsets"
        );
        for seq in 1..=(WALK as u64 + 1) {
            assert_eq!(log.get(seq).map(|m| m.seq), Some(seq));
        }
        add(&mut log, 1000, &"x".repeat(CHUNK_BYTES));
        assert_eq!((log.chunks.len(), log.chunks.heap_bytes()), (2, 96));
        for seq in 1..=(WALK as u64 + 1) {
            assert!(log.remove(seq).is_some());
        }
        assert!(log.chunks.inline().is_some());
        assert_eq!(log.head(), Some((1000, 2000)));
        assert_eq!(log.mem_usage(), log.chunks[0].1.heap_bytes());
    }

    #[test]
    fn size_classes() {
        assert_eq!(size_class(1), 16);
        assert_eq!(size_class(17), 32);
        assert_eq!(size_class(190), 192);
        assert_eq!(size_class(206), 224);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 5120);
        assert_eq!(size_class(16000), 16384);
    }

    #[test]
    fn id_in_stanza() {
        let mut log = Log::default();
        let s = b"<message id='abc'/>";
        log.insert(&NewMsg {
            message: Message {
                seq: 1,
                ts: 5,
                flags: 0,
                id: IdSpec::InStanza { off: 13, len: 3 },
                stanza: s,
            },
            owers: 0,
        });
        let m = log.get(1).unwrap();
        assert_eq!(m.id, b"abc");
        assert_eq!(m.id_spec(), IdSpec::InStanza { off: 13, len: 3 });
        assert_ne!(m.flags & ID_IN_STANZA, 0);
    }

    #[test]
    fn big_base_in_stanza_ids() {
        let mut log = Log::default();
        let base = 1_795_766_874_806_000u64;
        let stanzas: Vec<String> = (0..3)
            .map(|i| format!("<message id='m{i}' type='chat'><body>x</body></message>"))
            .collect();
        for (i, s) in stanzas.iter().enumerate() {
            log.insert(&NewMsg {
                message: Message {
                    seq: base + i as u64,
                    ts: 1_795_766_874_806,
                    flags: 0,
                    id: IdSpec::InStanza { off: 13, len: 2 },
                    stanza: s.as_bytes(),
                },
                owers: 1,
            });
        }
        for i in 0..3 {
            let m = log.get(base + i).unwrap_or_else(|| panic!("{i}"));
            assert_eq!(m.id, format!("m{i}").as_bytes());
        }
    }

    /// A record larger than 64 KiB put between two others (an import of an
    /// old seq) used to overflow the 16-bit offsets of the chunk it joined:
    /// the record after it could no longer be found.
    #[test]
    fn a_large_record_in_the_middle_gets_a_chunk_of_its_own() {
        let mut log = Log::default();
        let small = |seq: u64, stanza: &'static [u8]| NewMsg {
            message: Message {
                seq,
                ts: seq as i64,
                flags: 0,
                id: IdSpec::Own(b"x"),
                stanza,
            },
            owers: 1,
        };
        log.insert(&small(1, b"<message>one</message>"));
        log.insert(&small(3, b"<message>three</message>"));
        let big: &'static [u8] = Box::leak(vec![b'x'; 70_000].into_boxed_slice());
        log.insert(&small(2, big));
        assert_eq!(
            log.get(1).map(|m| m.stanza),
            Some(&b"<message>one</message>"[..])
        );
        assert_eq!(log.get(2).map(|m| m.stanza.len()), Some(70_000));
        assert_eq!(
            log.get(3).map(|m| m.stanza),
            Some(&b"<message>three</message>"[..])
        );
        let seqs: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        // A large one below every other, then a small one after the large
        // seq 2 and before 3 is impossible (consecutive), so one between 3
        // and a later 9.
        log.insert(&small(0, big));
        log.insert(&small(9, b"<message>nine</message>"));
        log.insert(&small(5, big));
        log.insert(&small(4, b"<message>four</message>"));
        let seqs: Vec<u64> = log.iter_from(0).map(|m| m.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5, 9]);
        for seq in seqs {
            assert!(log.get(seq).is_some(), "{seq}");
        }
        assert_eq!(log.len(), 7);
        assert_eq!(log.bytes(), 3 * 70_000 + 22 + 24 + 23 + 23);
    }
}
