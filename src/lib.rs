//! redis-im: a Redis module that keeps an instant-messaging server's
//! messages until every device of the recipient has acknowledged them.
//!
//! This file is the registration table only: commands, the data type,
//! settings and the `INFO im` section. Each handler is one line that hands
//! over to `commands/`.

pub mod codec;
pub mod commands;
pub mod config;
pub mod datatype;
pub mod mailbox;
pub mod metrics;
pub mod propagation;
pub mod reply;
pub mod schedule;
pub mod stanza;
pub mod sweep;

/// The registration: left out of unit tests, which run on the system
/// allocator rather than the server's.
#[cfg(not(any(test, fuzzing)))]
mod registration {
    use crate::commands::{dispatch, internal, offline, session, store};
    use crate::config::*;
    use crate::datatype::MAILBOX_TYPE;
    use redis_module::configuration::ConfigurationFlags;
    use redis_module::server_events::{FlushSubevent, LoadingSubevent, ServerRole};
    use redis_module::{raw, redis_module, Context, InfoContext, RedisResult, RedisString, Status};
    use std::os::raw::c_int;

    /// Registers each command with a handler of its own that goes
    /// straight to [`dispatch`] (no argument vector is built per call).
    macro_rules! commands {
        ($($(#[doc = $doc:literal])* $name:literal => $handler:path, $flags:literal, $first:literal, $last:literal, $step:literal;)*) => {
            fn register_commands(ctx: &Context) -> Status {
                $({
                    $(#[doc = $doc])*
                    unsafe extern "C" fn command(
                        ctx: *mut raw::RedisModuleCtx,
                        argv: *mut *mut raw::RedisModuleString,
                        argc: c_int,
                    ) -> c_int {
                        dispatch(ctx, argv, argc, $handler)
                    }
                    let created = unsafe {
                        raw::RedisModule_CreateCommand.map_or(raw::REDISMODULE_ERR as c_int, |f| {
                            f(ctx.get_raw(), $name.as_ptr(), Some(command), $flags.as_ptr(), $first, $last, $step)
                        })
                    };
                    if created != raw::REDISMODULE_OK as c_int {
                        ctx.log_warning(&format!("im: could not register {:?}", $name));
                        return Status::Err;
                    }
                })*
                Status::Ok
            }
        };
    }

    commands! {
        /// IM.CONNECT <user> <device> [NODE <node>]
        c"im.connect" => session::connect, c"write deny-oom", 1, 1, 1;
        /// IM.DISCONNECT <user> <device>
        c"im.disconnect" => session::disconnect, c"write", 1, 1, 1;
        /// IM.DEVICES <user>
        c"im.devices" => session::devices, c"readonly", 1, 1, 1;
        /// IM.FORGET <user> <device>
        c"im.forget" => session::forget, c"write", 1, 1, 1;
        /// IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
        c"im.store" => store::store, c"write deny-oom", 1, 1, 1;
        /// IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
        c"im.ack" => store::ack, c"write", 1, 1, 1;
        /// IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]]
        c"im.offline.info" => offline::offline_info, c"readonly", 1, 1, 1;
        /// IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
        c"im.offline.page" => offline::offline_page, c"readonly", 1, 1, 1;
        /// IM.INFO <user>
        c"im.info" => offline::info, c"readonly", 1, 1, 1;
        /// IM.SWEEP [LIMIT <n>]
        c"im.sweep" => crate::commands::sweep::sweep, c"write", 0, 0, 0;
        /// IM.APPLY <user> <effects> (replication and AOF)
        c"im.apply" => internal::apply, c"write", 1, 1, 1;
        /// IM.LOAD <user> HEAD|MSGS <blob> (AOF rewrite)
        c"im.load" => internal::load, c"write", 1, 1, 1;
    }

    /// The settings that may follow the module's path at load time.
    const SETTINGS: &[&str] = &[
        "resend-interval",
        "ack-timeout",
        "max-pending",
        "sweep-interval",
        "sweep-budget",
        "max-stanza-bytes",
        "max-messages",
        "max-bytes",
        "retention",
        "mailbox-idle",
        "device-idle",
        "offline-types",
        "event-prefix",
        "delay-from",
        "archive",
        "quota-policy",
    ];

    fn init(ctx: &Context, args: &[RedisString]) -> Status {
        if !args.len().is_multiple_of(2) {
            ctx.log_warning("im: load arguments are <setting> <value> pairs; one value is missing");
            return Status::Err;
        }
        for name in args.iter().step_by(2) {
            let name = name.to_string_lossy();
            if !SETTINGS.contains(&name.as_str()) {
                ctx.log_warning(&format!("im: unknown setting '{name}' at load time"));
                return Status::Err;
            }
        }
        unsafe {
            if let Some(set) = raw::RedisModule_SetModuleOptions {
                set(
                    ctx.get_raw(),
                    raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32,
                );
            }
        }
        // SWAPDB moves every mailbox of two dbs: the schedule is rebuilt.
        // (The crate has no handler macro for this event.)
        let swapdb = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_SWAPDB,
            dataver: 1,
        };
        if raw::subscribe_to_server_event(ctx.get_raw(), swapdb, Some(on_swapdb)) == Status::Err {
            ctx.log_warning("im: could not subscribe to SWAPDB");
            return Status::Err;
        }
        crate::propagation::subscribe(ctx);
        register_commands(ctx)
    }

    /// # Safety
    /// Called by the server on its main thread with a valid context.
    unsafe extern "C" fn on_swapdb(
        ctx: *mut raw::RedisModuleCtx,
        _eid: raw::RedisModuleEvent,
        _subevent: u64,
        _data: *mut std::os::raw::c_void,
    ) {
        let ctx = Context::new(ctx);
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::sweep::rebuild(&ctx)));
    }

    const MS: i64 = i64::MAX / 4;

    redis_module! {
        name: "im",
        version: 1,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [MAILBOX_TYPE],
        init: init,
        info: metrics_info,
        commands: [],
        event_handlers: [
        [@GENERIC: on_keyspace_event],
    ],
    configurations: [
            i64: [
                ["resend-interval", &RESEND_INTERVAL, 3000, 0, MS, ConfigurationFlags::DEFAULT, None],
                ["ack-timeout", &ACK_TIMEOUT, 10_000, 1, MS, ConfigurationFlags::DEFAULT, None],
                ["max-pending", &MAX_PENDING, 1000, 1, MS, ConfigurationFlags::DEFAULT, None],
                ["sweep-interval", &SWEEP_INTERVAL, 100, 0, MS, ConfigurationFlags::DEFAULT, None],
                ["sweep-budget", &SWEEP_BUDGET, 1000, 1, MS, ConfigurationFlags::DEFAULT, None],
                ["max-stanza-bytes", &MAX_STANZA_BYTES, 65536, 16, 512 * 1024 * 1024, ConfigurationFlags::MEMORY, None],
                ["max-messages", &MAX_MESSAGES, 10_000, 1, MS, ConfigurationFlags::DEFAULT, None],
                ["max-bytes", &MAX_BYTES, 16 * 1024 * 1024, 1, MS, ConfigurationFlags::MEMORY, None],
                ["retention", &RETENTION, 7 * DAY_MS, 0, MS, ConfigurationFlags::DEFAULT, None],
                ["mailbox-idle", &MAILBOX_IDLE, 30 * DAY_MS, 0, MS, ConfigurationFlags::DEFAULT, None],
                ["device-idle", &DEVICE_IDLE, 30 * DAY_MS, 0, MS, ConfigurationFlags::DEFAULT, None],
            ],
            string: [
                ["offline-types", &OFFLINE_TYPES, "chat normal", ConfigurationFlags::DEFAULT, None],
                ["event-prefix", &*EVENT_PREFIX, "im:events:", ConfigurationFlags::DEFAULT, None],
                ["delay-from", &DELAY_FROM, "", ConfigurationFlags::DEFAULT, None],
            ],
            bool: [
                ["archive", &ARCHIVE, false, ConfigurationFlags::DEFAULT, None],
            ],
            enum: [
                ["quota-policy", &QUOTA_POLICY, QuotaPolicy::Reject, ConfigurationFlags::DEFAULT, None],
            ],
            module_args_as_configuration: true,
        ]
    }

    fn metrics_info(ctx: &InfoContext, for_crash_report: bool) {
        crate::metrics::info(ctx, for_crash_report);
    }

    /// A mailbox that arrives under a new name keeps its deadlines.
    fn on_keyspace_event(ctx: &Context, _kind: redis_module::NotifyEvent, event: &str, key: &[u8]) {
        if matches!(event, "rename_to" | "move_to" | "copy_to" | "restore") {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::sweep::key_arrived(ctx, key)
            }));
        }
    }

    #[redis_module_macros::loading_event_handler]
    fn on_loading(ctx: &Context, e: LoadingSubevent) {
        if matches!(e, LoadingSubevent::Ended) {
            crate::sweep::rebuild(ctx);
        }
    }

    #[redis_module_macros::flush_event_handler]
    fn on_flush(ctx: &Context, e: FlushSubevent) {
        if matches!(e, FlushSubevent::Ended) {
            crate::sweep::rebuild(ctx);
        }
    }

    #[redis_module_macros::role_changed_event_handler]
    fn on_role_changed(ctx: &Context, role: ServerRole) {
        crate::propagation::recheck();
        match role {
            ServerRole::Primary => crate::sweep::arm(ctx),
            ServerRole::Replica => crate::sweep::disarm(ctx),
        }
    }

    #[redis_module_macros::config_changed_event_handler]
    fn on_config_changed(ctx: &Context, names: &[&str]) {
        crate::propagation::recheck();
        const TIMER_SETTINGS: &[&str] = &[
            "im.resend-interval",
            "im.ack-timeout",
            "im.device-idle",
            "im.retention",
            "im.archive",
        ];
        if names.iter().any(|n| TIMER_SETTINGS.contains(n)) {
            crate::sweep::rebuild(ctx);
        } else if names.contains(&"im.sweep-interval") {
            crate::sweep::arm(ctx);
        }
    }
}
