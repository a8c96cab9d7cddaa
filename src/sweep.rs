//! The timer (spec §5): one module timer, armed on the primary for the next
//! deadline in the schedule, that pops only the mailboxes whose work is due,
//! turns that work into effects (replicated like any command's), publishes
//! the events and re-arms itself. `IM.SWEEP` runs the same work on demand.

use crate::commands::{now_ms, Propagate, Writer};
use crate::config;
use crate::mailbox::timer::TimerSettings;
use crate::mailbox::{Effect, Mailbox};
use crate::schedule::{self, Schedule};
use crate::wrapper::datatype::MAILBOX_TYPE;
use crate::{log, metrics, server};
use base64::Engine;
use redis_module::{raw, Context};
use std::os::raw::c_void;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

/// Most work items taken from one mailbox per visit; the rest waits for
/// the next visit, so that one mailbox cannot blow the budget.
const ITEMS_PER_VISIT: usize = 32;

/// A mailbox whose visit failed (a panic, logged) is visited again this
/// much later, so that it neither stops the timer for the others nor
/// fills the log with one line per run.
const RETRY_FAILED_VISIT_MS: i64 = 10_000;

static SCHEDULE: LazyLock<Mutex<Schedule>> = LazyLock::new(Default::default);
/// The armed timer: its id and when it fires (ms).
static TIMER: Mutex<Option<(u64, i64)>> = Mutex::new(None);
static LAST_RUN: AtomicI64 = AtomicI64::new(0);

fn sched() -> MutexGuard<'static, Schedule> {
    SCHEDULE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn settings() -> TimerSettings {
    TimerSettings {
        resend_interval: config::get(&config::RESEND_INTERVAL),
        ack_timeout: config::get(&config::ACK_TIMEOUT),
        device_idle: config::get(&config::DEVICE_IDLE),
        retention: config::get(&config::RETENTION),
        archive: config::ARCHIVE.load(Relaxed),
    }
}

pub fn is_primary(ctx: &Context) -> bool {
    server::is_primary(ctx)
}

fn set_due(ctx: &Context, key: &[u8], mb: &Mailbox, due: Option<i64>) {
    let mut s = sched();
    s.set(&mb.entry, due, || {
        schedule::slot(server::selected_db(ctx), key)
    });
    metrics::SCHEDULE_SIZE.store(s.len() as i64, Relaxed);
}

/// Records when mailbox `key` (in the selected db) next needs the timer.
pub fn reschedule(ctx: &Context, key: &[u8], mb: &Mailbox) {
    set_due(ctx, key, mb, mb.next_due(&settings()));
    arm(ctx);
}

/// After a command changed mailbox `key` (`None`: it is gone, and its
/// entry went with it): as [`reschedule`], skipped when the mailbox's due
/// time is the one the schedule already holds.
pub fn changed(ctx: &Context, key: &[u8], mb: Option<&Mailbox>) {
    if let Some(m) = mb {
        let due = m.next_due(&settings());
        if m.entry.get().due() != Some(due) {
            set_due(ctx, key, m, due);
            arm(ctx);
        }
    }
}

/// A mailbox left the keyspace or is about to move (`unlink` callback).
pub fn forget(mb: &Mailbox) {
    let mut s = sched();
    s.forget(&mb.entry);
    metrics::SCHEDULE_SIZE.store(s.len() as i64, Relaxed);
}

/// Arms the timer for the next deadline, no sooner than `sweep-interval`
/// after the last run; nothing when there is nothing to wait for.
pub fn arm(ctx: &Context) {
    let interval = config::get(&config::SWEEP_INTERVAL);
    let mut timer = TIMER.lock().unwrap_or_else(|e| e.into_inner());
    let next = if interval == 0 {
        None
    } else {
        sched().next_due()
    };
    let Some(next) = next else {
        if interval == 0 {
            if let Some((id, _)) = timer.take() {
                stop_timer(ctx, id);
            }
        }
        return;
    };
    let at = next.max(LAST_RUN.load(Relaxed).saturating_add(interval));
    // The usual case, first: the armed timer fires in time.
    if matches!(*timer, Some((_, fires)) if fires <= at) {
        return;
    }
    if !is_primary(ctx) {
        if let Some((id, _)) = timer.take() {
            stop_timer(ctx, id);
        }
        return;
    }
    let now = now_ms();
    let at = at.max(now);
    match *timer {
        Some((_, fires)) if fires <= at => return,
        Some((id, _)) => stop_timer(ctx, id),
        None => {}
    }
    let Some(create) = (unsafe { raw::RedisModule_CreateTimer }) else {
        return;
    };
    let id = unsafe {
        create(
            ctx.get_raw(),
            at - now,
            Some(crate::wrapper::timer::on_timer),
            std::ptr::null_mut(),
        )
    };
    *timer = Some((id, at));
}

fn stop_timer(ctx: &Context, id: u64) {
    if let Some(stop) = unsafe { raw::RedisModule_StopTimer } {
        let mut data: *mut c_void = std::ptr::null_mut();
        unsafe { stop(ctx.get_raw(), id, &mut data) };
    }
}

/// The timer fired: it is no longer armed. Noted first, before the run,
/// whose own changes re-arm the timer, which must then wait a whole
/// interval.
pub fn timer_fired() {
    *TIMER.lock().unwrap_or_else(|e| e.into_inner()) = None;
    LAST_RUN.store(now_ms(), Relaxed);
}

/// One timer run on a primary, within `sweep-budget`. Nothing while the
/// server pauses writes ([`server::writes_paused`]): what falls due
/// meanwhile waits for the first run after the pause (the timer looks
/// again every `sweep-interval`).
pub fn timer_run(ctx: &Context) {
    if is_primary(ctx) && config::get(&config::SWEEP_INTERVAL) > 0 {
        let budget = config::get(&config::SWEEP_BUDGET).max(1) as u64;
        run(ctx, Some(budget), None);
    }
}

/// What one sweep did (the reply of `IM.SWEEP`).
#[derive(Debug, Default)]
pub struct Report {
    pub resent: u64,
    pub expired: u64,
    pub kicked: u64,
    pub archived: u64,
    pub dropped: u64,
    pub forgotten: u64,
    /// ms until the next due work, -1 when none.
    pub next: i64,
}

/// Does the due work: until `budget_us` is spent or `limit` mailboxes were
/// visited, whichever comes first. Nothing while the server pauses writes.
/// A visit that fails is logged and retried later; the others go on.
pub fn run(ctx: &Context, budget_us: Option<u64>, limit: Option<usize>) -> Report {
    let mut r = Report::default();
    if server::writes_paused() {
        r.next = sched().next_due().map_or(-1, |d| (d - now_ms()).max(0));
        metrics::add(&metrics::SWEEPS_PAUSED, 1);
        return r;
    }
    let start = Instant::now();
    let s = settings();
    let keep_db = server::KeepDb::new(ctx);
    let mut visited = 0usize;
    // The longest visit so far: a visit starts only if one that long
    // still fits in the budget.
    let mut longest_visit = 0u64;
    loop {
        let spent = start.elapsed().as_micros() as u64;
        if budget_us.is_some_and(|b| spent + longest_visit > b)
            || limit.is_some_and(|l| visited >= l)
        {
            break;
        }
        let now = now_ms();
        let Some((due, id, slot)) = sched().pop_due(now) else {
            break;
        };
        visited += 1;
        let (db, key) = schedule::split(&slot);
        if server::select_db(ctx, db) {
            let mut part = Report::default();
            let ok = crate::wrapper::guard(
                "a timer visit",
                || false,
                || {
                    visit(ctx, key, (due, id), now, &s, &mut part);
                    true
                },
            );
            if ok {
                r.add(&part);
            } else {
                visit_failed(ctx, key, now);
            }
        }
        longest_visit = longest_visit.max(start.elapsed().as_micros() as u64 - spent);
    }
    drop(keep_db);
    metrics::SCHEDULE_SIZE.store(sched().len() as i64, Relaxed);
    r.next = sched().next_due().map_or(-1, |d| (d - now_ms()).max(0));
    let us = start.elapsed().as_micros() as i64;
    metrics::add(&metrics::SWEEP_RUNS, 1);
    metrics::SWEEP_LAST_US.store(us, Relaxed);
    metrics::SWEEP_LONGEST_US.fetch_max(us, Relaxed);
    metrics::add(&metrics::RESENT, r.resent as i64);
    metrics::add(&metrics::EXPIRED, r.expired as i64);
    metrics::add(&metrics::KICKED, r.kicked as i64);
    metrics::add(&metrics::DROPPED, r.dropped as i64);
    metrics::add(&metrics::FORGOTTEN, r.forgotten as i64);
    r
}

/// A visit failed (its panic is logged): the mailbox is named in the log
/// and visited again after [`RETRY_FAILED_VISIT_MS`].
fn visit_failed(ctx: &Context, key: &[u8], now: i64) {
    metrics::add(&metrics::SWEEP_FAILURES, 1);
    log::warning(&format!(
        "redis-im: the timer could not visit mailbox '{}' (db {}); it is visited again in {} ms",
        log::escape(key, 128),
        server::selected_db(ctx),
        RETRY_FAILED_VISIT_MS
    ));
    crate::wrapper::guard(
        "rescheduling a mailbox after a failed visit",
        || (),
        || {
            let name = server::string(ctx, key);
            let k = ctx.open_key(&name);
            if let Ok(Some(mb)) = k.get_value::<Mailbox>(&MAILBOX_TYPE) {
                forget(mb);
                set_due(
                    ctx,
                    key,
                    mb,
                    Some(now.saturating_add(RETRY_FAILED_VISIT_MS)),
                );
            }
        },
    );
}

impl Report {
    fn add(&mut self, o: &Report) {
        self.resent += o.resent;
        self.expired += o.expired;
        self.kicked += o.kicked;
        self.archived += o.archived;
        self.dropped += o.dropped;
        self.forgotten += o.forgotten;
    }
}

/// An event as one JSON object: `event` first, then the fields in the
/// order given (SPEC §5 shows them). A field of client bytes is a JSON
/// string under its name when the bytes are UTF-8, and their standard
/// base64 under `<name>_base64` when they are not (SPEC §5: keys, devices
/// and ids are binary-safe, JSON strings are not).
fn event_json(event: &str, fields: &[(&'static str, Field<'_>)]) -> String {
    let mut out = String::with_capacity(128);
    let string = |out: &mut String, s: &str| {
        // Writing a str to a String cannot fail.
        if let Ok(quoted) = serde_json::to_string(s) {
            out.push_str(&quoted);
        }
    };
    out.push_str("{\"event\":");
    string(&mut out, event);
    for (name, v) in fields {
        out.push(',');
        match v {
            Field::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => {
                    string(&mut out, name);
                    out.push(':');
                    string(&mut out, t);
                }
                Err(_) => {
                    string(&mut out, &format!("{name}_base64"));
                    out.push(':');
                    string(
                        &mut out,
                        &base64::engine::general_purpose::STANDARD.encode(b),
                    );
                }
            },
            Field::Text(t) => {
                string(&mut out, name);
                out.push(':');
                string(&mut out, t);
            }
            Field::Int(n) => {
                string(&mut out, name);
                out.push(':');
                out.push_str(&n.to_string());
            }
        }
    }
    out.push('}');
    out
}

/// One field of an event.
enum Field<'a> {
    /// Client bytes: a key, a device, an id, a stanza.
    Bytes(&'a [u8]),
    /// The module's own text.
    Text(&'a str),
    Int(u64),
}

/// An event for `node`, ready to publish.
pub struct Event {
    node: Vec<u8>,
    json: String,
}

/// The `kick` event for a device whose session is given up.
pub fn kick_event(mb: &Mailbox, user: &[u8], device: usize, reason: &str) -> Event {
    let d = &mb.devices[device];
    let seq = d.pending.oldest().map_or(0, |(_, s)| s);
    let id = mb.log.get(seq).map(|m| m.id).unwrap_or_default();
    let json = event_json(
        "kick",
        &[
            ("user", Field::Bytes(user)),
            ("device", Field::Bytes(&d.name)),
            ("reason", Field::Text(reason)),
            ("seq", Field::Int(seq)),
            ("id", Field::Bytes(id)),
        ],
    );
    Event {
        node: d.node.to_vec(),
        json,
    }
}

/// Publishes events on `<event-prefix><node>` (any bytes).
pub fn publish(ctx: &Context, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let prefix = config::event_prefix();
    let mut channel = Vec::with_capacity(prefix.len() + 32);
    for e in events {
        channel.clear();
        channel.extend_from_slice(prefix.as_bytes());
        channel.extend_from_slice(&e.node);
        server::publish(ctx, &channel, e.json.as_bytes());
    }
}

fn visit(
    ctx: &Context,
    key: &[u8],
    (due, id): (i64, u64),
    now: i64,
    s: &TimerSettings,
    r: &mut Report,
) {
    crate::wrapper::debug_panic(key);
    let name = server::string(ctx, key);
    let Ok(mut w) = Writer::open(ctx, &name) else {
        return;
    };
    let Some(mb) = w.mailbox() else {
        return;
    };
    // Its entry was just popped from the schedule.
    if mb.entry.get() != (schedule::Entry::At { due, id }) {
        return;
    }
    mb.entry.set(schedule::Entry::Unknown);
    let work = mb.due_work(now, s, ITEMS_PER_VISIT);
    if work.is_empty() {
        reschedule(ctx, key, mb);
        return;
    }
    let names: Vec<Vec<u8>> = mb.devices.iter().map(|d| d.name.to_vec()).collect();
    let mut events = Vec::new();
    let mut effects: Vec<Effect<'_>> = Vec::new();
    for (di, seqs) in &work.resend {
        let d = &mb.devices[*di];
        for &seq in seqs {
            let (Some(m), Some(p)) = (mb.log.get(seq), d.pending.get(seq)) else {
                continue;
            };
            let json = event_json(
                "resend",
                &[
                    ("user", Field::Bytes(key)),
                    ("device", Field::Bytes(&d.name)),
                    ("seq", Field::Int(seq)),
                    ("id", Field::Bytes(m.id)),
                    (
                        "attempt",
                        Field::Int(u64::from(p.attempts.saturating_add(1))),
                    ),
                    ("stanza", Field::Bytes(m.stanza)),
                ],
            );
            events.push(Event {
                node: d.node.to_vec(),
                json,
            });
        }
        r.resent += seqs.len() as u64;
    }
    for &(di, _) in &work.expire {
        events.push(kick_event(mb, key, di, "ack-timeout"));
        r.expired += mb.devices[di].pending.len() as u64;
        r.kicked += 1;
    }
    for (di, seqs) in work.resend {
        effects.push(Effect::Resend {
            device: &names[di],
            seqs,
        });
    }
    for &(di, _) in &work.expire {
        effects.push(Effect::Expire { device: &names[di] });
    }
    for &di in &work.forget {
        effects.push(Effect::Forget { device: &names[di] });
        r.forgotten += 1;
    }
    for &seq in &work.drop {
        effects.push(Effect::Drop { seq });
        r.dropped += 1;
    }
    w.commit(now, &effects, Propagate::Timer);
    publish(ctx, &events);
}

/// Empties the schedule (before a rebuild from every mailbox).
pub fn clear_schedule() {
    sched().clear();
    metrics::SCHEDULE_SIZE.store(0, Relaxed);
}

/// Schedules a mailbox found by the scan of a rebuild: its entry is made
/// anew (the schedule was emptied).
pub fn schedule_scanned(db: i32, key: &[u8], mb: &Mailbox, settings: &TimerSettings) {
    mb.entry.set(schedule::Entry::Unknown);
    let mut s = sched();
    match mb.next_due(settings) {
        Some(due) => s.set(&mb.entry, Some(due), || schedule::slot(db, key)),
        None => mb.entry.set(schedule::Entry::Idle),
    }
    metrics::SCHEDULE_SIZE.store(s.len() as i64, Relaxed);
}

/// Called when a mailbox arrives under a new name (RENAME, MOVE, COPY,
/// RESTORE): schedule it there.
pub fn key_arrived(ctx: &Context, key: &[u8]) {
    let name = server::string(ctx, key);
    let k = ctx.open_key(&name);
    if let Ok(Some(mb)) = k.get_value::<Mailbox>(&MAILBOX_TYPE) {
        // A copy has no entry; a moved mailbox lost its old one when it
        // left its old name.
        forget(mb);
        reschedule(ctx, key, mb);
    }
}

/// Stops the timer (this server became a replica).
pub fn disarm(ctx: &Context) {
    if let Some((id, _)) = TIMER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        stop_timer(ctx, id);
    }
}
