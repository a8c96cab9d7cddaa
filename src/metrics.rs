//! Counters and gauges behind `INFO im`.

use crate::mailbox::Mailbox;
use redis_module::InfoContext;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

macro_rules! metrics {
    ($($name:ident => $field:literal,)*) => {
        $(pub static $name: AtomicI64 = AtomicI64::new(0);)*
        const FIELDS: &[(&str, &AtomicI64)] = &[$(($field, &$name),)*];
    };
}

metrics! {
    MAILBOXES => "mailboxes",
    MESSAGES => "messages",
    BYTES => "bytes",
    PENDING => "pending",
    OFFLINE => "offline",
    ONLINE_DEVICES => "online_devices",
    ARCHIVE_QUEUE => "archive_queue",
    STORED => "stored",
    ACKED => "acked",
    RESENT => "resent",
    EXPIRED => "expired",
    KICKED => "kicked",
    DROPPED => "dropped",
    REJECTED => "rejected",
    ARCHIVED => "archived",
    QUEUED => "archive_queued",
    EVICTED => "evicted",
    IMPORTED => "imported",
    ARCHIVE_LEASED => "archive_leased",
    FORGOTTEN => "forgotten",
    SWEEP_RUNS => "sweep_runs",
    SWEEP_LAST_US => "sweep_last_us",
    SWEEP_LONGEST_US => "sweep_longest_us",
    SWEEP_US => "sweep_us_total",
    SWEEP_LONGEST_CPU_US => "sweep_longest_cpu_us",
    SWEEP_LAST_CPU_US => "sweep_last_cpu_us",
    SWEEP_LONGEST_VISIT_US => "sweep_longest_visit_us",
    SWEEP_LAG_MS => "sweep_lag_ms",
    SCHEDULE_SIZE => "schedule_size",
    SWEEPS_PAUSED => "sweeps_paused",
    SWEEPS_CLUSTER_DOWN => "sweeps_cluster_down",
    SWEEP_FAILURES => "sweep_failures",
    SWEEP_NOT_OWNED => "sweep_not_owned",
    PANICS => "panics",
    REPEATED_IDS_LOADED => "repeated_ids_loaded",
    LOST_EVICTED => "lost_evicted_mailboxes",
    LOST_EVICTED_MESSAGES => "lost_evicted_messages",
    LOST_EXPIRED => "lost_expired_mailboxes",
    LOST_EXPIRED_MESSAGES => "lost_expired_messages",
    DELETED => "deleted_mailboxes",
    DELETED_MESSAGES => "deleted_messages",
}

/// Adds to a counter or gauge. Only the server's main thread (commands,
/// the timer, loading) calls this (`PANICS`, which any thread may count,
/// takes atomic adds): a plain load and store, with no locked
/// instruction on the command path. Mailboxes freed on a lazy-free thread
/// are counted apart, in `FREED`, with atomic adds.
pub fn add(m: &AtomicI64, v: i64) {
    if v != 0 {
        m.store(m.load(Relaxed).wrapping_add(v), Relaxed);
    }
}

/// A mailbox loaded from disk (an RDB, an AOF's `IM.LOAD`) with
/// `repeated` messages whose id another of its messages has (SPEC §1),
/// kept whole: counted in `repeated_ids_loaded` and logged, naming `key`
/// (as `key '...'`, escaped). docs/DESIGN.md, "Replication, AOF and RDB".
pub fn repeated_ids_kept(key: &str, repeated: u64) {
    add(&REPEATED_IDS_LOADED, repeated as i64);
    crate::log::warning(&format!(
        "redis-im: a mailbox loaded with repeated ids ({key}): {repeated} of its messages have an id another of its messages has; every message is kept, and an id finds them one after another"
    ));
}

/// What mailboxes freed on any thread took away from each gauge, in the
/// order of `Gauges::fields`.
static FREED: [AtomicI64; 7] = [const { AtomicI64::new(0) }; 7];

/// The gauges' statics, in the order of `Gauges::fields`.
const GAUGE_STATICS: [&AtomicI64; 7] = [
    &MAILBOXES,
    &MESSAGES,
    &BYTES,
    &PENDING,
    &OFFLINE,
    &ONLINE_DEVICES,
    &ARCHIVE_QUEUE,
];

/// The gauges one mailbox contributes.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Gauges {
    messages: i64,
    bytes: i64,
    pending: i64,
    offline: i64,
    online: i64,
    queued: i64,
}

impl Gauges {
    pub fn of(mb: &Mailbox) -> Gauges {
        let mut g = Gauges {
            messages: mb.log.len() as i64,
            bytes: mb.log.bytes() as i64,
            queued: mb.queued_count() as i64,
            ..Default::default()
        };
        for d in &mb.devices {
            g.pending += d.pending.len() as i64;
            g.offline += d.offline_count() as i64;
            g.online += i64::from(d.online());
        }
        g
    }

    /// One mailbox's share of each gauge, `MAILBOXES` first.
    fn fields(&self) -> [i64; 7] {
        [
            1,
            self.messages,
            self.bytes,
            self.pending,
            self.offline,
            self.online,
            self.queued,
        ]
    }

    /// Moves the totals from `self` (before) to `after` (main thread).
    pub fn update(&self, after: &Gauges) {
        if self != after {
            for ((m, a), b) in GAUGE_STATICS.iter().zip(after.fields()).zip(self.fields()) {
                add(m, a - b);
            }
        }
    }
}

/// A mailbox value came into the keyspace (main thread: load, copy).
pub fn mailbox_added(mb: &Mailbox) {
    for (m, v) in GAUGE_STATICS.iter().zip(Gauges::of(mb).fields()) {
        add(m, v);
    }
}

/// A mailbox value left the keyspace (on any thread: it may be freed
/// lazily).
pub fn mailbox_removed(mb: &Mailbox) {
    for (m, v) in FREED.iter().zip(Gauges::of(mb).fields()) {
        m.fetch_add(v, Relaxed);
    }
}

/// A gauge's value, or a counter's.
pub fn value(m: &AtomicI64) -> i64 {
    let freed = GAUGE_STATICS
        .iter()
        .position(|g| std::ptr::eq(*g, m))
        .map_or(0, |i| FREED[i].load(Relaxed));
    m.load(Relaxed) - freed
}

#[allow(deprecated)]
pub fn info(ctx: &InfoContext, _for_crash_report: bool) {
    ctx.add_info_section(None);
    ctx.add_info_field_str("version", crate::VERSION);
    for (name, v) in FIELDS {
        ctx.add_info_field_long_long(name, value(v));
    }
}
