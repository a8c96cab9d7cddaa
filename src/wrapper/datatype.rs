//! The mailbox data type: the callbacks the server calls to save, load,
//! rewrite, digest, measure, copy, unlink and free a mailbox. Each runs
//! inside [`guard`]; what a failed one answers is the server's "nothing"
//! (a null value, no bytes), never a crash.

use super::guard;
use crate::log;
use crate::mailbox::ids::Maybe;
use crate::mailbox::persist::ENCODING_VERSION;
use crate::mailbox::Mailbox;
use crate::metrics;
use redis_module::native_types::RedisType;
use redis_module::raw;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;

/// Messages per RDB buffer / AOF command, in bytes of encoding.
const BATCH: usize = 256 * 1024;

pub static MAILBOX_TYPE: RedisType = RedisType::new(
    "imMailbox",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: Some(unlink),
    },
);

/// Why [`load`] gave no mailbox.
enum Refused {
    /// A short read, or data that does not decode: logged by the caller.
    Corrupt,
    /// Refused for a reason already logged (the encoding version, a
    /// mailbox that contradicts itself, a repeated id in a `RESTORE`).
    Logged,
}

/// Reads a mailbox written by [`rdb_save`].
fn load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> Result<Mailbox, Refused> {
    use Refused::Corrupt;
    if encver != ENCODING_VERSION {
        log::warning(&format!(
            "redis-im: mailbox encoding version {encver} is not supported (this module reads {ENCODING_VERSION})"
        ));
        return Err(Refused::Logged);
    }
    let header = raw::load_string_buffer(rdb).map_err(|_| Corrupt)?;
    let (mut mb, n) = Mailbox::decode_header(header.as_ref()).ok_or(Corrupt)?;
    let mut maybe = Maybe::default();
    while mb.log.len() < n {
        let buf = raw::load_string_buffer(rdb).map_err(|_| Corrupt)?;
        if mb.load_messages(buf.as_ref(), &mut maybe).ok_or(Corrupt)? == 0 {
            return Err(Corrupt);
        }
    }
    if mb.log.len() != n {
        return Err(Corrupt);
    }
    if let Err(why) = mb.consistent() {
        log::warning(&format!("redis-im: a mailbox refused on load: {why}"));
        return Err(Refused::Logged);
    }
    let repeated = mb.repeated_ids(&mut maybe);
    if repeated > 0 {
        let key = key_name(rdb);
        if !server_loading(rdb) {
            log::warning(&format!(
                "redis-im: a mailbox refused on RESTORE ({key}): {repeated} of its messages have an id another of its messages has (ids are unique within a mailbox)"
            ));
            return Err(Refused::Logged);
        }
        metrics::repeated_ids_kept(&key, repeated);
    }
    Ok(mb)
}

/// Whether the server is loading its data (the RDB or the AOF at
/// startup, `DEBUG RELOAD`, a replica's full sync) rather than running a
/// `RESTORE` (a client's payload, `MIGRATE`'s, or a `RESTORE` replayed
/// from the AOF, which runs while loading). True when the server cannot
/// say: refusing a mailbox while loading stops the server, which is worse
/// than keeping what the file holds.
fn server_loading(rdb: *mut raw::RedisModuleIO) -> bool {
    // SAFETY: a valid IO handle; the context it gives is the IO's own and
    // lives until the load returns.
    unsafe {
        let (Some(ctx_of), Some(flags)) = (
            raw::RedisModule_GetContextFromIO,
            raw::RedisModule_GetContextFlags,
        ) else {
            return true;
        };
        let ctx = ctx_of(rdb);
        if ctx.is_null() {
            return true;
        }
        let loading = raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING;
        (flags(ctx) as u32) & loading != 0
    }
}

/// The name of the key being loaded, escaped for a log line; `?` when the
/// server does not say.
fn key_name(rdb: *mut raw::RedisModuleIO) -> String {
    // SAFETY: a valid IO handle; the name (if any) is the server's and
    // outlives this call.
    unsafe {
        match raw::RedisModule_GetKeyNameFromIO.map(|f| f(rdb)) {
            Some(name) if !name.is_null() => {
                let bytes = redis_module::RedisString::string_as_slice(name as *mut _);
                format!("key '{}'", log::escape(bytes, 200))
            }
            _ => "key ?".into(),
        }
    }
}

/// # Safety
/// Called by the server with a valid IO handle while loading an RDB (or
/// a `RESTORE` payload, which any client may craft).
unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guard("loading a mailbox", ptr::null_mut, || {
        match load(rdb, encver) {
            Ok(mb) => {
                metrics::mailbox_added(&mb);
                Box::into_raw(Box::new(mb)).cast()
            }
            Err(Refused::Corrupt) => {
                log::warning(
                    "redis-im: a mailbox in the RDB or RESTORE payload is truncated or corrupt",
                );
                ptr::null_mut()
            }
            Err(Refused::Logged) => ptr::null_mut(),
        }
    })
}

/// # Safety
/// `value` is a mailbox created by this module.
unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let mb = &*value.cast::<Mailbox>();
    guard(
        "saving a mailbox",
        || (),
        || {
            raw::save_slice(rdb, &mb.encode_header());
            mb.encode_messages(BATCH, |b| raw::save_slice(rdb, b));
        },
    );
}

/// Rewrites a mailbox as `IM.LOAD <key> HEAD <blob>` followed by
/// `IM.LOAD <key> MSGS <blob>` commands.
///
/// # Safety
/// `value` is a mailbox created by this module; `key` is its name.
unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let mb = &*value.cast::<Mailbox>();
    guard(
        "rewriting a mailbox into the AOF",
        || (),
        || {
            let Some(emit) = raw::RedisModule_EmitAOF else {
                return;
            };
            let h = mb.encode_header();
            emit(
                aof,
                c"IM.LOAD".as_ptr(),
                c"scb".as_ptr(),
                key,
                c"HEAD".as_ptr(),
                h.as_ptr().cast::<c_char>(),
                h.len(),
            );
            mb.encode_messages(BATCH, |b| {
                emit(
                    aof,
                    c"IM.LOAD".as_ptr(),
                    c"scb".as_ptr(),
                    key,
                    c"MSGS".as_ptr(),
                    b.as_ptr().cast::<c_char>(),
                    b.len(),
                );
            });
        },
    );
}

/// # Safety
/// `value` is a mailbox created by this module.
unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    let mb = &*value.cast::<Mailbox>();
    guard("measuring a mailbox", || 0, || mb.mem_usage())
}

/// The digest covers the canonical encoding, so a primary, its replica and
/// an AOF replay agree whatever their in-memory layout.
///
/// # Safety
/// `value` is a mailbox created by this module.
unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let mb = &*value.cast::<Mailbox>();
    guard(
        "digesting a mailbox",
        || (),
        || {
            let (Some(add), Some(end)) = (
                raw::RedisModule_DigestAddStringBuffer,
                raw::RedisModule_DigestEndSequence,
            ) else {
                return;
            };
            let h = mb.encode_header();
            add(md, h.as_ptr().cast::<c_char>(), h.len());
            mb.encode_messages(BATCH, |b| add(md, b.as_ptr().cast::<c_char>(), b.len()));
            end(md);
        },
    );
}

/// # Safety
/// `value` is a mailbox created by this module, freed exactly once (on
/// the main thread or a lazy-free thread).
unsafe extern "C" fn free(value: *mut c_void) {
    let mb = Box::from_raw(value.cast::<Mailbox>());
    guard(
        "freeing a mailbox",
        || (),
        move || {
            metrics::mailbox_removed(&mb);
            drop(mb);
        },
    );
}

/// # Safety
/// `value` is a mailbox created by this module.
unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    let mb = &*value.cast::<Mailbox>();
    guard("copying a mailbox", ptr::null_mut, || {
        match mb.copy_via_encoding(BATCH) {
            Some(c) => {
                metrics::mailbox_added(&c);
                Box::into_raw(Box::new(c)).cast()
            }
            None => ptr::null_mut(),
        }
    })
}

/// A mailbox leaves the keyspace (DEL, expiry, eviction, overwrite,
/// RENAME's old name): its schedule entry goes with it.
///
/// # Safety
/// Called by the server with a valid key option context.
unsafe extern "C" fn unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    if value.is_null() {
        return;
    }
    let mb = &*value.cast::<Mailbox>();
    let name = raw::RedisModule_GetKeyNameFromOptCtx.map_or(std::ptr::null(), |f| f(ctx));
    let db = raw::RedisModule_GetDbIdFromOptCtx.map_or(0, |f| f(ctx));
    if !name.is_null() {
        let key = redis_module::RedisString::string_as_slice(name as *mut _);
        guard(
            "noting a mailbox that leaves",
            || (),
            || crate::losses::unlinked(key, db, mb),
        );
    }
    guard(
        "unlinking a mailbox",
        || (),
        || {
            crate::timer::forget(mb);
            crate::archive::forget(mb);
        },
    );
}
