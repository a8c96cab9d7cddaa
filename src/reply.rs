//! Replies, written with the module API so that maps are RESP3 maps (and
//! flat field/value arrays under RESP2) in the order the spec lists them.

use redis_module::raw;
use std::borrow::Cow;
use std::ffi::CString;
use std::os::raw::{c_char, c_long};

#[derive(Debug)]
pub enum Reply {
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(&'static str, Reply)>),
    /// A simple string: the module's own text (`OK`, `HELP`'s lines).
    Simple(Cow<'static, str>),
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

/// A command's answer: the reply, or the error reply (`?` returns it).
pub type Answer = Result<Reply, Reply>;

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
            let c = resp_line(s);
            raw::reply_with_simple_string(ctx, c.as_ptr());
        }
        Reply::Error(msg) => {
            let c = resp_line(msg);
            // SAFETY: a valid context and a NUL-terminated string.
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

/// `text` as one RESP line: CR, LF and NUL become spaces, every other
/// byte stays (an error may quote a user's UTF-8 text). The server writes
/// simple strings and errors up to the NUL, and a CR or LF would break
/// the protocol. (The `redis-module` crate's own conversion cuts each
/// character to one byte, which makes U+4E00 a NUL and then panics.)
fn resp_line(text: &str) -> CString {
    let bytes: Vec<u8> = text
        .bytes()
        .map(|b| {
            if matches!(b, b'\r' | b'\n' | 0) {
                b' '
            } else {
                b
            }
        })
        .collect();
    // No NUL is left.
    CString::new(bytes).unwrap_or_default()
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
