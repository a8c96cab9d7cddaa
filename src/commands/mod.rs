//! Command handlers, one file per family. This file holds what they share:
//! argument parsing, opening a mailbox key, and `commit`, the one place
//! where effects are applied, replicated and announced.

pub mod internal;
pub mod offline;
pub mod session;
pub mod store;
pub mod sweep;

use crate::mailbox::{effect, Effect, Mailbox};
use crate::metrics::{self, Gauges};
use crate::reply::{error, Reply};
use crate::wrapper::datatype::MAILBOX_TYPE;
use redis_module::key::RedisKeyWritable;
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;

pub const MAX_NAME: usize = 256;
pub const MAX_ID: usize = 1024;
/// Devices per mailbox (a message records how many owe it in 11 bits).
pub const MAX_DEVICES: usize = 2000;

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn parse_u64(arg: &[u8], what: &str) -> Result<u64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| error(format!("ERR {what} must be a non-negative integer")))
}

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

pub fn node_name(arg: &[u8]) -> Result<&[u8], Reply> {
    let ok = !arg.is_empty()
        && arg.len() <= MAX_NAME
        && arg
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if !ok {
        return Err(error(format!(
            "ERR node name must be 1 to {MAX_NAME} bytes of A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(arg)
}

pub fn unknown_option(arg: &[u8]) -> Reply {
    error(format!(
        "ERR unknown option '{}'",
        String::from_utf8_lossy(arg)
    ))
}

pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Opens a key for reading: `Ok(None)` when it does not exist.
pub fn read<'a>(ctx: &Context, name: &RedisString) -> Result<Option<&'a Mailbox>, Reply> {
    let key = ctx.open_key(name);
    let mb = key
        .get_value::<Mailbox>(&MAILBOX_TYPE)
        .map_err(|_| error(WRONGTYPE))?;
    // SAFETY: the value lives in the keyspace, which no one changes while
    // this command runs; the key handle only closes the lookup.
    Ok(mb.map(|m| unsafe { &*(m as *const Mailbox) }))
}

/// A mailbox key opened for writing.
pub struct Writer<'c> {
    ctx: &'c Context,
    name: &'c RedisString,
    key: RedisKeyWritable,
    mb: Option<&'c mut Mailbox>,
}

/// How a committed change reaches replicas and the AOF.
#[derive(Clone, Copy)]
pub enum Propagate<'a> {
    /// As one `IM.APPLY` of the effects, when anything propagates (a
    /// command on the primary).
    Effects,
    /// The same, with this argument of the command passed on after the
    /// blob when a stored stanza is its bytes (no copy of the stanza).
    EffectsWith(&'a RedisString),
    /// As the command was given (`IM.APPLY` itself).
    Verbatim,
    /// As one `IM.APPLY` of the effects, always (the timer, which has no
    /// command of its own).
    Timer,
}

impl<'c> Writer<'c> {
    pub fn open(ctx: &'c Context, name: &'c RedisString) -> Result<Writer<'c>, Reply> {
        let key = ctx.open_key_writable(name);
        let mb = key
            .get_value::<Mailbox>(&MAILBOX_TYPE)
            .map_err(|_| error(WRONGTYPE))?;
        Ok(Writer { ctx, name, key, mb })
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        self.mb.as_deref()
    }

    /// Replaces the key's value (`IM.LOAD ... HEAD`).
    pub fn replace(&mut self, mb: Mailbox) {
        metrics::mailbox_added(&mb);
        self.mb = None;
        if self.key.set_value(&MAILBOX_TYPE, mb).is_ok() {
            self.mb = self.key.get_value::<Mailbox>(&MAILBOX_TYPE).ok().flatten();
        }
    }

    pub fn mailbox_mut(&mut self) -> Option<&mut Mailbox> {
        self.mb.as_deref_mut()
    }

    /// Applies the effects at `now`, propagates and announces them, and
    /// deletes the key when nothing is left in it. Answers the last
    /// effect's count (messages moved, deleted or acked).
    pub fn commit(&mut self, now: i64, effects: &[Effect<'_>], propagate: Propagate) -> u64 {
        let Some(last) = effects.last() else {
            return 0;
        };
        if self.mb.is_none() {
            let next_seq = match effects.first() {
                Some(Effect::Create { next_seq }) => *next_seq,
                _ => 0,
            };
            self.replace(Mailbox::new(next_seq, now));
        }
        let Some(mb) = self.mb.as_deref_mut() else {
            return 0;
        };
        let before = Gauges::of(mb);
        let keeps_due = keeps_due(mb, effects);
        let count = effects.iter().fold(0, |_, e| mb.apply(now, e));
        before.update(&Gauges::of(mb));
        let empty = mb.is_empty();
        match propagate {
            Propagate::Effects | Propagate::EffectsWith(_)
                if !crate::propagation::needed(self.ctx) =>
            {
                // Nowhere to go: the change is only counted.
                self.ctx.replicate_verbatim()
            }
            Propagate::Effects | Propagate::Timer => {
                replicate_effects(self.ctx, self.name, now, effects, None)
            }
            Propagate::EffectsWith(a) => {
                replicate_effects(self.ctx, self.name, now, effects, Some(a))
            }
            Propagate::Verbatim => self.ctx.replicate_verbatim(),
        }
        notify(self.ctx, event_name(last), self.name);
        if empty {
            self.mb = None;
            let _ = self.key.delete();
        }
        if !keeps_due {
            crate::sweep::changed(self.ctx, self.name.as_slice(), self.mb.as_deref());
        }
        count
    }
}

/// True when applying `effects` cannot move the mailbox's next deadline
/// from the one the schedule holds: stores appended to a non-empty log,
/// each pending only on devices that already wait for an older message.
/// A new delivery goes behind those (its seq and time are the highest),
/// so the oldest and least recently sent ones stay; the log's head and
/// every device's last-seen time stay as well.
fn keeps_due(mb: &Mailbox, effects: &[Effect<'_>]) -> bool {
    mb.entry.get().due().is_some()
        && !mb.log.is_empty()
        && effects.iter().all(|e| match e {
            Effect::Store {
                seq, ts, pending, ..
            } => {
                // Every last send is a store's time (at most the log's
                // latest) or a resend's (at most the last change's time).
                *seq >= mb.next_seq
                    && *ts >= mb.touched
                    && pending
                        .iter()
                        .all(|n| mb.device(n).is_some_and(|d| !d.pending.is_empty()))
            }
            _ => false,
        })
}

thread_local! {
    /// The replication blob.
    static BLOB: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The keyspace event announcing a change.
fn event_name(e: &Effect<'_>) -> &'static CStr {
    match e {
        Effect::Create { .. } | Effect::Register { .. } => c"im.register",
        Effect::Connect { .. } => c"im.connect",
        Effect::Disconnect { .. } => c"im.disconnect",
        Effect::Forget { .. } => c"im.forget",
        Effect::Store { .. } => c"im.store",
        Effect::Ack { .. } | Effect::AckUpto { .. } => c"im.ack",
        Effect::Drop { .. } => c"im.drop",
        Effect::Resend { .. } => c"im.resend",
        Effect::Expire { .. } => c"im.expire",
    }
}

/// Encodes the effects (in a buffer reused from command to command) and
/// propagates them; `arg` is passed on after the blob when a stored stanza
/// is its bytes.
fn replicate_effects(
    ctx: &Context,
    key: &RedisString,
    now: i64,
    effects: &[Effect<'_>],
    arg: Option<&RedisString>,
) {
    BLOB.with_borrow_mut(|blob| {
        let shared = effect::encode(blob, now, effects, arg.map(|a| a.as_slice()));
        replicate_apply(ctx, key, blob, arg.filter(|_| shared));
        // A rare large blob does not stay.
        if blob.capacity() > 64 * 1024 {
            *blob = Vec::new();
        }
    });
}

/// Propagates `IM.APPLY <key> <effects> [<stanza>]` to replicas and the
/// AOF; the stanza argument is the server's string itself, not a copy.
fn replicate_apply(ctx: &Context, key: &RedisString, blob: &[u8], arg: Option<&RedisString>) {
    if let Some(replicate) = unsafe { raw::RedisModule_Replicate } {
        let ptr = blob.as_ptr().cast::<std::os::raw::c_char>();
        unsafe {
            match arg {
                Some(a) => replicate(
                    ctx.get_raw(),
                    c"IM.APPLY".as_ptr(),
                    c"sbs".as_ptr(),
                    key.inner,
                    ptr,
                    blob.len(),
                    a.inner,
                ),
                None => replicate(
                    ctx.get_raw(),
                    c"IM.APPLY".as_ptr(),
                    c"sb".as_ptr(),
                    key.inner,
                    ptr,
                    blob.len(),
                ),
            };
        }
    }
}

/// A keyspace notification of class module.
fn notify(ctx: &Context, event: &CStr, key: &RedisString) {
    if let Some(notify) = unsafe { raw::RedisModule_NotifyKeyspaceEvent } {
        unsafe {
            notify(
                ctx.get_raw(),
                raw::NotifyEvent::MODULE.bits(),
                event.as_ptr(),
                key.inner,
            );
        }
    }
}
