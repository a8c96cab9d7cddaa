//! Effects: the changes a command makes to a mailbox, fully specified (time,
//! seq, id, which devices) so that applying them is deterministic. The
//! primary applies them and replicates them as one `IM.APPLY` blob; replicas
//! and AOF replay decode and apply the same list.

use super::log::{IdSpec, Message};
use crate::codec::{put_bytes, put_i64, put_u64, Reader};
use smallvec::SmallVec;

/// The devices a stored message is pending on (usually one or two).
pub type Devices<'a> = SmallVec<[&'a [u8]; 2]>;
/// The seqs one ack names (usually a few).
pub type Seqs = SmallVec<[u64; 4]>;

/// One change a command or the timer makes to a mailbox, applied by
/// [`super::Mailbox::apply`] alike on the primary, on a replica and in AOF
/// replay. Device names are bytes borrowed from the command or the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// The key is new: the mailbox starts its seq counter here.
    Create {
        /// The first seq it hands out (from the clock, so that a mailbox
        /// created again never reuses a seq: SPEC §1).
        next_seq: u64,
    },
    /// Registers the device if new and marks it seen.
    Register {
        /// The device's name.
        device: &'a [u8],
    },
    /// `IM.CONNECT` (SPEC §2): registers the device if new, marks it online
    /// on `node` and seen; if it was online already (a replaced session),
    /// its pending messages go offline.
    Connect {
        /// The device's name.
        device: &'a [u8],
        /// The node that now holds its session.
        node: &'a [u8],
    },
    /// `IM.DISCONNECT` (SPEC §2): marks the device offline and seen; its
    /// pending messages go offline at once. Nothing for a device that is
    /// not registered.
    Disconnect {
        /// The device's name.
        device: &'a [u8],
    },
    /// `IM.FORGET` (SPEC §2): unregisters the device; the messages that
    /// thereby leave the mailbox (SPEC §1) are deleted. Nothing for a
    /// device that is not registered.
    Forget {
        /// The device's name.
        device: &'a [u8],
    },
    /// A new message, pending on `pending` and owed to every registered
    /// device (a [`VOLATILE`](super::log::VOLATILE) one only to those it is
    /// pending on). Nothing when the log holds its seq already.
    Store {
        /// The message, its seq and time already fixed.
        message: Message<'a>,
        /// The devices it is pending on (registered if new).
        pending: Devices<'a>,
    },
    /// `IM.ACK` by ids (SPEC §3): registers the device if new and marks it
    /// seen; acks each of `seqs` it owes, pending or offline alike, and
    /// ignores the others.
    Ack {
        /// The device's name.
        device: &'a [u8],
        /// The seqs of the ids named that the mailbox holds.
        seqs: Seqs,
    },
    /// `IM.ACK ... UPTO` (SPEC §3, as XEP-0198's `h`): as [`Effect::Ack`]
    /// for every seq the device owes up to `upto`.
    AckUpto {
        /// The device's name.
        device: &'a [u8],
        /// The highest seq acked (inclusive).
        upto: u64,
    },
    /// Removes a message for every device (quota, retention).
    Drop {
        /// The message's seq.
        seq: u64,
    },
    /// The timer sent these pending messages to the device again.
    Resend {
        /// The device's name.
        device: &'a [u8],
        /// The seqs resent: each one's attempt count grows and its last
        /// send becomes now; a seq not pending on the device is skipped.
        seqs: Vec<u64>,
    },
    /// The device's session is given up (ack timeout, too many pending):
    /// its pending messages go offline and it is marked offline.
    Expire {
        /// The device's name.
        device: &'a [u8],
    },
    /// These messages go to the archive queue (retention or `drop-oldest`
    /// with `archive yes`, SPEC §6): no device owes them any more.
    Queue {
        /// The queued messages' seqs.
        seqs: Vec<u64>,
    },
    /// The archiver confirmed these queued messages: they leave for good
    /// (`IM.ARCHIVE.ACK`).
    ArchiveAck {
        /// The confirmed messages' seqs.
        seqs: Vec<u64>,
    },
    /// These queued messages come back to the mailbox, each as a message
    /// imported (`IM.IMPORT` of an id still queued).
    Unqueue {
        /// The returning messages' seqs.
        seqs: Vec<u64>,
    },
    /// The mailbox was idle for `mailbox-idle`: every message goes to the
    /// archive queue and every device is forgotten (SPEC §6).
    Evict,
    /// A device came back to an evicted mailbox: what is still queued
    /// comes back, and the mailbox gets a fresh retention window.
    ComeBack,
    /// A message came back from the archive (`IM.IMPORT`, after the
    /// `Store` that put it back): one fewer waits there.
    Imported,
}

/// Version 1 carries every stanza inline; version 2 may name, instead of
/// a stored stanza's bytes, the argument after the blob that holds them
/// (the store's own stanza argument, passed on without a copy). Both decode.
const VERSION_INLINE: u8 = 1;
const VERSION: u8 = 2;

/// How a version 2 blob gives a stored stanza.
const STANZA_INLINE: u8 = 0;
const STANZA_ARGUMENT: u8 = 1;

/// Encodes `now` and the effects into one blob, in `out` (emptied first).
/// A stored stanza that is `shared` (the same bytes, not only equal ones)
/// is named as the first argument after the blob; answers whether one was.
pub fn encode(out: &mut Vec<u8>, now: i64, effects: &[Effect<'_>], shared: Option<&[u8]>) -> bool {
    let mut used = false;
    let room: usize = effects
        .iter()
        .map(|e| match e {
            Effect::Store { message, pending } => message.stanza.len() + 64 + pending.len() * 32,
            Effect::Ack { seqs, .. } => 300 + seqs.len() * 10,
            Effect::Resend { seqs, .. } => 300 + seqs.len() * 10,
            _ => 300,
        })
        .sum();
    out.clear();
    out.reserve(room + 16);
    out.push(VERSION);
    put_i64(out, now);
    for e in effects {
        match e {
            Effect::Create { next_seq } => {
                out.push(1);
                put_u64(out, *next_seq);
            }
            Effect::Register { device } => {
                out.push(2);
                put_bytes(out, device);
            }
            Effect::Connect { device, node } => {
                out.push(3);
                put_bytes(out, device);
                put_bytes(out, node);
            }
            Effect::Disconnect { device } => {
                out.push(4);
                put_bytes(out, device);
            }
            Effect::Forget { device } => {
                out.push(5);
                put_bytes(out, device);
            }
            Effect::Store {
                message:
                    Message {
                        seq,
                        ts,
                        flags,
                        id,
                        stanza,
                    },
                pending,
            } => {
                out.push(6);
                put_u64(out, *seq);
                put_i64(out, *ts);
                out.push(*flags);
                match id {
                    IdSpec::InStanza { off, len } => {
                        out.push(1);
                        put_u64(out, *off as u64);
                        put_u64(out, *len as u64);
                    }
                    IdSpec::Own(b) => {
                        out.push(0);
                        put_bytes(out, b);
                    }
                }
                let same = shared.is_some_and(|s| std::ptr::eq(s, *stanza));
                if same {
                    out.push(STANZA_ARGUMENT);
                    put_u64(out, 0);
                    used = true;
                } else {
                    out.push(STANZA_INLINE);
                    put_bytes(out, stanza);
                }
                put_u64(out, pending.len() as u64);
                for d in pending {
                    put_bytes(out, d);
                }
            }
            Effect::Ack { device, seqs } => {
                out.push(7);
                put_bytes(out, device);
                put_u64(out, seqs.len() as u64);
                for s in seqs {
                    put_u64(out, *s);
                }
            }
            Effect::AckUpto { device, upto } => {
                out.push(8);
                put_bytes(out, device);
                put_u64(out, *upto);
            }
            Effect::Drop { seq } => {
                out.push(9);
                put_u64(out, *seq);
            }
            Effect::Resend { device, seqs } => {
                out.push(10);
                put_bytes(out, device);
                put_u64(out, seqs.len() as u64);
                for s in seqs {
                    put_u64(out, *s);
                }
            }
            Effect::Expire { device } => {
                out.push(11);
                put_bytes(out, device);
            }
            Effect::Queue { seqs } => put_seqs(out, 12, seqs),
            Effect::ArchiveAck { seqs } => put_seqs(out, 13, seqs),
            Effect::Unqueue { seqs } => put_seqs(out, 14, seqs),
            Effect::Evict => out.push(15),
            Effect::ComeBack => out.push(16),
            Effect::Imported => out.push(17),
        }
    }
    used
}

/// An effect that is a tag and a list of seqs.
fn put_seqs(out: &mut Vec<u8>, tag: u8, seqs: &[u64]) {
    out.push(tag);
    put_u64(out, seqs.len() as u64);
    for s in seqs {
        put_u64(out, *s);
    }
}

fn seqs<C: Default + Extend<u64>>(r: &mut Reader<'_>) -> Option<C> {
    let n = r.count()?;
    let mut v = C::default();
    for _ in 0..n {
        v.extend([r.u64()?]);
    }
    Some(v)
}

/// Decodes a blob made by [`encode`], with the arguments that followed it;
/// `None` when it is not one.
pub fn decode<'a>(blob: &'a [u8], args: &[&'a [u8]]) -> Option<(i64, Vec<Effect<'a>>)> {
    let mut r = Reader::new(blob);
    let version = r.u8()?;
    if version != VERSION && version != VERSION_INLINE {
        return None;
    }
    let now = r.i64()?;
    let mut effects = Vec::new();
    while !r.is_empty() {
        let e = match r.u8()? {
            1 => Effect::Create { next_seq: r.u64()? },
            2 => Effect::Register { device: r.bytes()? },
            3 => Effect::Connect {
                device: r.bytes()?,
                node: r.bytes()?,
            },
            4 => Effect::Disconnect { device: r.bytes()? },
            5 => Effect::Forget { device: r.bytes()? },
            6 => {
                let seq = r.u64()?;
                let ts = r.i64()?;
                let flags = r.u8()?;
                let id = match r.u8()? {
                    1 => IdSpec::InStanza {
                        off: usize::try_from(r.u64()?).ok()?,
                        len: usize::try_from(r.u64()?).ok()?,
                    },
                    0 => IdSpec::Own(r.bytes()?),
                    _ => return None,
                };
                let stanza = match version {
                    VERSION_INLINE => r.bytes()?,
                    _ => match r.u8()? {
                        STANZA_INLINE => r.bytes()?,
                        STANZA_ARGUMENT => *args.get(usize::try_from(r.u64()?).ok()?)?,
                        _ => return None,
                    },
                };
                if let IdSpec::InStanza { off, len } = id {
                    stanza.get(off..off.checked_add(len)?)?;
                }
                let n = r.count()?;
                let mut pending = Devices::with_capacity(n);
                for _ in 0..n {
                    pending.push(r.bytes()?);
                }
                Effect::Store {
                    message: Message {
                        seq,
                        ts,
                        flags,
                        id,
                        stanza,
                    },
                    pending,
                }
            }
            7 => {
                let device = r.bytes()?;
                Effect::Ack {
                    device,
                    seqs: seqs(&mut r)?,
                }
            }
            8 => Effect::AckUpto {
                device: r.bytes()?,
                upto: r.u64()?,
            },
            9 => Effect::Drop { seq: r.u64()? },
            10 => {
                let device = r.bytes()?;
                Effect::Resend {
                    device,
                    seqs: seqs(&mut r)?,
                }
            }
            11 => Effect::Expire { device: r.bytes()? },
            12 => Effect::Queue {
                seqs: seqs(&mut r)?,
            },
            13 => Effect::ArchiveAck {
                seqs: seqs(&mut r)?,
            },
            14 => Effect::Unqueue {
                seqs: seqs(&mut r)?,
            },
            15 => Effect::Evict,
            16 => Effect::ComeBack,
            17 => Effect::Imported,
            _ => return None,
        };
        effects.push(e);
    }
    Some((now, effects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut blob = Vec::new();
        let mut by_ref = Vec::new();
        let effects = vec![
            Effect::Create { next_seq: 17 },
            Effect::Register { device: b"d" },
            Effect::Connect {
                device: b"d",
                node: b"n1",
            },
            Effect::Disconnect { device: b"d" },
            Effect::Forget { device: b"e" },
            Effect::Store {
                message: Message {
                    seq: 17,
                    ts: 99,
                    flags: 4,
                    id: IdSpec::InStanza { off: 13, len: 1 },
                    stanza: b"<message id='x'/>",
                },
                pending: smallvec::smallvec![&b"d"[..], &b"f"[..]],
            },
            Effect::Store {
                message: Message {
                    seq: 18,
                    ts: -1,
                    flags: 0,
                    id: IdSpec::Own(b"gen"),
                    stanza: b"<iq/>",
                },
                pending: Devices::new(),
            },
            Effect::Ack {
                device: b"d",
                seqs: smallvec::smallvec![17, 18],
            },
            Effect::AckUpto {
                device: b"d",
                upto: 18,
            },
            Effect::Drop { seq: 17 },
            Effect::Resend {
                device: b"d",
                seqs: vec![1, 2],
            },
            Effect::Expire { device: b"d" },
        ];
        assert!(!encode(&mut blob, 1234, &effects, None));
        assert_eq!(decode(&blob, &[]), Some((1234, effects.clone())));
        assert_eq!(decode(&blob[..blob.len() - 1], &[]), None);
        assert_eq!(decode(b"", &[]), None);
        // The first store's stanza passed as an argument, not copied.
        let Effect::Store {
            message: Message { stanza, .. },
            ..
        } = &effects[5]
        else {
            unreachable!()
        };
        assert!(encode(&mut by_ref, 1234, &effects, Some(stanza)));
        assert!(by_ref.len() + stanza.len() <= blob.len());
        assert_eq!(
            decode(&by_ref, &[stanza]).map(|(t, e)| (t, e == effects)),
            Some((1234, true))
        );
        assert_eq!(decode(&by_ref, &[]), None, "the argument is missing");
        // An equal stanza elsewhere is not the shared one.
        let copy = stanza.to_vec();
        let mut other = Vec::new();
        assert!(!encode(&mut other, 1234, &effects, Some(&copy)));
    }

    /// A blob of version 1 (every stanza inline), as AOF files written
    /// before version 2 hold them, still decodes.
    #[test]
    fn decodes_version_1() {
        let mut v1 = vec![VERSION_INLINE];
        put_i64(&mut v1, 77);
        v1.push(6);
        put_u64(&mut v1, 5);
        put_i64(&mut v1, 70);
        v1.push(0);
        v1.push(0);
        put_bytes(&mut v1, b"id-5");
        put_bytes(&mut v1, b"<message/>");
        put_u64(&mut v1, 1);
        put_bytes(&mut v1, b"d");
        let want = Effect::Store {
            message: Message {
                seq: 5,
                ts: 70,
                flags: 0,
                id: IdSpec::Own(b"id-5"),
                stanza: b"<message/>",
            },
            pending: smallvec::smallvec![&b"d"[..]],
        };
        assert_eq!(decode(&v1, &[]), Some((77, vec![want])));
    }
}
