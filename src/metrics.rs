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
    FORGOTTEN => "forgotten",
    SWEEP_RUNS => "sweep_runs",
    SWEEP_LAST_US => "sweep_last_us",
    SWEEP_LONGEST_US => "sweep_longest_us",
    SCHEDULE_SIZE => "schedule_size",
}

pub fn add(m: &AtomicI64, v: i64) {
    m.fetch_add(v, Relaxed);
}

/// The gauges one mailbox contributes.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Gauges {
    messages: i64,
    bytes: i64,
    pending: i64,
    offline: i64,
    online: i64,
}

impl Gauges {
    pub fn of(mb: &Mailbox) -> Gauges {
        let mut g = Gauges {
            messages: mb.log.len() as i64,
            bytes: mb.log.bytes() as i64,
            ..Default::default()
        };
        for d in &mb.devices {
            g.pending += d.pending.len() as i64;
            g.offline += d.offline_count as i64;
            g.online += i64::from(d.online);
        }
        g
    }

    /// Adds `sign` times these gauges to the totals.
    pub fn apply(&self, sign: i64) {
        add(&MESSAGES, sign * self.messages);
        add(&BYTES, sign * self.bytes);
        add(&PENDING, sign * self.pending);
        add(&OFFLINE, sign * self.offline);
        add(&ONLINE_DEVICES, sign * self.online);
    }

    /// Moves the totals from `self` (before) to `after`.
    pub fn update(&self, after: &Gauges) {
        if self != after {
            self.apply(-1);
            after.apply(1);
        }
    }
}

/// A mailbox value came into the keyspace.
pub fn mailbox_added(mb: &Mailbox) {
    add(&MAILBOXES, 1);
    Gauges::of(mb).apply(1);
}

/// A mailbox value left the keyspace.
pub fn mailbox_removed(mb: &Mailbox) {
    add(&MAILBOXES, -1);
    Gauges::of(mb).apply(-1);
}

#[allow(deprecated)]
pub fn info(ctx: &InfoContext, _for_crash_report: bool) {
    ctx.add_info_section(None);
    for (name, v) in FIELDS {
        ctx.add_info_field_long_long(name, v.load(Relaxed));
    }
}
