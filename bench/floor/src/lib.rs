//! The floor of a module's store: what any module command that keeps a
//! message in an existing per-user key must do, and nothing more, so that
//! `scripts/bench` can set `IM.STORE`'s server time and throughput beside
//! what the server's module API alone costs on keys of the same names.
//!
//! - `FLOOR.INIT <key>`: makes `<key>` a value of the type `floor-box`
//!   (an empty byte buffer and a counter), replacing whatever the key
//!   held; replies `OK`.
//! - `FLOOR.STORE <key> <bytes>`: opens `<key>` for writing (as
//!   `IM.STORE` opens a mailbox: `RedisModule_OpenKey`), appends `<bytes>`
//!   to its buffer, counts it, replicates the command verbatim, and
//!   replies as `IM.STORE` does for one pending device:
//!   `[seq, id, [device]]` with a fixed 14-byte id and the device `phone`
//!   (five reply calls). A key that is missing or of another type gets
//!   `ERR no floor-box at this key`.
//!
//! It parses nothing and keeps no index, no deliveries and no schedule;
//! a value goes to RDB as its counter and its bytes and comes back from
//! it (an AOF without the RDB preamble cannot hold it). A yardstick for a
//! benchmark's throwaway server: never load it on a server that keeps
//! data.

use redis_module::native_types::RedisType;
use redis_module::{raw, redis_module, Context, RedisString, Status};
use std::os::raw::{c_char, c_int, c_void};

/// A key's value: the bytes appended so far and how many appends.
struct FloorBox {
    seq: i64,
    bytes: Vec<u8>,
}

static FLOOR_TYPE: RedisType = RedisType::new(
    "floor-box",
    0,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// A value written by [`rdb_save`]; null (the server then stops the
/// load) when the RDB is short.
unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    let (Ok(seq), Ok(bytes)) = (raw::load_signed(rdb), raw::load_string_buffer(rdb)) else {
        return std::ptr::null_mut();
    };
    let value = FloorBox {
        seq,
        bytes: bytes.as_ref().to_vec(),
    };
    Box::into_raw(Box::new(value)).cast::<c_void>()
}

/// The counter, then the bytes.
unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    if let Some(v) = value.cast::<FloorBox>().as_ref() {
        raw::save_signed(rdb, v.seq);
        raw::save_slice(rdb, &v.bytes);
    }
}

unsafe extern "C" fn free(value: *mut c_void) {
    if !value.is_null() {
        drop(Box::from_raw(value.cast::<FloorBox>()));
    }
}

fn reply_error(ctx: *mut raw::RedisModuleCtx, msg: &std::ffi::CStr) -> c_int {
    // SAFETY: a command's context and a NUL-terminated message.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplyWithError {
            f(ctx, msg.as_ptr());
        }
    }
    raw::REDISMODULE_OK as c_int
}

fn arity(ctx: *mut raw::RedisModuleCtx) -> c_int {
    // SAFETY: a command's context.
    unsafe {
        if let Some(f) = raw::RedisModule_WrongArity {
            f(ctx);
        }
    }
    raw::REDISMODULE_OK as c_int
}

/// `FLOOR.INIT <key>`.
unsafe extern "C" fn init_command(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    if argc != 2 {
        return arity(ctx);
    }
    let (Some(open), Some(set), Some(close)) = (
        raw::RedisModule_OpenKey,
        raw::RedisModule_ModuleTypeSetValue,
        raw::RedisModule_CloseKey,
    ) else {
        return reply_error(ctx, c"ERR the server lacks a call this module needs");
    };
    let key =
        open(ctx, *argv.add(1), raw::REDISMODULE_WRITE as c_int).cast::<raw::RedisModuleKey>();
    let value = Box::into_raw(Box::new(FloorBox {
        seq: 0,
        bytes: Vec::new(),
    }));
    let set_ok = set(key, *FLOOR_TYPE.raw_type.borrow(), value.cast::<c_void>());
    close(key);
    if set_ok != raw::REDISMODULE_OK as c_int {
        drop(Box::from_raw(value));
        return reply_error(ctx, c"ERR the server refused the value");
    }
    raw::reply_with_simple_string(ctx, c"OK".as_ptr());
    raw::REDISMODULE_OK as c_int
}

/// `FLOOR.STORE <key> <bytes>`.
unsafe extern "C" fn store_command(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    if argc != 3 {
        return arity(ctx);
    }
    let (Some(open), Some(get_type), Some(get_value), Some(close), Some(verbatim)) = (
        raw::RedisModule_OpenKey,
        raw::RedisModule_ModuleTypeGetType,
        raw::RedisModule_ModuleTypeGetValue,
        raw::RedisModule_CloseKey,
        raw::RedisModule_ReplicateVerbatim,
    ) else {
        return reply_error(ctx, c"ERR the server lacks a call this module needs");
    };
    let mut len = 0;
    let ptr = raw::string_ptr_len(*argv.add(2), &mut len);
    let bytes: &[u8] = if ptr.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    };
    let key =
        open(ctx, *argv.add(1), raw::REDISMODULE_WRITE as c_int).cast::<raw::RedisModuleKey>();
    if get_type(key) != *FLOOR_TYPE.raw_type.borrow() {
        close(key);
        return reply_error(ctx, c"ERR no floor-box at this key");
    }
    let value = &mut *get_value(key).cast::<FloorBox>();
    value.bytes.extend_from_slice(bytes);
    value.seq += 1;
    let seq = value.seq;
    close(key);
    verbatim(ctx);
    const ID: &[u8] = b"x12345-67890-1";
    const DEVICE: &[u8] = b"phone";
    raw::reply_with_array(ctx, 3);
    raw::reply_with_long_long(ctx, seq);
    raw::reply_with_string_buffer(ctx, ID.as_ptr().cast::<c_char>(), ID.len());
    raw::reply_with_array(ctx, 1);
    raw::reply_with_string_buffer(ctx, DEVICE.as_ptr().cast::<c_char>(), DEVICE.len());
    raw::REDISMODULE_OK as c_int
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // SAFETY: the server filled the module API's table before `init`.
    let Some(create) = (unsafe { raw::RedisModule_CreateCommand }) else {
        return Status::Err;
    };
    let commands: [(&std::ffi::CStr, raw::RedisModuleCmdFunc); 2] = [
        (c"floor.init", Some(init_command)),
        (c"floor.store", Some(store_command)),
    ];
    for (name, func) in commands {
        // SAFETY: at load time, with the module's context.
        let ok = unsafe {
            create(
                ctx.get_raw(),
                name.as_ptr(),
                func,
                c"write deny-oom".as_ptr(),
                1,
                1,
                1,
            )
        };
        if ok != raw::REDISMODULE_OK as c_int {
            return Status::Err;
        }
    }
    Status::Ok
}

redis_module! {
    name: "floor",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [FLOOR_TYPE],
    init: init,
    commands: [],
}
