//! Mailboxes that leave the keyspace behind the module's back (SPEC §8,
//! "no silent loss"): by memory eviction or key expiry, counted in `INFO
//! im` and logged at warning level with what they held; by an operator's
//! `DEL`, `UNLINK`, overwrite or flush, counted apart.
//!
//! The server tells the module that a mailbox leaves (the type's `unlink`
//! callback, with the value still there) before it tells why (the
//! keyspace notification `evicted`, `expired`, `del`, ... that follows for
//! the same key, within the same command): the first is noted, the second
//! decides. A note no generic notification claims was overwritten: by a
//! `RENAME` onto its name (which unlinks it, then the renamed key, before
//! either notification), or by a command of another type's class (`SET`,
//! `SUNIONSTORE`, ...), whose notifications the module does not subscribe
//! to; it is counted as deleted by the operator when the next mailbox
//! leaves, or when the counts are read ([`settle`]). A mailbox the module
//! deletes or replaces itself (emptied by a command or the timer,
//! `IM.LOAD`) is not noted.

use crate::mailbox::Mailbox;
use crate::{log, metrics};
use std::cell::{Cell, RefCell};

/// A mailbox that just left: its key, db, messages and owed deliveries.
struct Left {
    key: Vec<u8>,
    db: i32,
    messages: u64,
    owed: u64,
}

thread_local! {
    /// The mailboxes that left in the current command, their reason still
    /// to come (two at most: a `RENAME` onto a mailbox).
    static LEFT: RefCell<Vec<Left>> = const { RefCell::new(Vec::new()) };
    /// The module is deleting an emptied mailbox itself.
    static OWN_DELETE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, the module's own deletion of an emptied mailbox.
pub fn own_delete<T>(f: impl FnOnce() -> T) -> T {
    OWN_DELETE.with(|d| d.set(true));
    let r = f();
    OWN_DELETE.with(|d| d.set(false));
    r
}

/// Deliveries the mailbox's devices still owe (pending and offline).
fn owed(mb: &Mailbox) -> u64 {
    mb.devices
        .iter()
        .map(|d| d.pending.len() as u64 + d.offline_count())
        .sum()
}

/// Whether a mailbox leaving counts here: not while the server loads (an
/// AOF replays the `DEL`s, flushes and evictions it counted when they
/// happened) and not on a replica (whatever leaves it comes from its
/// primary, which counted, and logged, the loss itself: a replica's
/// expiry or eviction is its primary's `DEL`).
pub fn counted_here() -> bool {
    !crate::server::loading_noted() && !crate::server::replica_noted()
}

/// A mailbox leaves the keyspace (`unlink`), for a reason told next. A
/// mailbox noted before it whose reason never came was overwritten
/// ([`settle`]), unless this is the same command's second unlink: a
/// `RENAME` onto a mailbox unlinks the overwritten one, then the renamed
/// one, and only then notifies (`rename_from` claims the second; the
/// first is an overwrite all the same).
pub fn unlinked(key: &[u8], db: i32, mb: &Mailbox) {
    if OWN_DELETE.with(Cell::get) || !counted_here() {
        return;
    }
    settle();
    LEFT.with_borrow_mut(|l| {
        l.push(Left {
            key: key.to_vec(),
            db,
            messages: mb.log.len(),
            owed: owed(mb),
        })
    });
}

/// Counts the noted mailboxes whose reason never came as deleted by the
/// operator (`deleted_mailboxes`, `deleted_messages`): the server
/// overwrote them. Called when another mailbox leaves and before the
/// counts are read (`INFO im`, `IM.DOCTOR`); a notification comes within
/// the command that unlinked its key, so by then none is on its way.
pub fn settle() {
    for left in LEFT.with_borrow_mut(std::mem::take) {
        metrics::add(&metrics::DELETED, 1);
        metrics::add(&metrics::DELETED_MESSAGES, left.messages as i64);
    }
}

/// Whether a mailbox that just left is noted under `key` in `db`, its
/// reason still to come.
pub fn noted(key: &[u8], db: i32) -> bool {
    LEFT.with_borrow(|l| l.iter().any(|l| l.key == key && l.db == db))
}

/// The keyspace notification `event` for `key` in `db`: when it tells why
/// a noted mailbox left, the loss is counted (and logged when the server
/// threw the mailbox away).
pub fn notified(event: &[u8], key: &[u8], db: i32) {
    let taken = LEFT.with_borrow_mut(|l| {
        let i = l.iter().position(|l| l.key == key && l.db == db)?;
        Some(l.remove(i))
    });
    let Some(left) = taken else {
        return;
    };
    let messages = left.messages as i64;
    match event {
        b"evicted" => {
            metrics::add(&metrics::LOST_EVICTED, 1);
            metrics::add(&metrics::LOST_EVICTED_MESSAGES, messages);
            warn("evicted by maxmemory-policy", &left);
        }
        b"expired" => {
            metrics::add(&metrics::LOST_EXPIRED, 1);
            metrics::add(&metrics::LOST_EXPIRED_MESSAGES, messages);
            warn("expired (the key had a TTL)", &left);
        }
        // Moved, not lost (`slot_moved`: its slot moves to another node).
        b"rename_from" | b"move_from" | b"slot_moved" => {}
        _ => {
            metrics::add(&metrics::DELETED, 1);
            metrics::add(&metrics::DELETED_MESSAGES, messages);
        }
    }
}

fn warn(how: &str, l: &Left) {
    log::warning(&format!(
        "redis-im: mailbox '{}' (db {}) was {how}: {} messages and {} owed deliveries lost",
        log::escape(&l.key, 128),
        l.db,
        l.messages,
        l.owed
    ));
}

/// A flush is about to empty a db (or all): its mailboxes count as
/// deleted by the operator (the caller asks [`counted_here`] first, before
/// it counts them).
pub fn flushed(mailboxes: u64, messages: u64) {
    metrics::add(&metrics::DELETED, mailboxes as i64);
    metrics::add(&metrics::DELETED_MESSAGES, messages as i64);
}
