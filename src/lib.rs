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
pub mod reply;
pub mod schedule;
pub mod stanza;
pub mod sweep;

/// The registration: left out of unit tests, which run on the system
/// allocator rather than the server's.
#[cfg(not(test))]
mod registration {
    use crate::commands::{internal, offline, run, session, store};
    use crate::config::*;
    use crate::datatype::MAILBOX_TYPE;
    use redis_module::configuration::ConfigurationFlags;
    use redis_module::server_events::{FlushSubevent, LoadingSubevent, ServerRole};
    use redis_module::{raw, redis_module, Context, InfoContext, RedisResult, RedisString, Status};

    /// IM.CONNECT <user> <device> [NODE <node>]
    fn im_connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, session::connect)
    }
    /// IM.DISCONNECT <user> <device>
    fn im_disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, session::disconnect)
    }
    /// IM.DEVICES <user>
    fn im_devices(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, session::devices)
    }
    /// IM.FORGET <user> <device>
    fn im_forget(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, session::forget)
    }
    /// IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
    fn im_store(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, store::store)
    }
    /// IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
    fn im_ack(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, store::ack)
    }
    /// IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]]
    fn im_offline_info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, offline::offline_info)
    }
    /// IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
    fn im_offline_page(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, offline::offline_page)
    }
    /// IM.INFO <user>
    fn im_info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, offline::info)
    }
    /// IM.SWEEP [LIMIT <n>]
    fn im_sweep(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, crate::commands::sweep::sweep)
    }
    /// IM.APPLY <user> <effects> (replication and AOF)
    fn im_apply(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, internal::apply)
    }
    /// IM.LOAD <user> HEAD|MSGS <blob> (AOF rewrite)
    fn im_load(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        run(ctx, args, internal::load)
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
        Status::Ok
    }

    const MS: i64 = i64::MAX / 4;

    redis_module! {
        name: "im",
        version: 1,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [MAILBOX_TYPE],
        init: init,
        info: metrics_info,
        commands: [
            ["im.connect", im_connect, "write deny-oom", 1, 1, 1, ""],
            ["im.disconnect", im_disconnect, "write", 1, 1, 1, ""],
            ["im.devices", im_devices, "readonly", 1, 1, 1, ""],
            ["im.forget", im_forget, "write", 1, 1, 1, ""],
            ["im.store", im_store, "write deny-oom", 1, 1, 1, ""],
            ["im.ack", im_ack, "write", 1, 1, 1, ""],
            ["im.offline.info", im_offline_info, "readonly", 1, 1, 1, ""],
            ["im.offline.page", im_offline_page, "readonly", 1, 1, 1, ""],
            ["im.info", im_info, "readonly", 1, 1, 1, ""],
            ["im.sweep", im_sweep, "write", 0, 0, 0, ""],
        ["im.apply", im_apply, "write", 1, 1, 1, ""],
            ["im.load", im_load, "write", 1, 1, 1, ""],
        ],
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
        match role {
            ServerRole::Primary => crate::sweep::arm(ctx),
            ServerRole::Replica => crate::sweep::disarm(ctx),
        }
    }

    #[redis_module_macros::config_changed_event_handler]
    fn on_config_changed(ctx: &Context, names: &[&str]) {
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
