//! Server events and keyspace notifications the module listens to, and the
//! scan of the keyspace that rebuilds the timer's schedule.
//!
//! - loading ended, a flush, `SWAPDB`, a change of a timer setting: the
//!   schedule is rebuilt from every mailbox;
//! - a role change: the timer is armed on a primary, stopped on a replica;
//! - a fork, a replica coming or going, a role or configuration change:
//!   whether writes propagate is looked up again (`propagation`);
//! - a mailbox arriving under a new name (`RENAME`, `MOVE`, `COPY`,
//!   `RESTORE`): it is scheduled there;
//! - Valkey 9's atomic slot migration starting, completing or aborting:
//!   which slots the timer may act on is read again (`cluster`).
//!
//! None of them writes data: a callback outside a client's command that
//! wrote would propagate while the server may be pausing writes (SPEC §5).

use super::guard;
use crate::{archive, cluster, doctor, keyspace, log, losses, propagation, server, timer};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

/// Subscribes to every event above (the slot migration events with
/// `slot_migration`: on Valkey 9+); false (with a warning logged) when the
/// server refused one.
pub fn subscribe(ctx: &Context, slot_migration: bool) -> bool {
    if slot_migration {
        let event = raw::RedisModuleEvent {
            id: cluster::EVENT_ATOMIC_SLOT_MIGRATION,
            dataver: 1,
        };
        if raw::subscribe_to_server_event(ctx.get_raw(), event, Some(on_slot_migration))
            == raw::Status::Err
        {
            log::warning("redis-im: could not subscribe to atomic slot migration events");
            return false;
        }
    }
    let events: [(u64, raw::RedisModuleEventCallback); 8] = [
        (raw::REDISMODULE_EVENT_LOADING, Some(on_loading)),
        (raw::REDISMODULE_EVENT_FLUSHDB, Some(on_flush)),
        (raw::REDISMODULE_EVENT_SWAPDB, Some(on_swapdb)),
        (
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            Some(on_role_changed),
        ),
        (raw::REDISMODULE_EVENT_CONFIG, Some(on_config_changed)),
        (raw::REDISMODULE_EVENT_CRON_LOOP, Some(on_cron)),
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
                raw::REDISMODULE_NOTIFY_GENERIC
                    | raw::REDISMODULE_NOTIFY_EXPIRED
                    | raw::REDISMODULE_NOTIFY_EVICTED,
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
    server::note_loading(matches!(
        subevent,
        raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
            | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
            | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START
    ));
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
    data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START && !data.is_null() {
        let db = (*data.cast::<raw::RedisModuleFlushInfo>()).dbnum;
        let ctx = Context::new(ctx);
        guard(
            "counting what a flush empties",
            || (),
            || flushing(&ctx, db),
        );
    }
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

/// A server cron tick (`hz` times a second), on every node: the
/// schedule's upkeep.
///
/// # Safety
/// Called by the server on its main thread.
unsafe extern "C" fn on_cron(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    guard(
        "the schedule's upkeep",
        || (),
        || timer::upkeep(server::now_ms()),
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
            cluster::invalidate();
            server::note_role(subevent != raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER);
            if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
                timer::arm(&ctx);
            } else {
                timer::disarm(&ctx);
            }
        },
    );
}

/// An atomic slot migration (Valkey 9+) started, completed or aborted,
/// importing or exporting: the slots it imports are left alone by the
/// timer until they are this node's; ownership is read again.
///
/// # Safety
/// Called by the server on its main thread with a valid context; `data`
/// is a `ValkeyModuleAtomicSlotMigrationInfoV1`.
unsafe extern "C" fn on_slot_migration(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let info = data.cast::<cluster::SlotMigrationInfo>();
    let ranges: Vec<(u16, u16)> = match info.as_ref() {
        Some(i) if !i.slot_ranges.is_null() => {
            std::slice::from_raw_parts(i.slot_ranges, i.num_slot_ranges as usize)
                .iter()
                .map(|r| (r.start.clamp(0, 16383) as u16, r.end.clamp(0, 16383) as u16))
                .collect()
        }
        _ => Vec::new(),
    };
    let ctx = Context::new(ctx);
    guard(
        "a slot migration event",
        || (),
        || {
            match subevent {
                cluster::SUBEVENT_IMPORT_STARTED => cluster::import_started(&ranges),
                cluster::SUBEVENT_IMPORT_COMPLETED | cluster::SUBEVENT_IMPORT_ABORTED => {
                    cluster::import_ended(&ranges)
                }
                _ => cluster::invalidate(),
            }
            timer::arm(&ctx);
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
            doctor::warn_settings(&ctx);
            if names.iter().any(|n| TIMER_SETTINGS.contains(n)) {
                rebuild(&ctx);
            } else if names.contains(&&b"im.sweep-interval"[..]) {
                timer::arm(&ctx);
            }
        },
    );
}

/// A fork or a replica coming or going: writes may have somewhere to go
/// now, and the safety of the settings may have changed.
///
/// # Safety
/// Called by the server on its main thread with a valid context.
unsafe extern "C" fn on_propagation_event(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    let ctx = Context::new(ctx);
    guard(
        "a replication event",
        || (),
        || {
            propagation::recheck();
            if eid.id == raw::REDISMODULE_EVENT_REPLICA_CHANGE {
                doctor::warn_settings(&ctx);
            }
        },
    );
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
    let ctx = Context::new(ctx);
    let key = RedisString::string_as_slice(key);
    if matches!(event, b"rename_to" | b"move_to" | b"copy_to" | b"restore") {
        guard(
            "scheduling a mailbox that arrived",
            || (),
            || key_arrived(&ctx, key),
        );
    }
    // A mailbox given a TTL can be evicted under volatile-* policies.
    if event == b"expire" {
        guard(
            "noting a mailbox's TTL",
            || (),
            || {
                let name = server::string(&ctx, key);
                if matches!(keyspace::read(&ctx, &name), Ok(Some(_))) {
                    doctor::mailbox_ttl_seen();
                    doctor::warn_settings(&ctx);
                }
            },
        );
    }
    // Why a mailbox that just left did (counted when lost, SPEC §8). A
    // `del` of a mailbox whose slot moves to another node (`MIGRATE`, the
    // removal after an atomic slot migration) is a move.
    guard(
        "counting a mailbox that left",
        || (),
        || {
            let db = server::selected_db(&ctx);
            let moved =
                event == b"del" && losses::noted(key, db) && cluster::moving_away(&ctx, key);
            losses::notified(if moved { b"slot_moved" } else { event }, key, db)
        },
    );
    // Valkey 8.1 runs this callback on the client of the command and
    // selects the event's db on it without selecting it back
    // (valkey-io/valkey#4024): after `MOVE`, whose `move_from` comes on the
    // client's own db and `move_to` on the other, the client is put back.
    match event {
        b"move_from" => MOVE_FROM_DB.set(Some(server::selected_db(&ctx))),
        b"move_to" => {
            if let Some(db) = MOVE_FROM_DB.take() {
                server::select_db(&ctx, db);
            }
        }
        _ => {}
    }
    raw::REDISMODULE_OK as c_int
}

thread_local! {
    /// The db of the last `move_from` event (see `on_keyspace_event`).
    static MOVE_FROM_DB: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// A mailbox arrived under a new name (`RENAME`, `MOVE`, `COPY`,
/// `RESTORE`): it is scheduled there. A copy has no entry; a moved mailbox
/// lost its old one when it left its old name. A `RESTORE` is how a legacy
/// slot migration brings a key: what this node owns is read again before
/// it is next asked, or a read from before the slot came here would keep
/// the timer and `IM.ARCHIVE.PULL` off the mailbox for up to a second.
fn key_arrived(ctx: &Context, key: &[u8]) {
    cluster::invalidate();
    let name = server::string(ctx, key);
    if let Ok(Some(mb)) = keyspace::read(ctx, &name) {
        timer::forget(mb);
        timer::reschedule(ctx, key, mb);
        archive::scanned(server::selected_db(ctx), key, mb);
    }
}

/// A flush of `db` (-1: every db) is about to empty it: its mailboxes are
/// counted as deleted by an operator.
fn flushing(ctx: &Context, db: i32) {
    if !losses::counted_here() {
        return;
    }
    let (mut mailboxes, mut messages) = (0u64, 0u64);
    let mut count = |_: i32, _: &[u8], mb: &crate::mailbox::Mailbox| {
        mailboxes += 1;
        messages += mb.log.len();
        true
    };
    if db < 0 {
        super::scan::all_mailboxes(ctx, &mut count);
    } else {
        super::scan::mailboxes(ctx, db, &mut |k, mb| count(db, k, mb));
    }
    losses::flushed(mailboxes, messages);
}

/// Rebuilds the timer's schedule from every mailbox in every database
/// (after a load, a flush, `SWAPDB` or a change of the timer's settings),
/// then arms the timer.
pub fn rebuild(ctx: &Context) {
    timer::clear();
    archive::clear();
    let settings = timer::settings();
    super::scan::all_mailboxes(ctx, &mut |db, key, mb| {
        timer::schedule_scanned(db, key, mb, &settings);
        archive::scanned(db, key, mb);
        true
    });
    timer::arm(ctx);
}
