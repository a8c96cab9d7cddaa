//! The module's own calls into the server, made safe for any bytes.
//!
//! The `redis-module` crate builds server strings through a C string, which
//! panics on a NUL byte; keys, device names and channels are binary-safe
//! (SPEC §1), so every string made from them is made here, from a slice.

use crate::reply::Reply;
use redis_module::{raw, Context, RedisString};
use std::sync::atomic::{AtomicBool, Ordering};

/// The time the module stamps changes with: Unix ms, from the system
/// clock (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A server string holding exactly `bytes` (any bytes, NUL included),
/// freed with the context's automatic memory or when dropped.
pub fn string(ctx: &Context, bytes: &[u8]) -> RedisString {
    RedisString::create_from_slice(ctx.get_raw(), bytes)
}

/// The context's `REDISMODULE_CTX_FLAGS_*`.
pub fn flags(ctx: &Context) -> u32 {
    // SAFETY: a valid context; a server without the call answers 0.
    (unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.get_raw())) }) as u32
}

/// True on a primary (a server that is not a replica).
pub fn is_primary(ctx: &Context) -> bool {
    flags(ctx) & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

/// The server was a replica when it last told the module its role (at
/// load time, and on every role change).
static REPLICA: AtomicBool = AtomicBool::new(false);

/// Notes the server's role: at load time (from the context's flags) and
/// on every `REPLICATION_ROLE_CHANGED` event.
pub fn note_role(replica: bool) {
    REPLICA.store(replica, Ordering::Relaxed);
}

/// Whether the server was a replica when it last told the module its role.
pub fn replica_noted() -> bool {
    REPLICA.load(Ordering::Relaxed)
}

/// The server is loading its data (an RDB or the AOF at startup, a
/// replica's full sync, `DEBUG RELOAD`'s load), as its `LOADING` events
/// last said.
static LOADING: AtomicBool = AtomicBool::new(false);

/// Notes that loading started (`true`) or ended or failed (`false`).
pub fn note_loading(loading: bool) {
    LOADING.store(loading, Ordering::Relaxed);
}

/// Whether the server is loading its data, as its events last said.
pub fn loading_noted() -> bool {
    LOADING.load(Ordering::Relaxed)
}

/// The error of a client's write on a replica.
pub const REPLICA_WRITE: &str = "READONLY redis-im takes changes on the primary only, even where the replica is writable (replica-read-only no): a mailbox changed here would no longer take the primary's changes";

/// Refuses a write a client sends to a replica, writable or not (SPEC
/// §8: a replica's mailbox is the primary's): a change made there gives
/// the mailbox seqs, messages or devices the primary's later changes do
/// not fit, and the replica then keeps apart from its primary without a
/// word. The primary's own changes (`IM.APPLY`, `IM.LOAD`) and the AOF's
/// pass. On a primary this is one load of a flag; where the flag says
/// replica, the context's flags decide, so a stale flag never refuses a
/// primary.
pub fn refuse_on_replica(ctx: &Context) -> Result<(), Reply> {
    if !replica_noted() {
        return Ok(());
    }
    let f = flags(ctx);
    if f & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
        || f & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) != 0
    {
        return Ok(());
    }
    Err(crate::reply::error(REPLICA_WRITE))
}

/// Whether the user running the command may access pub/sub `channel`
/// (its ACL `&pattern`s, which `PUBLISH` obeys too;
/// `RedisModule_ACLCheckChannelPermissions`, Redis 7.0+). True where the
/// server has no such call, and where the command runs without a user
/// (the AOF, a primary's link).
pub fn may_access_channel(ctx: &Context, channel: &[u8]) -> bool {
    // SAFETY: a command's context; the user name and the user are freed
    // here, the channel string when dropped.
    unsafe {
        let (Some(current), Some(user_of), Some(check), Some(free_user), Some(free_string)) = (
            raw::RedisModule_GetCurrentUserName,
            raw::RedisModule_GetModuleUserFromUserName,
            raw::RedisModule_ACLCheckChannelPermissions,
            raw::RedisModule_FreeModuleUser,
            raw::RedisModule_FreeString,
        ) else {
            return true;
        };
        let name = current(ctx.get_raw());
        if name.is_null() {
            return true;
        }
        let user = user_of(name);
        let allowed = user.is_null() || {
            let ch = string(ctx, channel);
            let flags = raw::REDISMODULE_CMD_CHANNEL_PUBLISH as std::os::raw::c_int;
            let ok = check(user, ch.inner, flags) == raw::REDISMODULE_OK as std::os::raw::c_int;
            free_user(user);
            ok
        };
        free_string(ctx.get_raw(), name);
        allowed
    }
}

/// True while the command comes from the primary or the AOF.
pub fn replicated_or_loading(ctx: &Context) -> bool {
    flags(ctx) & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) != 0
}

/// True while the server asks modules to keep the replication stream
/// still: `CLIENT PAUSE WRITE`/`ALL`, `FAILOVER`, a `CLUSTER FAILOVER`
/// on this primary, a `SHUTDOWN` waiting for its replicas
/// (`RedisModule_AvoidReplicaTraffic`, Redis 6.0+). Anything the module
/// writes outside a client's command would then be propagated while the
/// server forbids it (Redis asserts on it), so no such write happens
/// (SPEC §5).
pub fn writes_paused() -> bool {
    // SAFETY: no arguments; a server without the call never pauses for us.
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) }
}

pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: a valid context.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.get_raw())) }
}

/// Selects `db` on the context's client; false when it does not exist.
pub fn select_db(ctx: &Context, db: i32) -> bool {
    // SAFETY: a valid context.
    unsafe {
        raw::RedisModule_SelectDb
            .is_some_and(|f| f(ctx.get_raw(), db) == raw::REDISMODULE_OK as i32)
    }
}

/// The db selected when it was made, selected again when it is dropped,
/// whatever happens in between (a panic included): a sweep that visits
/// mailboxes of every db leaves the client of `IM.SWEEP` where it was.
pub struct KeepDb<'c> {
    ctx: &'c Context,
    db: i32,
}

impl<'c> KeepDb<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        KeepDb {
            ctx,
            db: selected_db(ctx),
        }
    }
}

impl Drop for KeepDb<'_> {
    fn drop(&mut self) {
        select_db(self.ctx, self.db);
    }
}

/// Publishes `message` on `channel` (both any bytes).
///
/// The server string of the last channel is kept for the next publish on
/// the same channel (most events go to the same few channels; push hints
/// all to one): the server only reads a channel while it publishes.
pub fn publish(ctx: &Context, channel: &[u8], message: &[u8]) {
    thread_local! {
        /// The last channel: its bytes and a server string of them, made
        /// without a context and freed when another channel replaces it.
        static CHANNEL: std::cell::RefCell<(Vec<u8>, *mut raw::RedisModuleString)> =
            const { std::cell::RefCell::new((Vec::new(), std::ptr::null_mut())) };
    }
    let (Some(publish), Some(create), Some(free)) = (unsafe {
        (
            raw::RedisModule_PublishMessage,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        )
    }) else {
        return;
    };
    let message = string(ctx, message);
    CHANNEL.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            let channel = string(ctx, channel);
            // SAFETY: a valid context and two strings it owns until they
            // drop.
            unsafe { publish(ctx.get_raw(), channel.inner, message.inner) };
            return;
        };
        let (bytes, string) = &mut *c;
        // SAFETY: strings made and freed here, without a context; the
        // server only reads the channel while it publishes.
        unsafe {
            if string.is_null() || bytes.as_slice() != channel {
                if !string.is_null() {
                    free(std::ptr::null_mut(), *string);
                }
                *string = create(std::ptr::null_mut(), channel.as_ptr().cast(), channel.len());
                bytes.clear();
                bytes.extend_from_slice(channel);
            }
            publish(ctx.get_raw(), *string, message.inner);
        }
    });
}
