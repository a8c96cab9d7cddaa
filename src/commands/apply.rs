//! IM.APPLY <user> <effects> [<stanza>]: a primary's change as replicas and
//! the AOF receive it (`keyspace::Writer::commit` writes it). Refused to
//! clients.

use super::Answer;
use crate::keyspace::{Propagate, Writer};
use crate::mailbox::effect;
use crate::reply::{error, Reply};
use crate::{log, server};
use redis_module::{Context, RedisString};
use std::sync::atomic::{AtomicI64, Ordering};

/// The error of an internal command sent by a client.
pub const INTERNAL: &str =
    "ERR this command is written by the module for replicas and the AOF, not sent by clients";

/// Applies the effects. From the primary or the AOF it never answers an
/// error (a replica does not answer its primary): effects that do not
/// decode are logged and skipped.
pub fn apply(ctx: &Context, args: &[RedisString]) -> Answer {
    let [_, user, blob, extra @ ..] = args else {
        return Err(Reply::WrongArity);
    };
    if extra.len() > 1 {
        return Err(Reply::WrongArity);
    }
    if !server::replicated_or_loading(ctx) {
        return Err(error(INTERNAL));
    }
    let extra: Vec<&[u8]> = extra.iter().map(|a| a.as_slice()).collect();
    let Some((now, effects)) = effect::decode(blob.as_slice(), &extra) else {
        log::warning("redis-im: IM.APPLY with effects that do not decode");
        return Ok(Reply::Simple("OK".into()));
    };
    let Ok(mut w) = Writer::open(ctx, user) else {
        other_type_here(user.as_slice());
        return Ok(Reply::Simple("OK".into()));
    };
    w.commit(now, &effects, Propagate::Verbatim);
    Ok(Reply::Simple("OK".into()))
}

/// When a line about a primary's change not applied was last written
/// (Unix ms).
static LAST_LOGGED: AtomicI64 = AtomicI64::new(0);

/// The primary changed a mailbox whose key holds another type here (a
/// writable replica's own `SET`, say): the change cannot apply, and this
/// replica now differs from its primary. Logged at most once a second
/// (each change of that mailbox would say it again).
fn other_type_here(user: &[u8]) {
    let now = server::now_ms();
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 1000
        || LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    log::warning(&format!(
        "redis-im: the primary changed mailbox '{}', which holds another type here: the change is not applied and this replica differs from its primary (a write made on this replica?)",
        log::escape(user, 128)
    ));
}
