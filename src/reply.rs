//! Replies, written with the module API so that maps are RESP3 maps (and
//! flat field/value arrays under RESP2) in the order the spec lists them.

use redis_module::raw;
use std::ffi::CString;
use std::os::raw::{c_char, c_long};

#[derive(Debug)]
pub enum Reply {
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(&'static str, Reply)>),
    Simple(&'static str),
    Error(String),
    /// `ERR wrong number of arguments for '<command>' command`.
    WrongArity,
    /// The handler wrote its reply itself (the last thing it did).
    Sent,
}

impl From<u64> for Reply {
    fn from(v: u64) -> Reply {
        Reply::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<&[u8]> for Reply {
    fn from(v: &[u8]) -> Reply {
        Reply::Bulk(v.to_vec())
    }
}

/// An error reply; `msg` starts with its code (`ERR`, `IMFULL`, ...).
pub fn error(msg: impl Into<String>) -> Reply {
    Reply::Error(msg.into())
}

pub fn send(context: &redis_module::Context, r: &Reply) {
    let ctx = context.get_raw();
    match r {
        Reply::Int(v) => {
            raw::reply_with_long_long(ctx, *v);
        }
        Reply::Bulk(b) => {
            raw::reply_with_string_buffer(ctx, b.as_ptr().cast::<c_char>(), b.len());
        }
        Reply::Nil => {
            raw::reply_with_null(ctx);
        }
        Reply::Array(items) => {
            raw::reply_with_array(ctx, items.len() as c_long);
            for i in items {
                send(context, i);
            }
        }
        Reply::Map(fields) => {
            raw::reply_with_map(ctx, fields.len() as c_long);
            for (k, v) in fields {
                raw::reply_with_string_buffer(ctx, k.as_ptr().cast::<c_char>(), k.len());
                send(context, v);
            }
        }
        Reply::Simple(s) => {
            let c = CString::new(*s).unwrap_or_default();
            raw::reply_with_simple_string(ctx, c.as_ptr());
        }
        Reply::Error(msg) => {
            // Straight to the module API: `raw::reply_with_error` casts each
            // character to a byte, which mangles UTF-8 and panics (aborting
            // the server) on a character that becomes NUL, such as U+0100.
            let c = CString::new(msg.replace(['\r', '\n', '\0'], " ")).unwrap_or_default();
            unsafe {
                if let Some(f) = raw::RedisModule_ReplyWithError {
                    f(ctx, c.as_ptr());
                }
            }
        }
        Reply::WrongArity => unsafe {
            if let Some(f) = raw::RedisModule_WrongArity {
                f(ctx);
            }
        },
        Reply::Sent => {}
    }
}

/// Writes `[seq, id, [device, ...]]` (IM.STORE) without building it first.
pub fn send_stored<'a>(
    context: &redis_module::Context,
    seq: u64,
    id: &[u8],
    devices: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Reply {
    let ctx = context.get_raw();
    raw::reply_with_array(ctx, 3);
    raw::reply_with_long_long(ctx, i64::try_from(seq).unwrap_or(i64::MAX));
    raw::reply_with_string_buffer(ctx, id.as_ptr().cast::<c_char>(), id.len());
    raw::reply_with_array(ctx, devices.len() as c_long);
    for d in devices {
        raw::reply_with_string_buffer(ctx, d.as_ptr().cast::<c_char>(), d.len());
    }
    Reply::Sent
}
