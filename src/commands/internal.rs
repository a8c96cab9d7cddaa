//! Commands the module writes for itself: `IM.APPLY` carries a primary's
//! effects to replicas and the AOF; `IM.LOAD` rebuilds a mailbox from an
//! AOF rewrite. Neither is meant for clients.

use super::{Propagate, Writer};
use crate::mailbox::{effect, Mailbox};
use crate::reply::{error, Reply};
use crate::server::replicated_or_loading;
use redis_module::{Context, RedisString};

const INTERNAL: &str =
    "ERR this command is written by the module for replicas and the AOF, not sent by clients";

/// IM.APPLY <user> <effects> [<stanza>]
pub fn apply(ctx: &Context, args: &[RedisString]) -> Reply {
    let [_, user, blob, extra @ ..] = args else {
        return Reply::WrongArity;
    };
    if extra.len() > 1 {
        return Reply::WrongArity;
    }
    if !replicated_or_loading(ctx) {
        return error(INTERNAL);
    }
    // From here on, never an error: a replica does not answer its primary.
    let extra: Vec<&[u8]> = extra.iter().map(|a| a.as_slice()).collect();
    let Some((now, effects)) = effect::decode(blob.as_slice(), &extra) else {
        crate::log::warning("redis-im: IM.APPLY with effects that do not decode");
        return Reply::Simple("OK");
    };
    let Ok(mut w) = Writer::open(ctx, user) else {
        return Reply::Simple("OK");
    };
    w.commit(now, &effects, Propagate::Verbatim);
    Reply::Simple("OK")
}

/// IM.LOAD <user> HEAD <blob> | IM.LOAD <user> MSGS <blob>
pub fn load(ctx: &Context, args: &[RedisString]) -> Reply {
    let [_, user, part, blob] = args else {
        return Reply::WrongArity;
    };
    if !replicated_or_loading(ctx) {
        return error(INTERNAL);
    }
    let mut w = match Writer::open(ctx, user) {
        Ok(w) => w,
        Err(e) => return e,
    };
    let part = part.as_slice();
    if part.eq_ignore_ascii_case(b"HEAD") {
        let Some((mb, _)) = Mailbox::decode_header(blob.as_slice()) else {
            return error("ERR IM.LOAD HEAD does not decode");
        };
        w.replace(mb);
    } else if part.eq_ignore_ascii_case(b"MSGS") {
        let Some(mb) = w.mailbox_mut() else {
            return error("ERR IM.LOAD MSGS needs IM.LOAD HEAD first");
        };
        let before = crate::metrics::Gauges::of(mb);
        let loaded = mb.load_messages(blob.as_slice());
        before.update(&crate::metrics::Gauges::of(mb));
        if loaded.is_none() {
            return error("ERR IM.LOAD MSGS does not decode");
        }
    } else {
        return error("ERR IM.LOAD takes HEAD or MSGS");
    }
    if let Some(mb) = w.mailbox() {
        crate::sweep::reschedule(ctx, user.as_slice(), mb);
    }
    ctx.replicate_verbatim();
    Reply::Simple("OK")
}
