//! Server events and keyspace notifications the module listens to, and the
//! scan of the keyspace that rebuilds the timer's schedule.
//!
//! - loading ended, a flush, `SWAPDB`, a change of a timer setting: the
//!   schedule is rebuilt from every mailbox;
//! - a role change: the timer is armed on a primary, stopped on a replica;
//! - a fork, a replica coming or going, a role or configuration change:
//!   whether writes propagate is looked up again (`propagation`);
//! - a mailbox arriving under a new name (`RENAME`, `MOVE`, `COPY`,
//!   `RESTORE`): it is scheduled there.
//!
//! None of them writes data: a callback outside a client's command that
//! wrote would propagate while the server may be pausing writes (SPEC §5).

use super::guard;
use crate::mailbox::Mailbox;
use crate::{archive, keyspace, log, propagation, server, timer};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

/// Subscribes to every event above; false (with a warning logged) when the
/// server refused one.
pub fn subscribe(ctx: &Context) -> bool {
    let events: [(u64, raw::RedisModuleEventCallback); 7] = [
        (raw::REDISMODULE_EVENT_LOADING, Some(on_loading)),
        (raw::REDISMODULE_EVENT_FLUSHDB, Some(on_flush)),
        (raw::REDISMODULE_EVENT_SWAPDB, Some(on_swapdb)),
        (
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            Some(on_role_changed),
        ),
        (raw::REDISMODULE_EVENT_CONFIG, Some(on_config_changed)),
        (
            raw::REDISMODULE_EVENT_FORK_CHILD,
            Some(on_propagation_event),
        ),
        (
            raw::REDISMODULE_EVENT_REPLICA_CHANGE,
            Some(on_propagation_event),
        ),
    ];
    for (id, callback) in events {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        if raw::subscribe_to_server_event(ctx.get_raw(), event, callback) == raw::Status::Err {
            log::warning(&format!(
                "redis-im: could not subscribe to server event {id}"
            ));
            if matches!(
                id,
                raw::REDISMODULE_EVENT_FORK_CHILD | raw::REDISMODULE_EVENT_REPLICA_CHANGE
            ) {
                // Without them, every change is propagated.
                propagation::always();
                continue;
            }
            return false;
        }
    }
    // SAFETY: the load context; the callback lives as long as the module.
    let subscribed = unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|f| {
            f(
                ctx.get_raw(),
                raw::REDISMODULE_NOTIFY_GENERIC,
                Some(on_keyspace_event),
            ) == raw::REDISMODULE_OK as c_int
        })
    };
    if !subscribed {
        log::warning("redis-im: could not subscribe to keyspace events");
    }
    subscribed
}

/// # Safety
/// Called by the server on its main thread with a valid context.
unsafe extern "C" fn on_loading(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        let ctx = Context::new(ctx);
        guard(
            "rebuilding the schedule after loading",
            || (),
            || rebuild(&ctx),
        );
    }
}

/// # Safety
/// Called by the server on its main thread with a valid context.
unsafe extern "C" fn on_flush(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
        let ctx = Context::new(ctx);
        guard(
            "rebuilding the schedule after a flush",
            || (),
            || rebuild(&ctx),
        );
    }
}

/// `SWAPDB` moves every mailbox of two dbs: the schedule is rebuilt.
///
/// # Safety
/// Called by the server on its main thread with a valid context.
unsafe extern "C" fn on_swapdb(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    let ctx = Context::new(ctx);
    guard(
        "rebuilding the schedule after SWAPDB",
        || (),
        || rebuild(&ctx),
    );
}

/// # Safety
/// Called by the server on its main thread with a valid context.
unsafe extern "C" fn on_role_changed(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    let ctx = Context::new(ctx);
    guard(
        "a role change",
        || (),
        || {
            propagation::recheck();
            if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
                timer::arm(&ctx);
            } else {
                timer::disarm(&ctx);
            }
        },
    );
}

/// Settings whose change moves deadlines: the schedule is rebuilt.
const TIMER_SETTINGS: &[&[u8]] = &[
    b"im.resend-interval",
    b"im.ack-timeout",
    b"im.device-idle",
    b"im.retention",
    b"im.archive",
    b"im.mailbox-idle",
];

/// # Safety
/// Called by the server on its main thread with a valid context; `data`
/// is a `RedisModuleConfigChange` for `REDISMODULE_SUBEVENT_CONFIG_CHANGE`.
unsafe extern "C" fn on_config_changed(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_CONFIG_CHANGE || data.is_null() {
        return;
    }
    let ctx = Context::new(ctx);
    let change = &*data.cast::<raw::RedisModuleConfigChange>();
    let names: Vec<&[u8]> = if change.config_names.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(change.config_names, change.num_changes as usize)
            .iter()
            .filter(|p| !p.is_null())
            .map(|&p| CStr::from_ptr(p as *const c_char).to_bytes())
            .collect()
    };
    guard(
        "a configuration change",
        || (),
        || {
            propagation::recheck();
            if names.iter().any(|n| TIMER_SETTINGS.contains(n)) {
                rebuild(&ctx);
            } else if names.contains(&&b"im.sweep-interval"[..]) {
                timer::arm(&ctx);
            }
        },
    );
}

/// A fork or a replica coming or going: writes may have somewhere to go now.
///
/// # Safety
/// Called by the server on its main thread.
unsafe extern "C" fn on_propagation_event(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    guard("a replication event", || (), propagation::recheck);
}

/// A mailbox that arrives under a new name keeps its deadlines.
///
/// # Safety
/// Called by the server on its main thread with a valid context, a
/// NUL-terminated event name and the key's name.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    if event.is_null() || key.is_null() {
        return raw::REDISMODULE_OK as c_int;
    }
    let event = CStr::from_ptr(event).to_bytes();
    if matches!(event, b"rename_to" | b"move_to" | b"copy_to" | b"restore") {
        let ctx = Context::new(ctx);
        let key = RedisString::string_as_slice(key);
        guard(
            "scheduling a mailbox that arrived",
            || (),
            || key_arrived(&ctx, key),
        );
    }
    raw::REDISMODULE_OK as c_int
}

/// A mailbox arrived under a new name (`RENAME`, `MOVE`, `COPY`,
/// `RESTORE`): it is scheduled there. A copy has no entry; a moved mailbox
/// lost its old one when it left its old name.
fn key_arrived(ctx: &Context, key: &[u8]) {
    let name = server::string(ctx, key);
    if let Ok(Some(mb)) = keyspace::read(ctx, &name) {
        timer::forget(mb);
        timer::reschedule(ctx, key, mb);
        archive::scanned(server::selected_db(ctx), key, mb);
    }
}

/// Rebuilds the timer's schedule from every mailbox in every database
/// (after a load, a flush, `SWAPDB` or a change of the timer's settings),
/// then arms the timer.
pub fn rebuild(ctx: &Context) {
    struct Scan {
        settings: crate::mailbox::due::TimerSettings,
        db: i32,
    }
    /// # Safety
    /// Called by `RedisModule_Scan` with a valid key and `data` the `Scan`.
    unsafe extern "C" fn on_key(
        _ctx: *mut raw::RedisModuleCtx,
        name: *mut raw::RedisModuleString,
        key: *mut raw::RedisModuleKey,
        data: *mut c_void,
    ) {
        if key.is_null() || name.is_null() || data.is_null() {
            return;
        }
        let scan = &*data.cast::<Scan>();
        let (Some(get_type), Some(get_value)) = (
            raw::RedisModule_ModuleTypeGetType,
            raw::RedisModule_ModuleTypeGetValue,
        ) else {
            return;
        };
        if get_type(key) != keyspace::mailbox_type() {
            return;
        }
        let value = get_value(key);
        if value.is_null() {
            return;
        }
        let mb = &*value.cast::<Mailbox>();
        let key_name = RedisString::string_as_slice(name);
        guard(
            "scheduling a mailbox",
            || (),
            || {
                timer::schedule_scanned(scan.db, key_name, mb, &scan.settings);
                archive::scanned(scan.db, key_name, mb);
            },
        );
    }
    let _keep = server::KeepDb::new(ctx);
    timer::clear();
    archive::clear();
    let (Some(create), Some(scan_fn), Some(destroy)) = (unsafe {
        (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_Scan,
            raw::RedisModule_ScanCursorDestroy,
        )
    }) else {
        return;
    };
    let mut db = 0;
    while server::select_db(ctx, db) {
        let mut scan = Scan {
            settings: timer::settings(),
            db,
        };
        // SAFETY: the cursor is made, used and destroyed here; the scan
        // state outlives the scan.
        unsafe {
            let cursor = create();
            while scan_fn(
                ctx.get_raw(),
                cursor,
                Some(on_key),
                (&mut scan as *mut Scan).cast(),
            ) != 0
            {}
            destroy(cursor);
        }
        db += 1;
    }
    drop(_keep);
    timer::arm(ctx);
}
