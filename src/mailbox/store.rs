//! What `IM.STORE` does to a mailbox (SPEC §3), decided without a server:
//! which id the message gets, whether it is a retry of one already held,
//! whether the offline policy keeps it at all, the quotas, which devices it
//! is pending on, which devices it registers, which sessions are given up
//! for holding too many unacked messages. [`plan`] turns a request into a
//! [`Plan`] (or a [`Refusal`]); the plan's [`Store::effects`] are what the
//! command commits.

use super::effect::{Devices, Effect};
use super::log::{IdSpec, Message, HAS_DELAY, VOLATILE};
use super::{Mailbox, MAX_DEVICES, MAX_ID};
use smallvec::SmallVec;

/// An `IM.STORE` as the command gives it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The stanza, already checked to be one well-formed stanza.
    pub stanza: &'a [u8],
    /// The `ID` option (1 to [`MAX_ID`] bytes, checked by the parser).
    pub id: Option<&'a [u8]>,
    /// The stanza's own `id` attribute: its value with entities resolved,
    /// and where the raw value sits in the stanza when it has none.
    pub stanza_id: Option<(&'a [u8], Option<usize>)>,
    /// `DEVICES`: the devices it was just delivered to (distinct);
    /// `None`: every online device.
    pub devices: Option<&'a [&'a [u8]]>,
    /// The offline policy (XEP-0160, XEP-0334, `offline-types`, `FORCE`)
    /// keeps it for devices that do not get it now.
    pub keep_offline: bool,
    /// The stanza already carries a XEP-0203 `<delay>`.
    pub has_delay: bool,
}

/// The settings a store obeys (SPEC §7).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `max-messages`: messages per mailbox.
    pub max_messages: u64,
    /// `max-bytes`: stanza bytes per mailbox.
    pub max_bytes: u64,
    /// `quota-policy drop-oldest` (else `reject`).
    pub drop_oldest: bool,
    /// `max-pending`: pending messages per device before it is given up.
    pub max_pending: usize,
    /// `archive yes`: `drop-oldest` hands the oldest to the archive queue
    /// instead of deleting them (SPEC §3, §6).
    pub archive: bool,
}

/// Why a store is refused (nothing changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The stanza's `id` attribute is longer than [`MAX_ID`] bytes
    /// (SPEC §3: refused, never replaced by a generated id).
    IdTooLong {
        /// The id's length (bytes).
        len: usize,
    },
    /// Registering the devices it names would take the mailbox over
    /// [`MAX_DEVICES`].
    TooManyDevices,
    /// The mailbox's seq counter is past [`super::MAX_SEQ`]: no seq is
    /// left to give (only a mailbox restored from a crafted payload gets
    /// there).
    SeqExhausted,
    /// `max-messages` or `max-bytes` would be passed, with `quota-policy
    /// reject` or a stanza larger than `max-bytes` itself (`IMFULL`).
    Full {
        /// Messages the mailbox holds.
        count: u64,
        /// Stanza bytes it holds.
        bytes: u64,
        /// The new stanza's size (bytes).
        size: u64,
        /// `max-messages`.
        max_messages: u64,
        /// `max-bytes` (bytes).
        max_bytes: u64,
    },
}

/// What a store comes to. (It lives on the stack for one command: boxing
/// the large variant would allocate on every store.)
#[allow(clippy::large_enum_variant)]
pub enum Plan<'a> {
    /// The mailbox holds that id already: nothing is stored; the reply
    /// names the message held (its seq and id) and the devices it is
    /// pending on.
    Duplicate {
        /// The held message's seq.
        seq: u64,
        /// Its id.
        id: Vec<u8>,
        /// The devices it is pending on.
        pending_on: Names,
    },
    /// The policy keeps it only while pending, and no device gets it now:
    /// nothing is stored (the reply is nil).
    NotKept,
    /// A new message.
    Store(Store<'a>),
}

/// A new message and everything that comes with it.
pub struct Store<'a> {
    /// The counter a new mailbox starts at (`None`: the mailbox exists).
    pub create: Option<u64>,
    /// Its seq: the mailbox's next, or `create` for a new mailbox
    /// (SPEC §1).
    pub seq: u64,
    /// Its time (Unix ms): never before the mailbox's latest, so that
    /// messages are in time order as in seq order (the expiry relies on it).
    pub ts: i64,
    flags: u8,
    id: Id<'a>,
    /// The stanza's bytes, exactly as given.
    pub stanza: &'a [u8],
    /// The devices it is pending on, in the order of the request.
    pub pending: Names,
    /// The oldest messages dropped to make room (`drop-oldest`).
    pub drop: Vec<u64>,
    /// Those go to the archive queue rather than away (`archive yes`).
    archive_dropped: bool,
    /// Devices (indexes in the mailbox as it is) given up for holding
    /// `max-pending` unacked messages already, and their names.
    pub kick: Vec<usize>,
    kicked: Names,
}

/// Where the new message's id comes from.
enum Id<'a> {
    Given(&'a [u8], IdSpec<'a>),
    Generated(Vec<u8>),
}

impl<'a> Store<'a> {
    /// The message's id.
    pub fn id(&self) -> &[u8] {
        match &self.id {
            Id::Given(id, _) => id,
            Id::Generated(id) => id,
        }
    }

    /// The effects to commit, in order: create the mailbox, drop the
    /// oldest, store, expire the sessions given up.
    pub fn effects(&self) -> SmallVec<[Effect<'_>; 4]> {
        let mut effects: SmallVec<[Effect<'_>; 4]> = SmallVec::new();
        if let Some(next_seq) = self.create {
            effects.push(Effect::Create { next_seq });
        }
        if self.archive_dropped {
            if !self.drop.is_empty() {
                effects.push(Effect::Queue {
                    seqs: self.drop.clone(),
                });
            }
        } else if !self.drop.is_empty() {
            effects.extend(self.drop.iter().map(|&seq| Effect::Drop { seq }));
        }
        let id = match &self.id {
            Id::Given(_, spec) => *spec,
            Id::Generated(id) => IdSpec::Own(id),
        };
        effects.push(Effect::Store {
            message: Message {
                seq: self.seq,
                ts: self.ts,
                flags: self.flags,
                id,
                stanza: self.stanza,
            },
            pending: self.pending.iter().collect::<Devices<'_>>(),
        });
        if !self.kicked.is_empty() {
            effects.extend(self.kicked.iter().map(|device| Effect::Expire { device }));
        }
        effects
    }
}

/// Device names copied out of the mailbox (a command changes the mailbox
/// while it still needs them), on the stack for the usual few.
#[derive(Default, Debug)]
pub struct Names {
    buf: SmallVec<[u8; 96]>,
    ends: SmallVec<[usize; 4]>,
}

impl Names {
    /// Appends a copy of `name`.
    pub fn push(&mut self, name: &[u8]) {
        self.buf.extend_from_slice(name);
        self.ends.push(self.buf.len());
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Holds no name.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The names, in the order they were pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.buf[start..end]
        })
    }
}

/// Refuses `devices` (distinct names) when registering those that are new
/// would take the mailbox, new (`None`) or not, over [`MAX_DEVICES`].
/// Linear in the names and the mailbox's devices.
pub fn room_for<'a>(
    mb: Option<&Mailbox>,
    devices: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<(), Refusal> {
    let have = mb.map_or(0, |m| m.devices.len());
    let new = match mb {
        None => devices.len(),
        Some(m) if devices.len() > 8 && have > 8 => {
            let known: hashbrown::HashSet<&[u8]> = m.devices.iter().map(|d| d.name()).collect();
            devices.filter(|d| !known.contains(d)).count()
        }
        Some(m) => devices.filter(|d| m.device_index(d).is_none()).count(),
    };
    if have + new > MAX_DEVICES {
        return Err(Refusal::TooManyDevices);
    }
    Ok(())
}

/// The messages and stanza bytes a mailbox holds against its quotas: the
/// queued ones have left it (they wait only for the archiver).
fn held(mb: Option<&Mailbox>) -> (u64, u64) {
    mb.map_or((0, 0), |m| {
        (
            m.log.len() - m.queued_count(),
            m.log.bytes() - m.queued_bytes(),
        )
    })
}

/// Oldest messages to drop so that one more of `size` bytes fits; `None`
/// when it cannot fit at all (even in an empty mailbox).
fn make_room(mb: Option<&Mailbox>, size: u64, limits: &Limits) -> Option<Vec<u64>> {
    if size > limits.max_bytes || limits.max_messages == 0 {
        return None;
    }
    let Some(mb) = mb else {
        return Some(Vec::new());
    };
    let (mut count, mut bytes) = held(Some(mb));
    let mut drop = Vec::new();
    for m in mb.held_from(0) {
        if count < limits.max_messages && bytes + size <= limits.max_bytes {
            break;
        }
        drop.push(m.seq);
        count -= 1;
        bytes -= m.stanza.len() as u64;
    }
    Some(drop)
}

/// Decides a store into `mb` (`None`: the key is new; its counter would
/// start at `new_counter`) at time `now` (ms).
pub fn plan<'a>(
    mb: Option<&Mailbox>,
    req: &Request<'a>,
    limits: &Limits,
    now: i64,
    new_counter: u64,
) -> Result<Plan<'a>, Refusal> {
    let seq = mb.map_or(new_counter, |m| m.next_seq);
    if seq > super::MAX_SEQ {
        return Err(Refusal::SeqExhausted);
    }
    // The id: `ID`, else the stanza's own (kept inside the stanza when it
    // is verbatim), else generated from the seq and the time. An empty
    // `id=''` counts as no id.
    let id = match (req.id, req.stanza_id) {
        (Some(id), Some((value, Some(off)))) if value == id => {
            Id::Given(id, IdSpec::InStanza { off, len: id.len() })
        }
        (Some(id), _) => Id::Given(id, IdSpec::Own(id)),
        (None, Some((value, _))) if value.len() > MAX_ID => {
            return Err(Refusal::IdTooLong { len: value.len() })
        }
        (None, Some((value, Some(off)))) if !value.is_empty() => Id::Given(
            req.stanza.get(off..off + value.len()).unwrap_or(value),
            IdSpec::InStanza {
                off,
                len: value.len(),
            },
        ),
        (None, Some((value, None))) if !value.is_empty() => Id::Given(value, IdSpec::Own(value)),
        _ => Id::Generated(format!("im-{seq:x}-{now:x}").into_bytes()),
    };
    let id_bytes: &[u8] = match &id {
        Id::Given(b, _) => b,
        Id::Generated(b) => b,
    };
    if let Some(m) = mb {
        if let Some(held) = m.find_id(id_bytes) {
            let mut pending_on = Names::default();
            for d in m.devices.iter().filter(|d| d.pending.contains(held)) {
                pending_on.push(d.name());
            }
            return Ok(Plan::Duplicate {
                seq: held,
                id: id_bytes.to_vec(),
                pending_on,
            });
        }
    }

    let mut pending = Names::default();
    match req.devices {
        Some(list) => list.iter().for_each(|d| pending.push(d)),
        None => {
            for d in mb.iter().flat_map(|m| &m.devices).filter(|d| d.online()) {
                pending.push(d.name());
            }
        }
    }
    room_for(mb, pending.iter())?;
    if !req.keep_offline && pending.is_empty() {
        return Ok(Plan::NotKept);
    }

    // Quotas apply to a new mailbox as to an existing one.
    let size = req.stanza.len() as u64;
    let (count, bytes) = held(mb);
    let mut drop = Vec::new();
    if count + 1 > limits.max_messages || bytes + size > limits.max_bytes {
        let room = if limits.drop_oldest {
            make_room(mb, size, limits)
        } else {
            None
        };
        let Some(victims) = room else {
            return Err(Refusal::Full {
                count,
                bytes,
                size,
                max_messages: limits.max_messages,
                max_bytes: limits.max_bytes,
            });
        };
        drop = victims;
    }

    let mut flags = 0;
    if !req.keep_offline {
        flags |= VOLATILE;
    }
    if req.has_delay {
        flags |= HAS_DELAY;
    }
    let ts = mb.map_or(now, |m| m.log.max_ts().max(now));
    // A session with `max-pending` unacked messages already is given up.
    let mut kick = Vec::new();
    let mut kicked = Names::default();
    if let Some(m) = mb {
        for d in pending.iter() {
            if let Some(i) = m
                .device_index(d)
                .filter(|&i| m.devices[i].pending.len() >= limits.max_pending.max(1))
            {
                kick.push(i);
                kicked.push(d);
            }
        }
    }
    Ok(Plan::Store(Store {
        create: mb.is_none().then_some(new_counter),
        seq,
        ts,
        flags,
        id,
        stanza: req.stanza,
        pending,
        drop,
        archive_dropped: limits.archive,
        kick,
        kicked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_messages: 3,
        max_bytes: 1000,
        drop_oldest: false,
        max_pending: 2,
        archive: false,
    };

    fn req(stanza: &'static [u8]) -> Request<'static> {
        Request {
            stanza,
            id: None,
            stanza_id: None,
            devices: None,
            keep_offline: true,
            has_delay: false,
        }
    }

    fn store<'a>(p: Result<Plan<'a>, Refusal>) -> Store<'a> {
        match p {
            Ok(Plan::Store(s)) => s,
            Ok(Plan::Duplicate { seq, .. }) => panic!("duplicate of {seq}"),
            Ok(Plan::NotKept) => panic!("not kept"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    /// Applies a plan as the command does.
    fn commit(mb: &mut Option<Mailbox>, s: &Store<'_>, now: i64) {
        let effects = s.effects();
        let m = mb.get_or_insert_with(|| Mailbox::new(s.create.unwrap_or(0), now));
        for e in &effects {
            m.apply(now, e);
        }
    }

    #[test]
    fn a_new_mailbox_starts_at_its_counter_and_names_the_id_by_it() {
        let s = store(plan(None, &req(b"<message/>"), &LIMITS, 5, 7000));
        assert_eq!((s.create, s.seq, s.ts), (Some(7000), 7000, 5));
        assert_eq!(s.id(), b"im-1b58-5");
        assert!(s.pending.is_empty() && s.drop.is_empty() && s.kick.is_empty());
    }

    #[test]
    fn ids_from_the_option_the_stanza_or_generated() {
        let stanza = b"<message id='m1'/>";
        let r = Request {
            stanza_id: Some((b"m1", Some(13))),
            ..req(stanza)
        };
        let s = store(plan(None, &r, &LIMITS, 1, 10));
        assert_eq!(s.id(), b"m1");
        assert!(matches!(
            s.effects()[1],
            Effect::Store {
                message: Message {
                    id: IdSpec::InStanza { off: 13, len: 2 },
                    ..
                },
                ..
            }
        ));
        let r = Request {
            id: Some(b"given"),
            ..r
        };
        assert_eq!(store(plan(None, &r, &LIMITS, 1, 10)).id(), b"given");
        let r = Request {
            stanza_id: Some((b"", Some(13))),
            id: None,
            ..r
        };
        assert!(store(plan(None, &r, &LIMITS, 1, 10))
            .id()
            .starts_with(b"im-a-"));
        let long = vec![b'x'; MAX_ID + 1];
        let r = Request {
            stanza_id: Some((&long[..], None)),
            ..req(stanza)
        };
        assert_eq!(
            plan(None, &r, &LIMITS, 1, 10).err(),
            Some(Refusal::IdTooLong { len: MAX_ID + 1 })
        );
    }

    #[test]
    fn the_last_seq_a_reply_can_carry_is_given_and_then_no_more() {
        let stanza = b"<message id='m1'/>";
        let r = Request {
            stanza_id: Some((b"m1", Some(13))),
            ..req(stanza)
        };
        let mut mb = Mailbox::new(crate::mailbox::MAX_SEQ, 1);
        let s = store(plan(Some(&mb), &r, &LIMITS, 1, 10));
        assert!(matches!(
            s.effects()[0],
            Effect::Store { message: Message { seq, .. }, .. } if seq == crate::mailbox::MAX_SEQ
        ));
        mb.next_seq = crate::mailbox::MAX_SEQ + 1;
        assert!(matches!(
            plan(Some(&mb), &r, &LIMITS, 1, 10),
            Err(Refusal::SeqExhausted)
        ));
    }

    #[test]
    fn a_retry_is_a_duplicate_and_the_policy_may_keep_nothing() {
        let mut mb = None;
        let r = Request {
            id: Some(b"a"),
            ..req(b"<message/>")
        };
        let s = store(plan(None, &r, &LIMITS, 1, 10));
        commit(&mut mb, &s, 1);
        assert!(matches!(
            plan(mb.as_ref(), &r, &LIMITS, 2, 99),
            Ok(Plan::Duplicate { seq: 10, .. })
        ));
        let volatile = Request {
            id: Some(b"b"),
            keep_offline: false,
            ..r
        };
        assert!(matches!(
            plan(mb.as_ref(), &volatile, &LIMITS, 2, 99),
            Ok(Plan::NotKept)
        ));
    }

    #[test]
    fn quotas_hold_for_new_and_existing_mailboxes() {
        let big = vec![b'x'; 1001];
        let stanza: &'static [u8] = Box::leak(big.into_boxed_slice());
        assert!(matches!(
            plan(None, &req(stanza), &LIMITS, 1, 10),
            Err(Refusal::Full { count: 0, .. })
        ));
        let drop = Limits {
            drop_oldest: true,
            ..LIMITS
        };
        assert!(matches!(
            plan(None, &req(stanza), &drop, 1, 10),
            Err(Refusal::Full { .. })
        ));
        let mut mb = None;
        for i in 0..3 {
            let s = store(plan(mb.as_ref(), &req(b"<message/>"), &LIMITS, i, 10));
            commit(&mut mb, &s, i);
        }
        assert!(matches!(
            plan(mb.as_ref(), &req(b"<message/>"), &LIMITS, 9, 10),
            Err(Refusal::Full { count: 3, .. })
        ));
        let s = store(plan(mb.as_ref(), &req(b"<message/>"), &drop, 9, 10));
        assert_eq!(s.drop, vec![10]);
        assert_eq!(s.seq, 13);
    }

    #[test]
    fn time_never_goes_back_and_full_sessions_are_given_up() {
        let mut mb = None;
        let devices: &[&[u8]] = &[b"phone"];
        let r = Request {
            devices: Some(devices),
            ..req(b"<message/>")
        };
        for now in [100, 50] {
            let s = store(plan(mb.as_ref(), &r, &LIMITS, now, 10));
            assert_eq!(s.ts, 100);
            assert!(s.kick.is_empty());
            commit(&mut mb, &s, now);
        }
        let s = store(plan(mb.as_ref(), &r, &LIMITS, 200, 10));
        assert_eq!(s.kick, vec![0]);
        let effects = s.effects();
        assert!(matches!(
            effects.last(),
            Some(Effect::Expire { device: b"phone" })
        ));
    }

    #[test]
    fn devices_are_counted_over_everything_a_store_registers() {
        let names: Vec<Vec<u8>> = (0..MAX_DEVICES + 1)
            .map(|i| format!("d{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
        assert_eq!(
            room_for(None, refs.iter().copied()),
            Err(Refusal::TooManyDevices)
        );
        assert_eq!(room_for(None, refs[..MAX_DEVICES].iter().copied()), Ok(()));
    }
}
