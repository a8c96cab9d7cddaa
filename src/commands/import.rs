//! IM.IMPORT <user> <ts> <id> <stanza> [SEQ <seq>] (SPEC §6)

use super::connect::refusal;
use super::{is, parse_u64, unknown_option, Answer};
use crate::config;
use crate::keyspace::{self, Propagate, Writer};
use crate::mailbox::log::{IdSpec, HAS_DELAY};
use crate::mailbox::store::Refusal;
use crate::mailbox::{Effect, Message, MAX_ID, MAX_SEQ};
use crate::reply::{error, Reply};
use crate::{metrics, server, stanza};
use redis_module::{Context, RedisString};
use smallvec::SmallVec;

/// Puts a message back (a returning user, from the archive), keeping its
/// time (`ts`, Unix ms) and, when given and free, its seq; it is owed as a
/// message stored now, offline for every registered device (or held for
/// the first one). An id the mailbox holds stores nothing and answers its
/// seq — unless that message waits in the archive queue: then it comes
/// back from there. Replies `[seq, id]`.
pub fn import(ctx: &Context, args: &[RedisString]) -> Answer {
    let [_, user, ts, id, raw, rest @ ..] = args else {
        return Err(Reply::WrongArity);
    };
    let ts = parse_u64(ts.as_slice(), "ts")?;
    let ts = i64::try_from(ts).map_err(|_| error("ERR ts is too large"))?;
    // A message comes back with the time it was stored: never one ahead of
    // this server's clock by more than a clock's skew (a later store in
    // the mailbox would take it on, and its `<delay>` stamp would lie).
    let latest = server::now_ms().saturating_add(MAX_CLOCK_SKEW_MS);
    if ts > latest {
        return Err(error(format!(
            "ERR ts {ts} is ahead of this server's clock by more than {MAX_CLOCK_SKEW_MS} ms"
        )));
    }
    let id = id.as_slice();
    if id.is_empty() || id.len() > MAX_ID {
        return Err(error(format!("ERR id must be 1 to {MAX_ID} bytes")));
    }
    let mut want_seq = None;
    let mut it = rest.iter();
    while let Some(o) = it.next() {
        if !is(o.as_slice(), "SEQ") {
            return Err(unknown_option(o.as_slice()));
        }
        let v = it.next().ok_or_else(|| error("ERR SEQ needs a value"))?;
        let s = parse_u64(v.as_slice(), "SEQ")?;
        // Seq 0 is no message: `AFTER 0` starts a page and `first` 0 says
        // the mailbox holds none (SPEC §4); a seq is a RESP integer.
        if s == 0 || s > MAX_SEQ {
            return Err(error(format!("ERR SEQ must be 1 to {MAX_SEQ}")));
        }
        want_seq = Some(s);
    }
    let stanza_bytes = raw.as_slice();
    let max_stanza = config::get(&config::MAX_STANZA_BYTES).max(0) as usize;
    if stanza_bytes.len() > max_stanza {
        return Err(error(format!(
            "ERR stanza is {} bytes, more than max-stanza-bytes ({max_stanza})",
            stanza_bytes.len()
        )));
    }
    let parsed = stanza::parse(stanza_bytes).map_err(error)?;
    let mut w = Writer::open(ctx, user)?;
    let now = server::now_ms();
    if let Some(held) = w.mailbox().and_then(|m| m.find_id(id)) {
        if w.mailbox().is_some_and(|m| m.is_queued(held)) {
            w.commit(
                now,
                &[Effect::Unqueue { seqs: vec![held] }],
                Propagate::Effects,
            );
            metrics::add(&metrics::IMPORTED, 1);
        }
        return Ok(stored(held, id));
    }
    let max_messages = config::get(&config::MAX_MESSAGES).max(0) as u64;
    let max_bytes = config::get(&config::MAX_BYTES).max(0) as u64;
    if let Some(m) = w.mailbox() {
        let (count, bytes) = (
            m.log.len() - m.queued_count(),
            m.log.bytes() - m.queued_bytes(),
        );
        if count + 1 > max_messages || bytes + stanza_bytes.len() as u64 > max_bytes {
            metrics::add(&metrics::REJECTED, 1);
            return Err(error(format!(
                "IMFULL mailbox holds {count} messages and {bytes} bytes (max-messages {max_messages}, max-bytes {max_bytes})"
            )));
        }
    }
    let mut effects: SmallVec<[Effect<'_>; 3]> = SmallVec::new();
    effects.extend(keyspace::create_if_new(w.mailbox(), now));
    let next = match (w.mailbox(), effects.first()) {
        (Some(m), _) => m.next_seq,
        (None, Some(Effect::Create { next_seq })) => *next_seq,
        (None, _) => 0,
    };
    // A given seq is kept where it is free: below the counter (a seq the
    // mailbox, or the server before a new key, gave before) and held by no
    // message. One at or above the counter takes the counter's seq: it
    // would move the counter, and every later mailbox's (which start
    // above every seq the server has given), toward the end of the seqs
    // a reply carries (SPEC §6).
    let seq = want_seq
        .filter(|&s| s < next && !w.mailbox().is_some_and(|m| m.log.contains(s)))
        .unwrap_or(next);
    if seq > MAX_SEQ {
        return Err(refusal(Refusal::SeqExhausted));
    }
    let flags = if parsed.has_delay { HAS_DELAY } else { 0 };
    effects.push(Effect::Store {
        message: Message {
            seq,
            ts,
            flags,
            id: IdSpec::Own(id),
            stanza: stanza_bytes,
        },
        pending: Default::default(),
    });
    effects.push(Effect::Imported);
    w.commit(now, &effects, Propagate::Effects);
    metrics::add(&metrics::IMPORTED, 1);
    Ok(stored(seq, id))
}

/// How far (ms) `IM.IMPORT`'s `ts` may be ahead of the server's clock:
/// the skew between the clocks of the nodes that stored and archived it.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

fn stored(seq: u64, id: &[u8]) -> Reply {
    Reply::Array(vec![seq.into(), Reply::Bulk(id.to_vec())])
}
