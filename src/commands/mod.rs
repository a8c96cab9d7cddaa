//! Command handlers, one file per command named after it (`IM.STORE` in
//! `store.rs`, `IM.OFFLINE.PAGE` in `offline_page.rs`). A handler parses
//! its arguments, asks the core (`mailbox`) what to do, commits through
//! `keyspace::Writer` and replies; this file holds the parsing they share.

pub mod ack;
pub mod apply;
pub mod archive_ack;
pub mod archive_pull;
pub mod connect;
pub mod devices;
pub mod disconnect;
pub mod doctor;
pub mod forget;
pub mod help;
pub mod import;
pub mod info;
pub mod load;
pub mod offline_info;
pub mod offline_page;
pub mod store;
pub mod sweep;

use crate::keyspace::{Propagate, Writer};
use crate::log;
use crate::mailbox::{BadNode, Effect};
use crate::reply::{error, Reply};
use crate::server;
use redis_module::{Context, RedisString};

pub use crate::reply::Answer;

pub use crate::mailbox::MAX_NAME;

/// A non-negative integer argument; `what` names it in the error.
pub fn parse_u64(arg: &[u8], what: &str) -> Result<u64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| error(format!("ERR {what} must be a non-negative integer")))
}

/// A device name: 1 to [`MAX_NAME`] bytes, any bytes.
pub fn device_name(arg: &[u8]) -> Result<&[u8], Reply> {
    if arg.is_empty() || arg.len() > MAX_NAME {
        return Err(error(format!(
            "ERR device name must be 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(arg)
}

/// `<command> <user> <device> [...]`: the user, the checked device name
/// and the arguments after them.
pub fn user_device(args: &[RedisString]) -> Result<(&RedisString, &[u8], &[RedisString]), Reply> {
    let [_, user, device, rest @ ..] = args else {
        return Err(Reply::WrongArity);
    };
    Ok((user, device_name(device.as_slice())?, rest))
}

/// `<command> <user>`, nothing after.
pub fn user_only(args: &[RedisString]) -> Result<&RedisString, Reply> {
    match args {
        [_, user] => Ok(user),
        _ => Err(Reply::WrongArity),
    }
}

/// A node name: 1 to [`MAX_NAME`] bytes of `A-Z a-z 0-9 . _ : -` (it
/// becomes part of a Pub/Sub channel's name), and none of the module's own
/// channels (`push`, `archive`): [`crate::mailbox::check_node`].
pub fn node_name(arg: &[u8]) -> Result<&[u8], Reply> {
    match crate::mailbox::check_node(arg) {
        Ok(()) => Ok(arg),
        Err(BadNode::Bytes) => Err(error(format!(
            "ERR node name must be 1 to {MAX_NAME} bytes of A-Z a-z 0-9 . _ : -"
        ))),
        Err(BadNode::Reserved) => Err(error(format!(
            "ERR node name '{}' is reserved: the module's own channel has that name",
            String::from_utf8_lossy(arg)
        ))),
    }
}

/// The error for an option the command does not know (quoting at most 64
/// of its bytes).
pub fn unknown_option(arg: &[u8]) -> Reply {
    error(format!("ERR unknown option '{}'", log::escape(arg, 64)))
}

/// `arg` is the option `word`, in any case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// `<command> <user> <device>`: applies the device's effect when the device
/// is registered and answers its count; 0, changing nothing, otherwise
/// (`IM.DISCONNECT`, `IM.FORGET`). A name no device can have (empty, or
/// longer than [`MAX_NAME`]) is refused as every command refuses it.
pub fn for_registered(
    ctx: &Context,
    args: &[RedisString],
    effect: for<'a> fn(&'a [u8]) -> Effect<'a>,
) -> Answer {
    let [_, user, device] = args else {
        return Err(Reply::WrongArity);
    };
    let device = device_name(device.as_slice())?;
    let mut w = Writer::open(ctx, user)?;
    if w.mailbox().and_then(|m| m.device_index(device)).is_none() {
        return Ok(Reply::Int(0));
    }
    Ok(
        w.commit(server::now_ms(), &[effect(device)], Propagate::Effects)
            .into(),
    )
}
