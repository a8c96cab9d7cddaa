//! IM.SWEEP.

use super::{is, parse_u64};
use crate::reply::{error, Reply};
use crate::sweep;
use redis_module::{Context, RedisString};

/// IM.SWEEP [LIMIT <n>]
pub fn sweep(ctx: &Context, args: &[RedisString]) -> Reply {
    let limit = match args {
        [_] => None,
        [_, o, n] if is(o.as_slice(), "LIMIT") => match parse_u64(n.as_slice(), "LIMIT") {
            Ok(n) => Some(n as usize),
            Err(e) => return e,
        },
        [_, o, ..] if !is(o.as_slice(), "LIMIT") => return super::unknown_option(o.as_slice()),
        _ => return Reply::WrongArity,
    };
    if !sweep::is_primary(ctx) {
        return error("ERR IM.SWEEP runs on the primary only");
    }
    if crate::server::writes_paused() {
        return error("ERR writes are paused on this server (CLIENT PAUSE, FAILOVER); the timer does this work right after");
    }
    let r = sweep::run(ctx, None, limit);
    Reply::Map(vec![
        ("resent", r.resent.into()),
        ("expired", r.expired.into()),
        ("kicked", r.kicked.into()),
        ("archived", r.archived.into()),
        ("dropped", r.dropped.into()),
        ("forgotten", r.forgotten.into()),
        ("next", Reply::Int(r.next)),
    ])
}
