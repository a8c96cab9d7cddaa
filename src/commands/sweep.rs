//! IM.SWEEP [LIMIT <n>] (SPEC §5)

use super::{is, parse_u64, unknown_option, Answer};
use crate::reply::{error, Reply};
use crate::{server, sweep, timer};
use redis_module::{Context, RedisString};

/// Does the timer's due work now, on this node, with no time budget (at
/// most `LIMIT` mailboxes); answers what it did.
pub fn sweep(ctx: &Context, args: &[RedisString]) -> Answer {
    let limit = match args {
        [_] => None,
        [_, o, n] if is(o.as_slice(), "LIMIT") => Some(parse_u64(n.as_slice(), "LIMIT")? as usize),
        [_, o, ..] if !is(o.as_slice(), "LIMIT") => return Err(unknown_option(o.as_slice())),
        _ => return Err(Reply::WrongArity),
    };
    if !server::is_primary(ctx) {
        return Err(error("ERR IM.SWEEP runs on the primary only"));
    }
    if server::writes_paused() {
        return Err(error(
            "ERR writes are paused on this server (CLIENT PAUSE, FAILOVER); the timer does this work right after",
        ));
    }
    let r = sweep::run(ctx, None, limit);
    let now = server::now_ms();
    let next = timer::next_due().map_or(-1, |d| (d - now).max(0));
    Ok(Reply::Map(vec![
        ("resent", r.resent.into()),
        ("expired", r.expired.into()),
        ("kicked", r.kicked.into()),
        ("archived", r.archived.into()),
        ("dropped", r.dropped.into()),
        ("forgotten", r.forgotten.into()),
        ("next", Reply::Int(next)),
        ("lag", Reply::Int(r.lag)),
    ]))
}
