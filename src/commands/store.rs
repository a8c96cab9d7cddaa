//! IM.STORE and IM.ACK.

use super::session::{check_room, check_room_for, create_if_new, seq_issued};
use super::{
    device_name, is, now_ms, parse_u64, unknown_option, user_device, Propagate, Writer,
    MAX_DEVICES, MAX_ID,
};
use crate::config::{self, QuotaPolicy};
use crate::mailbox::effect::{Devices, Seqs};
use crate::mailbox::log::{IdSpec, HAS_DELAY, VOLATILE};
use crate::mailbox::{Effect, Mailbox};
use crate::metrics;
use crate::reply::{self, error, Reply};
use crate::stanza;
use crate::sweep;
use redis_module::{Context, RedisString};
use smallvec::SmallVec;

struct StoreArgs<'a> {
    stanza: &'a [u8],
    id: Option<&'a [u8]>,
    devices: Option<Vec<&'a [u8]>>,
    force: bool,
}

fn parse_store(opts: &[RedisString]) -> Result<StoreArgs<'_>, Reply> {
    let (stanza, mut rest) = match opts {
        [s, rest @ ..] => (s.as_slice(), rest),
        [] => return Err(Reply::WrongArity),
    };
    let mut a = StoreArgs {
        stanza,
        id: None,
        devices: None,
        force: false,
    };
    while let [o, tail @ ..] = rest {
        let o = o.as_slice();
        rest = tail;
        if is(o, "ID") {
            let [id, tail @ ..] = rest else {
                return Err(error("ERR ID needs a value"));
            };
            let id = id.as_slice();
            if id.is_empty() || id.len() > MAX_ID {
                return Err(error(format!("ERR ID must be 1 to {MAX_ID} bytes")));
            }
            a.id = Some(id);
            rest = tail;
        } else if is(o, "DEVICES") {
            let [n, tail @ ..] = rest else {
                return Err(error("ERR DEVICES needs a count"));
            };
            let n = parse_u64(n.as_slice(), "DEVICES count")?;
            if n > MAX_DEVICES as u64 {
                return Err(error(format!(
                    "ERR DEVICES lists at most {MAX_DEVICES} devices"
                )));
            }
            let n = n as usize;
            if tail.len() < n {
                return Err(error("ERR DEVICES count is larger than the devices given"));
            }
            let mut list: Vec<&[u8]> = Vec::with_capacity(n);
            let mut seen = hashbrown::HashSet::with_capacity(if n > 8 { n } else { 0 });
            for d in &tail[..n] {
                let d = device_name(d.as_slice())?;
                let new = if n > 8 {
                    seen.insert(d)
                } else {
                    !list.contains(&d)
                };
                if new {
                    list.push(d);
                }
            }
            a.devices = Some(list);
            rest = &tail[n..];
        } else if is(o, "FORCE") {
            a.force = true;
        } else {
            return Err(unknown_option(o));
        }
    }
    Ok(a)
}

/// Device names copied out of the mailbox (the command changes it while
/// they are in use), on the stack for the usual few.
#[derive(Default)]
struct Names {
    buf: SmallVec<[u8; 96]>,
    ends: SmallVec<[usize; 4]>,
}

impl Names {
    fn push(&mut self, name: &[u8]) {
        self.buf.extend_from_slice(name);
        self.ends.push(self.buf.len());
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.buf[start..end]
        })
    }
}

/// Oldest messages to drop so that one more of `size` bytes fits; `None`
/// when it cannot fit at all (even in an empty mailbox).
fn make_room(
    mb: Option<&Mailbox>,
    size: u64,
    max_messages: u64,
    max_bytes: u64,
) -> Option<Vec<u64>> {
    if size > max_bytes || max_messages == 0 {
        return None;
    }
    let Some(mb) = mb else {
        return Some(Vec::new());
    };
    let (mut count, mut bytes) = (mb.log.len(), mb.log.bytes());
    let mut drop = Vec::new();
    for m in mb.log.iter_from(0) {
        if count < max_messages && bytes + size <= max_bytes {
            break;
        }
        drop.push(m.seq);
        count -= 1;
        bytes -= m.stanza.len() as u64;
    }
    Some(drop)
}

/// IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
pub fn store(ctx: &Context, args: &[RedisString]) -> Reply {
    let (user, stanza_arg, opts) = match args {
        [_, u, s, ..] => (u, s, &args[2..]),
        _ => return Reply::WrongArity,
    };
    let a = match parse_store(opts) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let max_stanza = config::get(&config::MAX_STANZA_BYTES).max(0) as usize;
    if a.stanza.len() > max_stanza {
        return error(format!(
            "ERR stanza is {} bytes, more than max-stanza-bytes ({max_stanza})",
            a.stanza.len()
        ));
    }
    let parsed = match stanza::parse(a.stanza) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let mut w = match Writer::open(ctx, user) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let now = now_ms();
    let mb = w.mailbox();
    if let Some(m) = mb {
        m.prefetch_for_store();
    }
    // Declared before the effects, which borrow them.
    let generated;
    let mut pending_names = Names::default();
    let mut effects: SmallVec<[Effect<'_>; 3]> = SmallVec::new();
    create_if_new(mb, now, &mut effects);
    // The seq this message gets.
    let seq = match (mb, effects.first()) {
        (Some(m), _) => m.next_seq,
        (None, Some(Effect::Create { next_seq })) => *next_seq,
        (None, _) => 0,
    };

    // The id, and where it is kept: inside the stanza when it is the
    // stanza's own attribute, verbatim. An id is 1 to MAX_ID bytes, from
    // `ID` or from the stanza alike; a longer one is refused, never
    // replaced by a generated one (SPEC §3: a retried stanza must find
    // its first copy). An empty `id=''` is as no id.
    let (id, id_spec): (&[u8], IdSpec<'_>) = match (a.id, &parsed.id) {
        (Some(id), Some(attr)) if attr.value == id && attr.verbatim_at.is_some() => (
            id,
            IdSpec::InStanza {
                off: attr.verbatim_at.unwrap_or(0),
                len: id.len(),
            },
        ),
        (Some(id), _) => (id, IdSpec::Own(id)),
        (None, Some(attr)) if attr.value.len() > MAX_ID => {
            return error(format!(
                "ERR stanza id is {} bytes; an id is 1 to {MAX_ID} bytes",
                attr.value.len()
            ));
        }
        (None, Some(attr)) if !attr.value.is_empty() => match attr.verbatim_at {
            Some(off) => (
                &a.stanza[off..off + attr.value.len()],
                IdSpec::InStanza {
                    off,
                    len: attr.value.len(),
                },
            ),
            None => (&attr.value[..], IdSpec::Own(&attr.value[..])),
        },
        _ => {
            generated = format!("im-{seq:x}-{now:x}").into_bytes();
            (&generated[..], IdSpec::Own(&generated[..]))
        }
    };

    if let Some(m) = mb {
        if let Some(seq) = m.find_id(id) {
            let on = m.pending_on(seq);
            return reply::send_stored(ctx, seq, id, on.into_iter());
        }
    }

    let volatile = !(a.force || parsed.keep_offline(config::is_offline_type));
    match &a.devices {
        Some(list) => list.iter().for_each(|d| pending_names.push(d)),
        None => {
            for d in mb.iter().flat_map(|m| &m.devices).filter(|d| d.online) {
                pending_names.push(&d.name);
            }
        }
    }
    let pending: Devices<'_> = pending_names.iter().collect();
    if let Err(e) = check_room_for(mb, pending.iter().copied()) {
        return e;
    }
    if volatile && pending.is_empty() {
        metrics::add(&metrics::DROPPED, 1);
        return Reply::Nil;
    }

    // Quotas apply to a new mailbox as to an existing one.
    let max_messages = config::get(&config::MAX_MESSAGES).max(0) as u64;
    let max_bytes = config::get(&config::MAX_BYTES).max(0) as u64;
    let size = a.stanza.len() as u64;
    let (count, bytes) = mb.map_or((0, 0), |m| (m.log.len(), m.log.bytes()));
    if count + 1 > max_messages || bytes + size > max_bytes {
        let room = match config::quota_policy() {
            QuotaPolicy::Reject => None,
            QuotaPolicy::DropOldest => make_room(mb, size, max_messages, max_bytes),
        };
        let Some(victims) = room else {
            metrics::add(&metrics::REJECTED, 1);
            return error(format!(
                "IMFULL mailbox holds {count} messages and {bytes} bytes, and the stanza is {size} bytes (max-messages {max_messages}, max-bytes {max_bytes})"
            ));
        };
        metrics::add(&metrics::DROPPED, victims.len() as i64);
        effects.extend(victims.into_iter().map(|seq| Effect::Drop { seq }));
    }
    seq_issued(seq);
    let mut flags = 0;
    if volatile {
        flags |= VOLATILE;
    }
    if parsed.has_delay {
        flags |= HAS_DELAY;
    }
    // Time never goes back within a mailbox: messages are in time order
    // as in seq order, which the expiry of pending deliveries relies on.
    let ts = mb.map_or(now, |m| m.log.max_ts().max(now));
    effects.push(Effect::Store {
        seq,
        ts,
        flags,
        id: id_spec,
        stanza: a.stanza,
        pending,
    });
    // A session with more than max-pending unacked messages is given up.
    let max_pending = config::get(&config::MAX_PENDING).max(1) as usize;
    let mut kicks = Vec::new();
    if let Some(m) = mb {
        for d in pending_names.iter() {
            if let Some(i) = m
                .device_index(d)
                .filter(|&i| m.devices[i].pending.len() >= max_pending)
            {
                kicks.push(sweep::kick_event(m, user.as_slice(), i, "max-pending"));
                metrics::add(&metrics::EXPIRED, m.devices[i].pending.len() as i64 + 1);
                effects.push(Effect::Expire { device: d });
            }
        }
    }
    metrics::add(&metrics::KICKED, kicks.len() as i64);
    w.commit(now, &effects, Propagate::EffectsWith(stanza_arg));
    sweep::publish(ctx, &kicks);
    metrics::add(&metrics::STORED, 1);
    reply::send_stored(ctx, seq, id, pending_names.iter())
}

/// Most ids one `IM.ACK` names (SPEC §3).
pub const MAX_ACK_IDS: usize = 10_000;

/// IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
pub fn ack(ctx: &Context, args: &[RedisString]) -> Reply {
    let (user, device, ids) = match user_device(args) {
        Ok((_, _, [])) => return Reply::WrongArity,
        Ok(parts) => parts,
        Err(e) => return e,
    };
    let upto = match ids {
        [w, n] if is(w.as_slice(), "UPTO") => match parse_u64(n.as_slice(), "UPTO") {
            Ok(n) => Some(n),
            Err(e) => return e,
        },
        [w, ..] if is(w.as_slice(), "UPTO") => {
            return error("ERR UPTO takes exactly one seq");
        }
        _ if ids.len() > MAX_ACK_IDS => {
            return error(format!("ERR IM.ACK takes at most {MAX_ACK_IDS} ids"));
        }
        _ => None,
    };
    let mut w = match Writer::open(ctx, user) {
        Ok(w) => w,
        Err(e) => return e,
    };
    if let Err(e) = check_room(w.mailbox(), device) {
        return e;
    }
    let now = now_ms();
    let mut effects: SmallVec<[Effect<'_>; 2]> = SmallVec::new();
    create_if_new(w.mailbox(), now, &mut effects);
    effects.push(match upto {
        Some(upto) => Effect::AckUpto { device, upto },
        None => {
            let mut seqs: Seqs = ids
                .iter()
                .filter_map(|id| w.mailbox().and_then(|m| m.find_id(id.as_slice())))
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            Effect::Ack { device, seqs }
        }
    });
    let acked = w.commit(now, &effects, Propagate::Effects);
    metrics::add(&metrics::ACKED, acked as i64);
    acked.into()
}
