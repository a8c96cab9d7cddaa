//! Whether a command's change has anywhere to go.
//!
//! A write is handed to the server as `IM.APPLY <key> <effects>`
//! (`RM_Replicate`), which the server writes to the AOF and the replication
//! stream. When the server has neither (no AOF, and a primary with no
//! replica and no replication backlog) it drops the call, but only after
//! paying for it: Redis 7.0 looks the command name up through new strings
//! and builds an argument vector, about a tenth of an `IM.STORE`. Then a
//! command only counts its change (`RM_ReplicateVerbatim`, which in that
//! state writes nothing and marks the data set dirty for save points) and
//! skips encoding the effects.
//!
//! The answer is cached and looked up again (context flags and `INFO
//! replication`) after every event that can give a write somewhere to go:
//! a fork (a replica's full sync creates the backlog and forks before any
//! write reaches it; turning the AOF on forks its rewrite), a role change,
//! a replica coming or going, a configuration change. A server that just
//! started has not been looked at yet. Anything unexpected in the answer
//! counts as "propagate", and so does everything when the module could not
//! subscribe to those events.

use redis_module::{raw, Context};
use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const NEEDED: u8 = 1;
const NOT_NEEDED: u8 = 2;
/// The events are not heard: every change propagates.
const ALWAYS: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// True when a change made now may reach the AOF or a replica.
pub fn needed(ctx: &Context) -> bool {
    match STATE.load(Ordering::Relaxed) {
        NEEDED | ALWAYS => true,
        NOT_NEEDED => false,
        _ => {
            let needed = look(ctx);
            STATE.store(if needed { NEEDED } else { NOT_NEEDED }, Ordering::Relaxed);
            needed
        }
    }
}

/// Forgets the cached answer: the next write looks again.
pub fn recheck() {
    let _ = STATE.compare_exchange(NEEDED, UNKNOWN, Ordering::Relaxed, Ordering::Relaxed);
    let _ = STATE.compare_exchange(NOT_NEEDED, UNKNOWN, Ordering::Relaxed, Ordering::Relaxed);
}

fn look(ctx: &Context) -> bool {
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.get_raw())) } as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_AOF != 0 || flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0
    {
        return true;
    }
    let get_info = unsafe { raw::RedisModule_GetServerInfo };
    if get_info.is_none() {
        return true;
    }
    let info = ctx.server_info("replication");
    let zero = |field: &str| info.field(field).is_some_and(|v| v.as_slice() == b"0");
    !(zero("connected_slaves") && zero("repl_backlog_active"))
}

/// The events after which the answer may change are not heard: from now
/// on every change propagates.
pub fn always() {
    STATE.store(ALWAYS, Ordering::Relaxed);
}
