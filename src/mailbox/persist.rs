//! The logical, canonical encoding of a mailbox, shared by RDB, AOF
//! rewrite and the digest: a header (counter, devices and their states)
//! followed by the messages in seq order. Two mailboxes with the same
//! content encode to the same bytes, whatever their chunk layout.

use super::ids::Maybe;
use super::log::{IdSpec, Message, Msg, NewMsg, PERSISTED_FLAGS};
use super::offline::Offline;
use super::{Deliveries, Device, Mailbox, Pending};
use crate::codec::{put_bytes, put_i64, put_u64, Reader};

/// The encoding version of the mailbox type (RDB `encver`).
pub const ENCODING_VERSION: i32 = 1;

impl Mailbox {
    /// Everything but the messages.
    pub fn encode_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.devices.len() * 64);
        put_u64(&mut out, self.next_seq);
        put_i64(&mut out, self.touched);
        put_u64(&mut out, self.log.len());
        put_u64(&mut out, self.devices.len() as u64);
        for d in &self.devices {
            put_bytes(&mut out, d.name());
            put_bytes(&mut out, d.node());
            out.push(u8::from(d.online()));
            put_i64(&mut out, d.last_seen());
            put_u64(&mut out, d.pending.len() as u64);
            for (seq, p) in d.pending.iter() {
                put_u64(&mut out, seq);
                put_i64(&mut out, p.since);
                put_i64(&mut out, p.last_send);
                put_u64(&mut out, u64::from(p.attempts));
            }
            put_u64(&mut out, d.offline_count());
            put_u64(&mut out, d.offline_bytes());
            put_u64(&mut out, d.offline.range_count() as u64);
            for (s, e) in d.offline.ranges() {
                put_u64(&mut out, s);
                put_u64(&mut out, e - s);
            }
        }
        // The archive state follows only where there is one, so that a
        // mailbox without one encodes as version 1 did.
        if let Some(a) = &self.archive {
            a.encode(&mut out);
        }
        out
    }

    /// A mailbox with the header's state and no messages yet; also answers
    /// how many messages the header announces.
    pub fn decode_header(blob: &[u8]) -> Option<(Mailbox, u64)> {
        let mut r = Reader::new(blob);
        let next_seq = r.u64()?;
        let touched = r.i64()?;
        let messages = r.u64()?;
        let mut mb = Mailbox::new(next_seq, touched);
        let n = r.count()?;
        mb.devices.reserve_exact(n);
        for _ in 0..n {
            let name = r.bytes()?;
            let node = r.bytes()?;
            let online = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let last_seen = r.i64()?;
            let np = r.count()?;
            let mut pending = Deliveries::default();
            for _ in 0..np {
                let seq = r.u64()?;
                let p = Pending {
                    since: r.i64()?,
                    last_send: r.i64()?,
                    attempts: u32::try_from(r.u64()?).ok()?,
                };
                pending.insert(seq, p);
            }
            let offline_count = r.u64()?;
            let offline_bytes = r.u64()?;
            let nr = r.count()?;
            let mut ranges = Vec::with_capacity(nr);
            for _ in 0..nr {
                let s = r.u64()?;
                let e = s.checked_add(r.u64()?)?;
                ranges.push((s, e));
            }
            // A repeated name, an empty node, a name past 64 KiB or a count
            // past what a log holds: refused here (`consistent` gives the
            // reason for the rest).
            if mb.device_index(name).is_some()
                || node.is_empty()
                || u16::try_from(name.len()).is_err()
                || u32::try_from(offline_count).is_err()
            {
                return None;
            }
            let mut d = Device::new(name, node, online, last_seen);
            d.pending = pending;
            d.offline = Offline::from_parts(ranges, offline_count, offline_bytes)?;
            mb.devices.push(d);
        }
        if !r.is_empty() {
            mb.archive = Some(Box::new(super::archive::Archive::decode(&mut r)?));
        }
        r.is_empty().then_some((mb, messages))
    }

    /// Appends one message in the logical encoding.
    pub fn encode_message(out: &mut Vec<u8>, m: &Msg<'_>) {
        put_u64(out, m.seq);
        put_i64(out, m.ts);
        out.push(m.flags & PERSISTED_FLAGS);
        put_u64(out, u64::from(m.owers));
        match m.id_spec() {
            IdSpec::InStanza { off, len } => {
                put_u64(out, off as u64);
                put_u64(out, len as u64);
            }
            IdSpec::Own(b) => put_bytes(out, b),
        }
        put_bytes(out, m.stanza);
    }

    /// Loads a run of encoded messages, which must follow the messages
    /// already held in seq order; answers how many it loaded. `None` when
    /// the bytes do not decode or the seqs do not ascend. Notes in `maybe`
    /// what [`Mailbox::repeated_ids`] needs to tell, once every run has
    /// loaded, whether an id repeats (bytes no command wrote: an RDB, a
    /// `RESTORE` payload, `IM.LOAD`).
    pub fn load_messages(&mut self, blob: &[u8], maybe: &mut Maybe) -> Option<u64> {
        let mut r = Reader::new(blob);
        let mut n = 0;
        while !r.is_empty() {
            let seq = r.u64()?;
            let ts = r.i64()?;
            let flags = r.u8()?;
            if flags & !PERSISTED_FLAGS != 0 {
                return None;
            }
            let owers = u16::try_from(r.u64()?).ok()?;
            let in_stanza = flags & super::log::ID_IN_STANZA != 0;
            let (own, off, len) = if in_stanza {
                (
                    None,
                    usize::try_from(r.u64()?).ok()?,
                    usize::try_from(r.u64()?).ok()?,
                )
            } else {
                (Some(r.bytes()?), 0, 0)
            };
            let stanza = r.bytes()?;
            let id = match own {
                Some(b) => IdSpec::Own(b),
                None => {
                    stanza.get(off..off.checked_add(len)?)?;
                    IdSpec::InStanza { off, len }
                }
            };
            if self.log.last().is_some_and(|m| m.seq >= seq) {
                return None;
            }
            let m = NewMsg {
                message: Message {
                    seq,
                    ts,
                    flags,
                    id,
                    stanza,
                },
                owers,
            };
            self.add_loaded_message(&m, Some(maybe));
            self.count_if_queued(seq, stanza.len());
            n += 1;
        }
        Some(n)
    }

    /// How many of the messages loaded with `maybe` have an id that an
    /// earlier message of the mailbox has too (SPEC §1: an id is unique
    /// within the mailbox, so no command makes one; only a crafted
    /// `RESTORE` payload, or a file such a payload went into, holds one);
    /// forgets the notes. Such messages are kept and indexed, and the
    /// loader decides: a `RESTORE` refuses the mailbox, a load from disk
    /// keeps it (docs/DESIGN.md, "Replication, AOF and RDB"). Linear in
    /// the notes, a tenth of the messages at most in practice, read in
    /// seq order.
    pub fn repeated_ids(&self, maybe: &mut Maybe) -> u64 {
        self.ids.repeated(&self.log, maybe)
    }

    /// The messages in batches of about `batch` bytes of encoding.
    pub fn encode_messages(&self, batch: usize, mut emit: impl FnMut(&[u8])) {
        let mut out = Vec::with_capacity(batch + 1024);
        for m in self.log.iter_from(0) {
            Mailbox::encode_message(&mut out, &m);
            if out.len() >= batch {
                emit(&out);
                out.clear();
            }
        }
        if !out.is_empty() {
            emit(&out);
        }
    }

    /// Whether a mailbox just decoded (from an RDB, a `RESTORE` payload any
    /// client may craft, an AOF rewrite or a copy) holds together as one
    /// built by commands does: device and node names of 1 to 256 bytes,
    /// nodes of `A-Z a-z 0-9 . _ : -`; every pending or offline seq of a
    /// device is a message of the log and none is both; a device's offline
    /// count and bytes are those of its offline seqs; each message's count
    /// of owing devices is the number that have it pending or offline; the
    /// archive queue agrees with the rest. Linear in what the mailbox
    /// holds, never in the spans its ranges claim. `Err` says what does
    /// not hold.
    pub fn consistent(&self) -> Result<(), String> {
        if self.next_seq > super::MAX_SEQ.saturating_add(1) {
            return Err(format!(
                "the seq counter {} is past {} (seqs are RESP integers)",
                self.next_seq,
                super::MAX_SEQ
            ));
        }
        if self.log.first().is_some_and(|m| m.seq == 0) {
            return Err("a message has seq 0, which pages and `first` read as none".into());
        }
        let mut owing: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::new();
        for d in &self.devices {
            if d.name().is_empty() || d.name().len() > super::MAX_NAME {
                return Err("a device name is empty or longer than 256 bytes".into());
            }
            match super::check_node(d.node()) {
                Ok(()) => {}
                Err(super::BadNode::Bytes) => {
                    return Err("a node name is not 1 to 256 bytes of A-Z a-z 0-9 . _ : -".into())
                }
                Err(super::BadNode::Reserved) => {
                    return Err("a node name is one of the module's own channels".into())
                }
            }
            let (mut count, mut bytes) = (0u64, 0u64);
            for (s, e) in d.offline.ranges() {
                let mut held = 0u64;
                for m in self.log.range(s, e) {
                    held += 1;
                    bytes += m.stanza.len() as u64;
                    *owing.entry(m.seq).or_default() += 1;
                }
                if Some(held) != (e - s).checked_add(1) {
                    return Err(format!(
                        "an offline range {s}..={e} names seqs the log does not hold"
                    ));
                }
                count += held;
            }
            if (count, bytes) != (d.offline_count(), d.offline_bytes()) {
                return Err("a device's offline count or bytes disagree with its ranges".into());
            }
            for (seq, _) in d.pending.iter() {
                if !self.log.contains(seq) || d.offline.contains(seq) {
                    return Err(format!(
                        "pending seq {seq} is not in the log or is offline too"
                    ));
                }
                *owing.entry(seq).or_default() += 1;
            }
        }
        let mut read = 0u64;
        for m in self.log.iter_from(0) {
            read += 1;
            let want = owing.get(&m.seq).copied().unwrap_or(0);
            if u64::from(m.owers) != want.min(u64::from(super::log::MAX_OWERS)) {
                return Err(format!(
                    "message {} is owed by {want} devices, its header says {}",
                    m.seq, m.owers
                ));
            }
        }
        if read != self.log.len() {
            return Err(format!(
                "the log holds {} messages but {read} read back",
                self.log.len()
            ));
        }
        if !self.archive_consistent() {
            return Err("the archive queue disagrees with the mailbox".into());
        }
        Ok(())
    }

    /// A copy through the canonical encoding (`COPY`); `None` if it does
    /// not load back, which a consistent mailbox always does. A repeated
    /// id that a load from disk kept is copied as it is, and indexed as a
    /// load indexes it (the notes are not needed: the original was counted
    /// when it loaded).
    pub fn copy_via_encoding(&self, batch: usize) -> Option<Mailbox> {
        let (mut out, n) = Mailbox::decode_header(&self.encode_header())?;
        let mut ok = true;
        let mut notes = Maybe::default();
        self.encode_messages(batch, |b| {
            ok &= out.load_messages(b, &mut notes).is_some();
        });
        (ok && out.log.len() == n && out.archive_consistent()).then_some(out)
    }
}
