//! IM.APPLY <user> <effects> [<stanza>]: a primary's change as replicas and
//! the AOF receive it (`keyspace::Writer::commit` writes it). Refused to
//! clients.

use super::Answer;
use crate::keyspace::{Propagate, Writer};
use crate::mailbox::effect;
use crate::reply::{error, Reply};
use crate::{log, server};
use redis_module::{Context, RedisString};

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
        return Ok(Reply::Simple("OK"));
    };
    let Ok(mut w) = Writer::open(ctx, user) else {
        return Ok(Reply::Simple("OK"));
    };
    w.commit(now, &effects, Propagate::Verbatim);
    Ok(Reply::Simple("OK"))
}
