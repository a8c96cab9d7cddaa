//! The node's archive index (SPEC §6): which mailboxes of this node hold
//! messages in the archive queue, and the leases `IM.ARCHIVE.PULL` gave
//! out. The queue itself lives in each mailbox (persisted, replicated,
//! carried along when a key moves); this index is memory only, kept up as
//! mailboxes change and rebuilt with the timer's schedule after a load. A
//! lease is memory only too, and this node's: after a restart or a
//! failover, and on the new owner of a mailbox whose slot moved, every
//! queued message is handed out again, which an archiver writing
//! idempotently on `(user, seq)` takes in its stride.

use crate::mailbox::Mailbox;
use crate::schedule::{self, KeyName};
use crate::server;
use redis_module::Context;
use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Messages handed out by one pull, at most.
pub const MAX_PULL: u64 = 1000;

/// A mailbox's lease: its queued messages up to `up_to` (seq) are handed
/// out until `until` (Unix ms).
#[derive(Clone, Copy, Debug)]
struct Lease {
    up_to: u64,
    until: i64,
    count: u64,
}

#[derive(Default)]
struct Index {
    /// Mailboxes with queued messages, by db and key.
    names: BTreeSet<KeyName>,
    leases: HashMap<KeyName, Lease>,
    /// Where the next pull starts: after this name (so that a pull that
    /// stops at its count does not hand out the same mailboxes first every
    /// time).
    cursor: Option<KeyName>,
}

static INDEX: LazyLock<Mutex<Index>> = LazyLock::new(Default::default);

fn index() -> MutexGuard<'static, Index> {
    INDEX.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a change of mailbox `key` (in the selected db): enters it in the
/// index when it has queued messages, takes it out when it has none; then
/// lets its archive state go if it holds nothing.
pub fn changed(ctx: &Context, key: &[u8], mb: Option<&mut Mailbox>) {
    let Some(mb) = mb else {
        return;
    };
    if mb.archive.is_none() {
        return;
    }
    note(mb, || schedule::key_name(server::selected_db(ctx), key));
    mb.tidy_archive();
}

/// Enters or takes out a mailbox, as its queue says.
fn note(mb: &Mailbox, name: impl FnOnce() -> KeyName) {
    let Some(a) = mb.archive.as_ref() else {
        return;
    };
    let mut indexed = a.indexed.borrow_mut();
    match (a.count > 0, indexed.is_some()) {
        (true, false) => {
            let n = name();
            index().names.insert(n.clone());
            *indexed = Some(n);
        }
        (false, true) => {
            if let Some(n) = indexed.take() {
                let mut i = index();
                i.names.remove(&n);
                i.leases.remove(&n);
            }
        }
        _ => {}
    }
}

/// A mailbox left the keyspace or is about to move (`unlink`).
pub fn forget(mb: &Mailbox) {
    if let Some(n) = mb
        .archive
        .as_ref()
        .and_then(|a| a.indexed.borrow_mut().take())
    {
        let mut i = index();
        i.names.remove(&n);
        i.leases.remove(&n);
    }
}

/// Empties the index (before a rebuild from every mailbox).
pub fn clear() {
    let mut i = index();
    i.names.clear();
    i.leases.clear();
    i.cursor = None;
}

/// Enters a mailbox found by the scan of a rebuild, or arriving under a
/// new name.
pub fn scanned(db: i32, key: &[u8], mb: &Mailbox) {
    if let Some(a) = mb.archive.as_ref() {
        *a.indexed.borrow_mut() = None;
    }
    note(mb, || schedule::key_name(db, key));
}

/// Messages leased now (for `INFO im`).
pub fn leased_now() -> u64 {
    let now = server::now_ms();
    index()
        .leases
        .values()
        .filter(|l| l.until > now)
        .map(|l| l.count)
        .sum()
}

/// How many mailboxes hold queued messages.
pub fn mailboxes() -> usize {
    index().names.len()
}

/// A mailbox a pull may take from: its name, the first seq not under a
/// lease, and how many of its messages the live lease covers.
pub struct Candidate {
    pub name: KeyName,
    pub from: u64,
    pub leased: u64,
}

/// The mailboxes of db `db` a pull at `now` visits, in order: from after
/// the last pull's stop on, then from the start. (The cursor's own mailbox
/// may have left the index since: the names after it are those greater
/// than it, whether it is there or not.)
pub fn candidates(db: i32, now: i64) -> Vec<Candidate> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let i = index();
    let (after, before): (Vec<&KeyName>, Vec<&KeyName>) = match &i.cursor {
        Some(c) => (
            i.names.range((Excluded(c.clone()), Unbounded)).collect(),
            i.names.range((Unbounded, Included(c.clone()))).collect(),
        ),
        None => (i.names.iter().collect(), Vec::new()),
    };
    after
        .into_iter()
        .chain(before)
        .filter(|name| schedule::split(name).0 == db)
        .map(|name| {
            let lease = i.leases.get(name).filter(|l| l.until > now);
            Candidate {
                name: name.clone(),
                from: lease.map_or(0, |l| l.up_to.saturating_add(1)),
                leased: lease.map_or(0, |l| l.count),
            }
        })
        .collect()
}

/// A pull handed out a mailbox's queued messages up to `up_to` (seq),
/// `count` of them under this lease in all, until `until` (Unix ms).
pub fn leased(name: KeyName, up_to: u64, until: i64, count: u64) {
    let mut i = index();
    i.leases.insert(
        name.clone(),
        Lease {
            up_to,
            until,
            count,
        },
    );
    i.cursor = Some(name);
}
