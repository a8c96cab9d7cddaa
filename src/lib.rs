//! redis-im: a Redis module that keeps an instant-messaging server's
//! messages until every device of the recipient has acknowledged them.
//!
//! This file is the registration table only: commands, the data type,
//! settings and the `INFO im` section. Each handler is one line that hands
//! over to `commands/`.

pub mod archive;
pub mod cluster;
pub mod codec;
pub mod command_docs;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod events;
pub mod keyspace;
pub mod log;
pub mod losses;
pub mod mailbox;
pub mod metrics;
pub mod panics;
pub mod prefetch;
pub mod propagation;
pub mod reply;
pub mod schedule;
pub mod server;
pub mod stanza;
pub mod sweep;
#[cfg(test)]
mod test_rng;
pub mod timer;
pub mod words;
pub mod wrapper;

/// The module's version, Cargo.toml's (`INFO im` shows it as
/// `im_version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version as `MODULE LIST` shows it: major × 10000 + minor × 100 +
/// patch (0.1.0 is 100), as Redis numbers its own modules.
pub const VERSION_NUMBER: i32 = decimal(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
    + decimal(env!("CARGO_PKG_VERSION_MINOR")) * 100
    + decimal(env!("CARGO_PKG_VERSION_PATCH"));

/// The value of a string of decimal digits, at compile time.
const fn decimal(s: &str) -> i32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "a version part is decimal digits");
        n = n * 10 + (b[i] - b'0') as i32;
        i += 1;
    }
    n
}

/// The registration: left out of unit tests, which run on the system
/// allocator rather than the server's.
#[cfg(not(any(test, fuzzing)))]
mod registration {
    use crate::command_docs::*;
    use crate::commands::{
        ack, apply, archive_ack, archive_pull, connect, devices, disconnect, doctor, forget, help,
        import, info, load, offline_info, offline_page, store, sweep,
    };
    use crate::wrapper::command::{dispatch, dispatch_subcommand, register_container, CommandInfo};
    use crate::wrapper::datatype::MAILBOX_TYPE;
    use redis_module::raw::{
        REDISMODULE_CMD_KEY_ACCESS as ACCESS, REDISMODULE_CMD_KEY_DELETE as DELETE,
        REDISMODULE_CMD_KEY_INSERT as INSERT, REDISMODULE_CMD_KEY_OW as OW,
        REDISMODULE_CMD_KEY_RO as RO, REDISMODULE_CMD_KEY_RW as RW,
        REDISMODULE_CMD_KEY_UPDATE as UPDATE,
    };
    use redis_module::{raw, redis_module, Context, InfoContext, RedisResult, RedisString, Status};
    use std::os::raw::c_int;

    /// Registers each command with a handler of its own that goes
    /// straight to [`dispatch`] (no argument vector is built per call),
    /// then its arity, key spec and summary (`RedisModule_SetCommandInfo`,
    /// Redis 7.0+): read-only commands declare a read-only key spec, so
    /// that a user with `%R~` key permissions may call them (SPEC §8).
    /// A key spec takes one of INSERT, UPDATE and DELETE (the server
    /// refuses more): the main change each command makes. `args`, `tips`
    /// and `acl` are what `COMMAND DOCS` and the ACL categories say of it
    /// (`command_docs`; `docs/commands.md` for people).
    macro_rules! commands {
        ($($(#[doc = $doc:literal])* $name:literal => $handler:path, $flags:literal, $key:literal,
           arity $arity:literal, keys $keys:expr, $summary:literal, $complexity:expr,
           args $args:expr, tips $tips:expr, acl $acl:expr;)*) => {
            fn register_commands(ctx: &Context) -> Status {
                $({
                    $(#[doc = $doc])*
                    /// # Safety
                    /// Called by the server with a command's context and arguments.
                    unsafe extern "C" fn command(
                        ctx: *mut raw::RedisModuleCtx,
                        argv: *mut *mut raw::RedisModuleString,
                        argc: c_int,
                    ) -> c_int {
                        dispatch(ctx, argv, argc, $handler)
                    }
                    let created = unsafe {
                        raw::RedisModule_CreateCommand.map_or(raw::REDISMODULE_ERR as c_int, |f| {
                            f(ctx.get_raw(), $name.as_ptr(), Some(command), $flags.as_ptr(), $key, $key, $key)
                        })
                    };
                    if created != raw::REDISMODULE_OK as c_int {
                        crate::log::warning(&format!("redis-im: could not register {:?}", $name));
                        return Status::Err;
                    }
                    let info = CommandInfo {
                        arity: $arity,
                        key_flags: $keys,
                        key_pos: 1,
                        summary: $summary,
                        complexity: $complexity,
                        args: $args,
                        tips: $tips,
                        acl: $acl,
                        flags: $flags,
                    };
                    if !info.register(ctx, $name) {
                        return Status::Err;
                    }
                })*
                Status::Ok
            }
        };
    }

    const NO_KEY: u32 = 0;

    commands! {
        /// IM.CONNECT <user> <device> [NODE <node>]
        c"im.connect" => connect::connect, c"write deny-oom", 1,
            arity -3, keys RW | ACCESS | UPDATE,
            c"Registers a device, marks it online on a node, and answers what it missed.",
            c"O(log N + P): N messages in the mailbox, P the device's pending messages",
            args CONNECT, tips NO_TIPS, acl ACL_IM;
        /// IM.DISCONNECT <user> <device>
        c"im.disconnect" => disconnect::disconnect, c"write", 1,
            arity 3, keys RW | UPDATE,
            c"Marks a device offline; its pending messages become offline.",
            c"O(P log N): P the device's pending messages",
            args USER_DEVICE, tips NO_TIPS, acl ACL_IM;
        /// IM.DEVICES <user>
        c"im.devices" => devices::devices, c"readonly", 1,
            arity 2, keys RO | ACCESS,
            c"Lists the registered devices of a mailbox.",
            c"O(D): D registered devices",
            args USER_ONLY, tips NO_TIPS, acl ACL_IM;
        /// IM.FORGET <user> <device>
        c"im.forget" => forget::forget, c"write", 1,
            arity 3, keys RW | DELETE,
            c"Unregisters a device; messages nobody owes any more are deleted.",
            c"O(M log N): M messages the device owed",
            args USER_DEVICE, tips NO_TIPS, acl ACL_IM;
        /// IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
        c"im.store" => store::store, c"write deny-oom", 1,
            arity -3, keys RW | INSERT,
            c"Stores a stanza; pending on the devices it was delivered to, offline for the others.",
            c"O(S + log N + D): S stanza bytes, D devices",
            args STORE, tips NO_TIPS, acl ACL_IM;
        /// IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
        c"im.ack" => ack::ack, c"write", 1,
            arity -4, keys RW | UPDATE,
            c"Marks messages acknowledged by a device; acked messages nobody owes leave the mailbox.",
            c"O(K log N): K ids acked",
            args ACK, tips NO_TIPS, acl ACL_IM;
        /// IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]]
        c"im.offline.info" => offline_info::offline_info, c"readonly", 1,
            arity -3, keys RO | ACCESS,
            c"Summarises what a device has not received: count, bytes, first and last seq, ids.",
            OFFLINE_INFO_COST,
            args OFFLINE_INFO, tips NO_TIPS, acl ACL_IM;
        /// IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
        c"im.offline.page" => offline_page::offline_page, c"readonly", 1,
            arity -3, keys RO | ACCESS,
            c"Pages through a device's offline messages in seq order.",
            OFFLINE_PAGE_COST,
            args OFFLINE_PAGE, tips NO_TIPS, acl ACL_IM;
        /// IM.INFO <user>
        c"im.info" => info::info, c"readonly", 1,
            arity 2, keys RO | ACCESS,
            c"Counts of a mailbox: messages, bytes, devices, online, pending, first, last, next seq.",
            c"O(D): D registered devices",
            args USER_ONLY, tips NO_TIPS, acl ACL_IM;
        /// IM.SWEEP [LIMIT <n>]
        c"im.sweep" => sweep::sweep, c"write", 0,
            arity -1, keys NO_KEY,
            c"Runs the timer's due work now (resend, expiry, retention) on this node.",
            c"O(W): W items of due work",
            args SWEEP, tips PER_NODE, acl ACL_ADMIN;
        /// IM.ARCHIVE.PULL [COUNT <n>] [LEASE <ms>]
        c"im.archive.pull" => archive_pull::archive_pull, c"write", 0,
            arity -1, keys NO_KEY,
            c"Hands out queued messages of this node to an archiver, under a lease.",
            ARCHIVE_PULL_COST,
            args ARCHIVE_PULL, tips PER_NODE_LIST, acl ACL_ADMIN;
        /// IM.ARCHIVE.ACK <user> <seq> [<seq> ...]
        c"im.archive.ack" => archive_ack::archive_ack, c"write", 1,
            arity -3, keys RW | DELETE,
            c"Removes queued messages an archiver confirmed; they leave Redis for good.",
            ARCHIVE_ACK_COST,
            args ARCHIVE_ACK, tips NO_TIPS, acl ACL_ADMIN;
        /// IM.IMPORT <user> <ts> <id> <stanza> [SEQ <seq>]
        c"im.import" => import::import, c"write deny-oom", 1,
            arity -5, keys RW | INSERT,
            c"Puts a message back from the archive, keeping its time and, where free, its seq.",
            c"O(S + log N): S stanza bytes",
            args IMPORT, tips NO_TIPS, acl ACL_ADMIN;
        /// IM.DOCTOR [JSON]
        c"im.doctor" => doctor::doctor, c"readonly", 0,
            arity -1, keys NO_KEY,
            c"Reports how safe the messages are now: durability, eviction risk, the timer's lag, backlogs, losses.",
            c"O(M) over the mailboxes, bounded to 20 ms",
            args DOCTOR, tips PER_NODE, acl ACL_DOCTOR;
        /// IM.APPLY <user> <effects> [<stanza>] (replication and AOF)
        c"im.apply" => apply::apply, c"write", 1,
            arity -3, keys RW | UPDATE,
            c"Internal: a primary's changes, as replicas and the AOF receive them. Refused to clients.",
            c"O(E): E effects",
            args APPLY, tips NO_TIPS, acl ACL_ADMIN;
        /// IM.LOAD <user> HEAD|MSGS <blob> (AOF rewrite)
        c"im.load" => load::load, c"write", 1,
            arity 4, keys OW | UPDATE,
            c"Internal: a mailbox as an AOF rewrite writes it. Refused to clients.",
            c"O(B): B bytes of the blob",
            args LOAD, tips NO_TIPS, acl ACL_ADMIN;
    }

    /// Container commands whose subcommands are the dotted commands with
    /// two dots (`IM.OFFLINE PAGE` is `IM.OFFLINE.PAGE`), for the cluster
    /// clients that refuse a command name with two dots (redis-py's
    /// `RedisCluster`): the same handler, the key after the subcommand's
    /// name, the same key spec and summary.
    macro_rules! containers {
        ($($container:literal, $about:literal { $($sub:literal => $handler:path, $flags:literal, $key:literal,
           arity $arity:literal, keys $keys:expr, $summary:literal, $complexity:expr,
           args $args:expr, tips $tips:expr, acl $acl:expr;)* })*) => {
            fn register_containers(ctx: &Context) -> Status {
                $({
                    let subs = [$({
                        /// # Safety
                        /// Called by the server with a command's context and arguments.
                        unsafe extern "C" fn command(
                            ctx: *mut raw::RedisModuleCtx,
                            argv: *mut *mut raw::RedisModuleString,
                            argc: c_int,
                        ) -> c_int {
                            dispatch_subcommand(ctx, argv, argc, $handler)
                        }
                        let f: raw::RedisModuleCmdFunc = Some(command);
                        ($sub, f, $flags, $key, CommandInfo {
                            arity: $arity,
                            key_flags: $keys,
                            key_pos: $key,
                            summary: $summary,
                            complexity: $complexity,
                            args: $args,
                            tips: $tips,
                            acl: $acl,
                            flags: $flags,
                        })
                    }),*, {
                        fn help(_: &Context, _: &[RedisString]) -> crate::reply::Answer {
                            Ok(help::reply($container, &[$(($sub, $args, $summary)),*]))
                        }
                        /// # Safety
                        /// Called by the server with a command's context and arguments.
                        unsafe extern "C" fn command(
                            ctx: *mut raw::RedisModuleCtx,
                            argv: *mut *mut raw::RedisModuleString,
                            argc: c_int,
                        ) -> c_int {
                            dispatch_subcommand(ctx, argv, argc, help)
                        }
                        let f: raw::RedisModuleCmdFunc = Some(command);
                        let flags = c"readonly allow-loading allow-stale";
                        (c"help", f, flags, 0, CommandInfo {
                            arity: 2,
                            key_flags: NO_KEY,
                            key_pos: 0,
                            summary: help::SUMMARY,
                            complexity: c"O(1)",
                            args: &[],
                            tips: NO_TIPS,
                            acl: ACL_IM,
                            flags,
                        })
                    }];
                    if !register_container(ctx, $container, $about, &subs) {
                        return Status::Err;
                    }
                })*
                Status::Ok
            }
        };
    }

    containers! {
        c"im.offline", c"Container of IM.OFFLINE INFO and IM.OFFLINE PAGE: IM.OFFLINE.INFO and IM.OFFLINE.PAGE for cluster clients that refuse two dots." {
            c"info" => offline_info::offline_info, c"readonly", 2,
                arity -4, keys RO | ACCESS,
                c"IM.OFFLINE.INFO: what a device has not received (count, bytes, first, last, ids).",
                OFFLINE_INFO_COST,
                args OFFLINE_INFO, tips NO_TIPS, acl ACL_IM;
            c"page" => offline_page::offline_page, c"readonly", 2,
                arity -4, keys RO | ACCESS,
                c"IM.OFFLINE.PAGE: pages through a device's offline messages in seq order.",
                OFFLINE_PAGE_COST,
                args OFFLINE_PAGE, tips NO_TIPS, acl ACL_IM;
        }
        c"im.archive", c"Container of IM.ARCHIVE PULL and IM.ARCHIVE ACK: IM.ARCHIVE.PULL and IM.ARCHIVE.ACK for cluster clients that refuse two dots." {
            c"pull" => archive_pull::archive_pull, c"write", 0,
                arity -2, keys NO_KEY,
                c"IM.ARCHIVE.PULL: hands out queued messages of this node to an archiver, under a lease.",
                ARCHIVE_PULL_COST,
                args ARCHIVE_PULL, tips PER_NODE_LIST, acl ACL_ADMIN;
            c"ack" => archive_ack::archive_ack, c"write", 2,
                arity -4, keys RW | DELETE,
                c"IM.ARCHIVE.ACK: removes queued messages an archiver confirmed.",
                ARCHIVE_ACK_COST,
                args ARCHIVE_ACK, tips NO_TIPS, acl ACL_ADMIN;
        }
    }

    fn init(ctx: &Context, args: &[RedisString]) -> Status {
        crate::log::init(ctx);
        crate::server::note_role(!crate::server::is_primary(ctx));
        crate::panics::install_hook();
        crate::panics::read_debug_key();
        let given: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let registered = crate::config::LoadArguments::parse(&given)
            .and_then(|a| crate::config::register(ctx, &a));
        if let Err(line) = registered {
            crate::log::warning(&line);
            return Status::Err;
        }
        // Valkey 9's atomic slot migration refuses modules that do not
        // declare they handle it (the timer leaves slots it does not own
        // alone: `cluster`).
        let asm = crate::cluster::has_atomic_slot_migration(ctx);
        // A key opened for writing is signalled as modified (`WATCH`,
        // client-side caching) only when a command changed it
        // (`keyspace::Writer`), not whenever it was opened.
        let options = raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32
            | raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as i32
            | if asm {
                crate::cluster::HANDLE_ATOMIC_SLOT_MIGRATION
            } else {
                0
            };
        unsafe {
            if let Some(set) = raw::RedisModule_SetModuleOptions {
                set(ctx.get_raw(), options);
            }
        }
        crate::keyspace::set_mailbox_type(*MAILBOX_TYPE.raw_type.borrow());
        crate::timer::set_callback(Some(crate::wrapper::timer::on_timer));
        if !crate::wrapper::events::subscribe(ctx, asm) {
            return Status::Err;
        }
        crate::doctor::warn_settings(ctx);
        crate::wrapper::command::add_acl_category(ctx);
        if register_commands(ctx) == Status::Err {
            return Status::Err;
        }
        register_containers(ctx)
    }

    redis_module! {
        name: "im",
        version: crate::VERSION_NUMBER,
        allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
        data_types: [MAILBOX_TYPE],
        init: init,
        info: metrics_info,
        commands: [],
    }

    fn metrics_info(ctx: &InfoContext, for_crash_report: bool) {
        crate::wrapper::guard(
            "INFO im",
            || (),
            || {
                crate::losses::settle();
                crate::metrics::ARCHIVE_LEASED.store(
                    crate::archive::leased_now() as i64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                crate::metrics::SWEEP_LAG_MS.store(
                    crate::timer::lag_ms(crate::server::now_ms()),
                    std::sync::atomic::Ordering::Relaxed,
                );
                crate::metrics::info(ctx, for_crash_report)
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_number_follows_cargo_toml() {
        let parts: Vec<i32> = super::VERSION
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(
            super::VERSION_NUMBER,
            parts[0] * 10000 + parts[1] * 100 + parts[2]
        );
    }
}
