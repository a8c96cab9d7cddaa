//! IM.INFO <user> (SPEC §4)

use super::{user_only, Answer};
use crate::keyspace;
use crate::reply::Reply;
use redis_module::{Context, RedisString};

/// The mailbox's counts: `messages`, `bytes`, `devices`, `online`,
/// `pending`, `first`, `last` (seq), `next_seq`, and `queued` (of the
/// messages, those waiting in the archive queue); zeros for a missing key.
pub fn info(ctx: &Context, args: &[RedisString]) -> Answer {
    let mb = keyspace::read(ctx, user_only(args)?)?;
    let (mut messages, mut bytes, mut devices, mut online) = (0, 0, 0, 0);
    let (mut pending, mut first, mut last, mut next, mut queued) = (0, 0, 0, 0, 0);
    if let Some(m) = mb {
        messages = m.log.len();
        bytes = m.log.bytes();
        devices = m.devices.len() as u64;
        online = m.devices.iter().filter(|d| d.online()).count() as u64;
        pending = m.pending_total();
        first = m.log.first().map_or(0, |x| x.seq);
        last = m.log.last().map_or(0, |x| x.seq);
        next = m.next_seq;
        queued = m.queued_count();
    }
    Ok(Reply::Map(vec![
        ("messages", messages.into()),
        ("bytes", bytes.into()),
        ("devices", devices.into()),
        ("online", online.into()),
        ("pending", pending.into()),
        ("first", first.into()),
        ("last", last.into()),
        ("next_seq", next.into()),
        ("queued", queued.into()),
    ]))
}
