//! Mailbox keys: opened for reading or writing, and [`Writer::commit`],
//! the one place where a change is applied, replicated, announced and
//! rescheduled. Commands, the timer and the internal commands all write
//! through it.
//!
//! Keys are opened with the module API itself, checked against the
//! mailbox type that registration hands over ([`set_mailbox_type`]).

use crate::events::OfflineWatch;
use crate::mailbox::{effect, Effect, Mailbox};
use crate::metrics::{self, Gauges};
use crate::reply::{error, Reply};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// The error of a key that holds another type (the server's own text).
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The mailbox type, as the server registered it.
static MAILBOX_TYPE: AtomicPtr<raw::RedisModuleType> = AtomicPtr::new(std::ptr::null_mut());

/// Hands over the registered mailbox type (at load time).
pub fn set_mailbox_type(t: *mut raw::RedisModuleType) {
    MAILBOX_TYPE.store(t, Ordering::Release);
}

/// The registered mailbox type (null before registration).
pub fn mailbox_type() -> *mut raw::RedisModuleType {
    MAILBOX_TYPE.load(Ordering::Acquire)
}

/// The highest seq this server has handed out or applied, in any mailbox.
static HIGHEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// How far ahead of the clock's counter (the clock in ms × 1000) a new
/// mailbox's counter may start: 2^50 seqs, the clock's counter over some
/// 35 years. A mailbox gets that far ahead only from a `RESTORE` payload
/// (a counter near the last seq) or a clock set back by decades; without
/// the bound, one such mailbox's store made every mailbox created after it
/// start where it was, and near the last seq a new mailbox could take no
/// message at all.
pub const MAX_AHEAD: u64 = 1 << 50;

/// The counter a mailbox created at `now` (ms) starts at: the clock in ms
/// × 1000, and above every seq this server has handed out or applied
/// since it started (up to [`MAX_AHEAD`] beyond the clock's counter), so
/// that a mailbox deleted and created again in the same millisecond never
/// hands out a seq twice (SPEC §1).
pub fn new_counter(now: i64) -> u64 {
    counter_from(now, HIGHEST_SEQ.load(Ordering::Relaxed))
}

/// [`new_counter`] when the highest seq handed out is `highest`.
fn counter_from(now: i64, highest: u64) -> u64 {
    let clock = (now.max(0) as u64).saturating_mul(1000);
    let above = highest
        .saturating_add(1)
        .min(clock.saturating_add(MAX_AHEAD));
    clock.max(above)
}

/// The effect that creates the mailbox when the key is new.
pub fn create_if_new<'a>(mb: Option<&Mailbox>, now: i64) -> Option<Effect<'a>> {
    mb.is_none().then(|| Effect::Create {
        next_seq: new_counter(now),
    })
}

/// An open key, closed when dropped.
struct Key(*mut raw::RedisModuleKey);

impl Key {
    fn open(ctx: &Context, name: &RedisString, mode: u32) -> Key {
        // SAFETY: a valid context and name; the key is closed on drop.
        Key(unsafe {
            raw::RedisModule_OpenKey.map_or(std::ptr::null_mut(), |f| {
                f(ctx.get_raw(), name.inner, mode as c_int)
            })
        })
    }

    /// The mailbox the key holds: `Ok(None)` for a missing key, `Err` for
    /// a key of another type.
    fn mailbox(&self) -> Result<Option<*mut Mailbox>, Reply> {
        if self.0.is_null() {
            return Ok(None);
        }
        // SAFETY: an open key; the value of a key of the mailbox type is
        // a `Mailbox` this module created.
        unsafe {
            let (Some(key_type), Some(get_type), Some(get_value)) = (
                raw::RedisModule_KeyType,
                raw::RedisModule_ModuleTypeGetType,
                raw::RedisModule_ModuleTypeGetValue,
            ) else {
                return Ok(None);
            };
            match key_type(self.0) as isize {
                raw::REDISMODULE_KEYTYPE_EMPTY => Ok(None),
                raw::REDISMODULE_KEYTYPE_MODULE if get_type(self.0) == mailbox_type() => {
                    let v = get_value(self.0).cast::<Mailbox>();
                    Ok((!v.is_null()).then_some(v))
                }
                _ => Err(error(WRONGTYPE)),
            }
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: opened by `Key::open`, closed once.
            unsafe {
                if let Some(close) = raw::RedisModule_CloseKey {
                    close(self.0);
                }
            }
        }
    }
}

/// The mailbox under `name`, for reading: `Ok(None)` when the key does not
/// exist, `WRONGTYPE` when it holds another type.
pub fn read<'a>(ctx: &Context, name: &RedisString) -> Result<Option<&'a Mailbox>, Reply> {
    let key = Key::open(ctx, name, raw::REDISMODULE_READ);
    // SAFETY: the value lives in the keyspace, which nothing changes while
    // this command (or timer callback) runs; the key handle only closes
    // the lookup.
    Ok(key.mailbox()?.map(|m| unsafe { &*m }))
}

/// A mailbox key opened for writing. When it closes, the key is signalled
/// as modified (touching `WATCH`es and invalidating client-side caches)
/// if, and only if, the writer changed it: a command refused, or one that
/// finds nothing to do (an ack of an unknown id, a timer visit with no
/// work due), leaves other clients' transactions and caches alone.
pub struct Writer<'c> {
    ctx: &'c Context,
    name: &'c RedisString,
    key: Key,
    mb: Option<&'c mut Mailbox>,
    /// The mailbox was (or may have been) changed through this writer.
    changed: bool,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if self.changed {
            // SAFETY: a valid context and key name; the key is still open
            // in the same db (its handle closes after this).
            unsafe {
                if let Some(signal) = raw::RedisModule_SignalModifiedKey {
                    signal(self.ctx.get_raw(), self.name.inner);
                }
            }
        }
    }
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
    /// Opens `name` for writing; `WRONGTYPE` when it holds another type.
    pub fn open(ctx: &'c Context, name: &'c RedisString) -> Result<Writer<'c>, Reply> {
        crate::server::refuse_on_replica(ctx)?;
        let key = Key::open(ctx, name, raw::REDISMODULE_READ | raw::REDISMODULE_WRITE);
        // SAFETY: the value is owned by the keyspace and stays while the
        // key is open; only this writer changes it.
        let mb = key.mailbox()?.map(|m| unsafe { &mut *m });
        Ok(Writer {
            ctx,
            name,
            key,
            mb,
            changed: false,
        })
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        self.mb.as_deref()
    }

    /// Replaces the key's value (`IM.LOAD ... HEAD`; a new mailbox).
    pub fn replace(&mut self, mb: Mailbox) {
        self.changed = true;
        metrics::mailbox_added(&mb);
        self.mb = None;
        let Some(set) = (unsafe { raw::RedisModule_ModuleTypeSetValue }) else {
            metrics::mailbox_removed(&mb);
            return;
        };
        let value = Box::into_raw(Box::new(mb));
        // The server deletes a mailbox the key held before it sets the new
        // one: the module's own replacement, not a loss.
        // SAFETY: an open writable key and a boxed mailbox of the type;
        // the server owns the value once it accepts it (and frees the old
        // one through the type's `free`).
        let set =
            crate::losses::own_delete(|| unsafe { set(self.key.0, mailbox_type(), value.cast()) });
        if set == raw::REDISMODULE_OK as c_int {
            self.mb = Some(unsafe { &mut *value });
        } else {
            // SAFETY: refused, so still ours.
            let mb = unsafe { Box::from_raw(value) };
            metrics::mailbox_removed(&mb);
        }
    }

    /// The mailbox, to change in place (the key is then signalled as
    /// modified when the writer closes).
    pub fn mailbox_mut(&mut self) -> Option<&mut Mailbox> {
        self.changed = true;
        self.mb.as_deref_mut()
    }

    /// Applies the effects at `now`, propagates and announces them, and
    /// deletes the key when nothing is left in it. Answers the last
    /// effect's count (messages moved, deleted or acked).
    pub fn commit(&mut self, now: i64, effects: &[Effect<'_>], propagate: Propagate) -> u64 {
        let Some(last) = effects.last() else {
            return 0;
        };
        self.changed = true;
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
        for e in effects {
            if let Effect::Store { message, .. } = e {
                HIGHEST_SEQ.fetch_max(message.seq, Ordering::Relaxed);
            }
        }
        let before = Gauges::of(mb);
        let keeps_due = mb.keeps_due(effects, &crate::timer::settings());
        // Push hints come from the primary's own changes, not from a
        // replica or the AOF applying them.
        let watch = match propagate {
            Propagate::Verbatim => None,
            _ => OfflineWatch::before(mb, effects),
        };
        let count = effects.iter().fold(0, |_, e| mb.apply(now, e));
        let pushes = watch.map(|w| w.after(mb, self.name.as_slice()));
        crate::archive::changed(self.ctx, self.name.as_slice(), Some(&mut *mb));
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
            // SAFETY: an open writable key.
            crate::losses::own_delete(|| unsafe {
                if let Some(delete) = raw::RedisModule_DeleteKey {
                    delete(self.key.0);
                }
            });
        }
        if !keeps_due {
            crate::timer::changed(self.ctx, self.name.as_slice(), self.mb.as_deref());
        }
        if let Some(pushes) = pushes {
            crate::events::publish(self.ctx, &pushes);
        }
        count
    }
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
        Effect::Queue { .. } => c"im.archive",
        Effect::ArchiveAck { .. } => c"im.archived",
        Effect::Evict => c"im.evict",
        Effect::Unqueue { .. } | Effect::ComeBack | Effect::Imported => c"im.restore",
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

#[cfg(test)]
mod tests {
    use super::{counter_from, MAX_AHEAD};
    use crate::mailbox::MAX_SEQ;

    #[test]
    fn a_new_counter_starts_above_the_clock_and_the_highest_seq_within_bounds() {
        let now = 1_800_000_000_000;
        let clock = 1_800_000_000_000_000;
        assert_eq!(counter_from(now, 0), clock);
        assert_eq!(counter_from(now, clock + 5), clock + 6);
        assert_eq!(counter_from(now, MAX_SEQ), clock + MAX_AHEAD);
        assert_eq!(counter_from(now, u64::MAX), clock + MAX_AHEAD);
        assert_eq!(counter_from(-5, 7), 8);
        assert!(MAX_SEQ - counter_from(now, MAX_SEQ) > 1 << 62);
    }
}
