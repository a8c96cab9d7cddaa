//! The entry point of every `IM.*` command.

use super::guard;
use crate::command_docs::{self, Arg, ArgKind};
use crate::log;
use crate::reply::{self, error, Answer};
use redis_module::{raw, Context, RedisString};
use smallvec::SmallVec;
use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

/// A command's handler: the server's arguments in, the reply (or error
/// reply) out.
pub type Handler = fn(&Context, &[RedisString]) -> Answer;

/// The reply of a command whose handler panicked (the panic is in the
/// server log, and counted in `INFO im` as `panics`).
pub const INTERNAL_ERROR: &str =
    "ERR internal error in redis-im: the command failed and was logged in the server log";

/// Runs a handler on the arguments the server passed and writes its reply;
/// a panic answers [`INTERNAL_ERROR`] instead of crossing into the server.
///
/// # Safety
/// `ctx`, `argv` and `argc` are those the server passed to a command
/// callback, used only during the call.
pub unsafe fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let context = Context::new(ctx);
    let raw_args: &[*mut raw::RedisModuleString] = match usize::try_from(argc) {
        Ok(n) if !argv.is_null() => std::slice::from_raw_parts(argv, n),
        _ => &[],
    };
    // Views of the server's own argument strings, which it keeps for the
    // whole call: neither retained nor freed here.
    let mut views: SmallVec<[ManuallyDrop<RedisString>; 8]> =
        SmallVec::with_capacity(raw_args.len());
    for &a in raw_args {
        views.push(ManuallyDrop::new(RedisString::from_redis_module_string(
            ctx, a,
        )));
    }
    // SAFETY: `ManuallyDrop<T>` has the layout of `T`.
    let args: &[RedisString] =
        std::slice::from_raw_parts(views.as_ptr().cast::<RedisString>(), views.len());
    // A handler that wrote part of its reply itself and then panicked
    // cannot take it back; replies are written last, by code that does
    // not panic.
    let r = guard(
        "a command",
        || {
            let name = args.first().map_or(&[][..], |a| a.as_slice());
            log::warning(&format!(
                "redis-im: the failed command was {}",
                log::escape(name, 64)
            ));
            error(INTERNAL_ERROR)
        },
        || {
            if let Some(key) = args.get(1) {
                crate::panics::debug_panic(key.as_slice());
            }
            handler(&context, args).unwrap_or_else(|e| e)
        },
    );
    guard("a reply", || (), || reply::send(&context, &r));
    raw::REDISMODULE_OK as c_int
}

/// Runs a subcommand's handler (`IM.OFFLINE PAGE ...`) on its arguments
/// from the subcommand's name on, so that it reads them as the handler of
/// the dotted command (`IM.OFFLINE.PAGE ...`) does.
///
/// # Safety
/// As [`dispatch`].
pub unsafe fn dispatch_subcommand(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    if argv.is_null() || argc < 1 {
        return dispatch(ctx, argv, argc, handler);
    }
    dispatch(ctx, argv.add(1), argc - 1, handler)
}

/// Makes `name` a container command and `subs` its subcommands (Redis
/// 7.0+: `RedisModule_CreateSubcommand`); false, logged, when the server
/// refuses.
pub fn register_container(
    ctx: &Context,
    name: &CStr,
    summary: &'static CStr,
    subs: &[(&CStr, raw::RedisModuleCmdFunc, &CStr, i32, CommandInfo)],
) -> bool {
    // SAFETY: at load time, with the module's context.
    unsafe {
        let (Some(create), Some(get), Some(create_sub)) = (
            raw::RedisModule_CreateCommand,
            raw::RedisModule_GetCommand,
            raw::RedisModule_CreateSubcommand,
        ) else {
            return true;
        };
        if create(ctx.get_raw(), name.as_ptr(), None, c"".as_ptr(), 0, 0, 0)
            != raw::REDISMODULE_OK as c_int
        {
            log::warning(&format!("redis-im: could not register {name:?}"));
            return false;
        }
        let parent = get(ctx.get_raw(), name.as_ptr());
        if parent.is_null() {
            return false;
        }
        let about = CommandInfo {
            arity: -2,
            key_flags: 0,
            key_pos: 0,
            summary,
            complexity: c"Depends on the subcommand.",
            args: &[],
            tips: None,
            acl: command_docs::ACL_IM,
            flags: c"",
        };
        if !about.register_described(parent, name, false) {
            return false;
        }
        for (sub, func, flags, key, info) in subs {
            if create_sub(
                parent,
                sub.as_ptr(),
                *func,
                flags.as_ptr(),
                *key,
                *key,
                *key,
            ) != raw::REDISMODULE_OK as c_int
            {
                log::warning(&format!("redis-im: could not register {name:?} {sub:?}"));
                return false;
            }
            let full = format!("{}|{}", name.to_string_lossy(), sub.to_string_lossy());
            let Ok(full) = std::ffi::CString::new(full) else {
                return false;
            };
            if !info.register(ctx, &full) {
                return false;
            }
        }
    }
    true
}

/// Whether the server took the module's own ACL category `im`
/// ([`add_acl_category`]).
static IM_CATEGORY: AtomicBool = AtomicBool::new(false);

/// Adds the ACL category `im` (`RedisModule_AddACLCategory`: Redis 7.4+,
/// and Valkey where it has the call); false when the server has no such
/// call, and the commands then go without it. Called once, while the
/// module loads (the only time the server accepts it).
pub fn add_acl_category(ctx: &Context) -> bool {
    // SAFETY: at load time, with the module's context; the name outlives
    // the call.
    let added = unsafe {
        match raw::RedisModule_AddACLCategory {
            Some(add) => {
                add(ctx.get_raw(), command_docs::CATEGORY.as_ptr()) == raw::REDISMODULE_OK as c_int
            }
            None => false,
        }
    };
    if !added {
        log::notice("redis-im: this server cannot add ACL categories; the commands go without @im");
    }
    IM_CATEGORY.store(added, Ordering::Relaxed);
    added
}

/// Sets the ACL categories `acl` (space-separated, without `@`) on a
/// command (`RedisModule_SetCommandACLCategories`: Redis 7.2+, Valkey);
/// a server without the call is not refused. `im` is left out when the
/// server did not take it.
///
/// # Safety
/// `command` is a command of this module, at load time.
unsafe fn set_acl_categories(
    command: *mut raw::RedisModuleCommand,
    name: &CStr,
    acl: &str,
) -> bool {
    let Some(set) = raw::RedisModule_SetCommandACLCategories else {
        return true;
    };
    let categories = command_docs::categories(acl, IM_CATEGORY.load(Ordering::Relaxed));
    if categories.is_empty() {
        return true;
    }
    let Ok(categories) = std::ffi::CString::new(categories) else {
        return false;
    };
    if set(command, categories.as_ptr()) != raw::REDISMODULE_OK as c_int {
        log::warning(&format!(
            "redis-im: the server refused the ACL categories {categories:?} of {name:?}"
        ));
        return false;
    }
    true
}

/// The arguments in the server's form: each list ends with a zeroed
/// entry; the lists live in `lists` until the server has copied them.
fn raw_args(
    args: &[Arg],
    key_spec: bool,
    lists: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> *mut raw::RedisModuleCommandArg {
    let mut list: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
    for a in args {
        // SAFETY: a C struct of pointers and integers, valid zeroed.
        let mut r: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
        r.name = a.name.as_ptr();
        r.key_spec_index = -1;
        r.type_ = match a.kind {
            ArgKind::Key => {
                // The one key spec, when the command declares it.
                r.key_spec_index = if key_spec { 0 } else { -1 };
                if key_spec {
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY
                } else {
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING
                }
            }
            ArgKind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgKind::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            ArgKind::OneOf(sub) => {
                r.subargs = raw_args(sub, key_spec, lists);
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF
            }
            ArgKind::Block(sub) => {
                r.subargs = raw_args(sub, key_spec, lists);
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK
            }
        };
        if let Some(t) = a.token {
            r.token = t.as_ptr();
        }
        let mut flags = 0;
        if a.optional {
            flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        }
        if a.multiple {
            flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        }
        r.flags = flags as c_int;
        list.push(r);
    }
    // SAFETY: as above; a zeroed entry (no name) ends the list.
    list.push(unsafe { std::mem::zeroed() });
    // The list's buffer stays where it is when `lists` grows.
    let ptr = list.as_mut_ptr();
    lists.push(list);
    ptr
}

/// What `COMMAND INFO` and `COMMAND DOCS` tell of a command, set with
/// `RedisModule_SetCommandInfo` (Redis 7.0+, Valkey 7.2+), and its ACL
/// categories.
pub struct CommandInfo {
    /// As in `COMMAND INFO`: N exactly, -N at least N (the name counts).
    pub arity: i32,
    /// `REDISMODULE_CMD_KEY_*` flags of the one key; 0 for a keyless
    /// command.
    pub key_flags: u32,
    /// Where the key is in the arguments (1: after the name; 2: after a
    /// container command's name and the subcommand's).
    pub key_pos: i32,
    /// One line on what it does (`COMMAND DOCS`, `redis-cli`'s `HELP`).
    pub summary: &'static CStr,
    /// Its cost, in the words of the Redis command pages.
    pub complexity: &'static CStr,
    /// Its arguments, after the command's name.
    pub args: &'static [Arg],
    /// Command tips (`request_policy:...`), if any.
    pub tips: Option<&'static CStr>,
    /// ACL categories, space-separated, without `@`.
    pub acl: &'static str,
    /// The command's flags (`write deny-oom`), from which its `@write`
    /// or `@read` and `@slow` follow.
    pub flags: &'static CStr,
}

impl CommandInfo {
    /// Sets it on the command `name` (at load time); false, logged, when
    /// the server refuses. A server without the call keeps the key range
    /// of `RedisModule_CreateCommand` and is not refused.
    pub fn register(&self, ctx: &Context, name: &CStr) -> bool {
        // SAFETY: at load time, with the module's context.
        unsafe {
            let Some(get) = raw::RedisModule_GetCommand else {
                return true;
            };
            let command = get(ctx.get_raw(), name.as_ptr());
            if command.is_null() {
                log::warning(&format!("redis-im: no command {name:?} to describe"));
                return false;
            }
            self.register_described(command, name, true)
        }
    }

    /// As [`CommandInfo::register`], on the command itself; `implied`:
    /// add `@write` or `@read` (from the flags) and `@slow` to the
    /// categories (not on a container, which runs nothing itself).
    ///
    /// # Safety
    /// `command` is a command of this module, at load time.
    unsafe fn register_described(
        &self,
        command: *mut raw::RedisModuleCommand,
        name: &CStr,
        implied: bool,
    ) -> bool {
        // SAFETY: the info and every string it points to outlive the
        // call (the server copies them).
        unsafe {
            let flags = self.flags.to_bytes();
            let implied = if !implied {
                ""
            } else if flags.split(|&b| b == b' ').any(|f| f == b"write") {
                "write slow"
            } else {
                "read slow"
            };
            let acl = format!("{} {implied}", self.acl);
            if !set_acl_categories(command, name, &acl) {
                return false;
            }
            let Some(set) = raw::RedisModule_SetCommandInfo else {
                return true;
            };
            let version = raw::RedisModuleCommandInfoVersion {
                version: 1,
                sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
                sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
                sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
            };
            // The first argument is the key; the list ends with a zeroed
            // spec (begin search `INVALID`).
            let mut specs: [raw::RedisModuleCommandKeySpec; 2] = std::mem::zeroed();
            if self.key_flags != 0 {
                specs[0].flags = u64::from(self.key_flags);
                specs[0].begin_search_type =
                    raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
                specs[0].bs.index.pos = self.key_pos;
                specs[0].find_keys_type =
                    raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
                specs[0].fk.range = raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                    lastkey: 0,
                    keystep: 1,
                    limit: 0,
                };
            }
            let mut lists = Vec::new();
            let args = raw_args(self.args, self.key_flags != 0, &mut lists);
            let mut info: raw::RedisModuleCommandInfo = std::mem::zeroed();
            info.version = &version;
            info.summary = self.summary.as_ptr();
            info.complexity = self.complexity.as_ptr();
            info.since = c"0.1.0".as_ptr();
            info.arity = self.arity;
            info.args = args;
            if let Some(tips) = self.tips {
                info.tips = tips.as_ptr();
            }
            if self.key_flags != 0 {
                info.key_specs = specs.as_mut_ptr();
            }
            if set(command, &info) != raw::REDISMODULE_OK as c_int {
                log::warning(&format!(
                    "redis-im: the server refused the description of {name:?}"
                ));
                return false;
            }
        }
        true
    }
}
