//! The timer (spec §5): one module timer, armed on the primary for the next
//! deadline in the schedule, that pops only the mailboxes whose work is due,
//! turns that work into effects (replicated like any command's), publishes
//! the events and re-arms itself. `IM.SWEEP` runs the same work on demand.

use crate::commands::{now_ms, Propagate, Writer};
use crate::config;
use crate::datatype::MAILBOX_TYPE;
use crate::mailbox::timer::TimerSettings;
use crate::mailbox::{Effect, Mailbox};
use crate::metrics;
use crate::schedule::{self, Schedule};
use redis_module::{raw, Context};
use serde::Serialize;
use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

/// Most work items taken from one mailbox per visit; the rest waits for
/// the next visit, so that one mailbox cannot blow the budget.
const ITEMS_PER_VISIT: usize = 32;

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

fn flags(ctx: &Context) -> u32 {
    (unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.get_raw())) }) as u32
}

pub fn is_primary(ctx: &Context) -> bool {
    flags(ctx) & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

fn selected_db(ctx: &Context) -> i32 {
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.get_raw())) }
}

fn select_db(ctx: &Context, db: i32) -> bool {
    unsafe {
        raw::RedisModule_SelectDb
            .is_some_and(|f| f(ctx.get_raw(), db) == raw::REDISMODULE_OK as i32)
    }
}

fn set_due(ctx: &Context, key: &[u8], mb: &Mailbox, due: Option<i64>) {
    let mut s = sched();
    s.set(&mb.entry, due, || schedule::slot(selected_db(ctx), key));
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
            Some(on_timer),
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

/// # Safety
/// Called by Redis on the main thread with a valid context.
unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Context::new(ctx);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        *TIMER.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Noted first: the run's own changes re-arm the timer, which must
        // then wait a whole interval.
        LAST_RUN.store(now_ms(), Relaxed);
        if is_primary(&ctx) && config::get(&config::SWEEP_INTERVAL) > 0 {
            let budget = config::get(&config::SWEEP_BUDGET).max(1) as u64;
            run(&ctx, Some(budget), None);
        }
        arm(&ctx);
    }));
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
/// visited, whichever comes first.
pub fn run(ctx: &Context, budget_us: Option<u64>, limit: Option<usize>) -> Report {
    let start = Instant::now();
    let s = settings();
    let db_before = selected_db(ctx);
    let mut r = Report::default();
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
        if select_db(ctx, db) {
            visit(ctx, key, (due, id), now, &s, &mut r);
        }
        longest_visit = longest_visit.max(start.elapsed().as_micros() as u64 - spent);
    }
    select_db(ctx, db_before);
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

#[derive(Serialize)]
struct ResendEvent<'a> {
    event: &'static str,
    user: &'a str,
    device: &'a str,
    seq: u64,
    id: &'a str,
    attempt: u32,
    stanza: &'a str,
}

#[derive(Serialize)]
struct KickEvent<'a> {
    event: &'static str,
    user: &'a str,
    device: &'a str,
    reason: &'a str,
    seq: u64,
    id: &'a str,
}

fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
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
    let json = serde_json::to_string(&KickEvent {
        event: "kick",
        user: &text(user),
        device: &text(&d.name),
        reason,
        seq,
        id: &text(id),
    })
    .unwrap_or_default();
    Event {
        node: d.node.to_vec(),
        json,
    }
}

/// Publishes events on `<event-prefix><node>`.
pub fn publish(ctx: &Context, events: &[Event]) {
    let Some(publish) = (unsafe { raw::RedisModule_PublishMessage }) else {
        return;
    };
    if events.is_empty() {
        return;
    }
    let prefix = config::event_prefix();
    for e in events {
        let mut channel = prefix.as_bytes().to_vec();
        channel.extend_from_slice(&e.node);
        let channel = ctx.create_string(channel);
        let message = ctx.create_string(e.json.as_bytes());
        unsafe { publish(ctx.get_raw(), channel.inner, message.inner) };
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
    let name = ctx.create_string(key);
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
            let json = serde_json::to_string(&ResendEvent {
                event: "resend",
                user: &text(key),
                device: &text(&d.name),
                seq,
                id: &text(m.id),
                attempt: p.attempts.saturating_add(1),
                stanza: &text(m.stanza),
            })
            .unwrap_or_default();
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

/// Rebuilds the schedule from every mailbox in every database (after a
/// load, a flush or a change of the timer's settings).
pub fn rebuild(ctx: &Context) {
    struct Scan {
        settings: TimerSettings,
        db: i32,
    }
    unsafe extern "C" fn on_key(
        _ctx: *mut raw::RedisModuleCtx,
        name: *mut raw::RedisModuleString,
        key: *mut raw::RedisModuleKey,
        data: *mut c_void,
    ) {
        let scan = &mut *data.cast::<Scan>();
        if key.is_null() || name.is_null() {
            return;
        }
        let (Some(get_type), Some(get_value)) = (
            raw::RedisModule_ModuleTypeGetType,
            raw::RedisModule_ModuleTypeGetValue,
        ) else {
            return;
        };
        if get_type(key) != *MAILBOX_TYPE.raw_type.borrow() {
            return;
        }
        let mb = &*get_value(key).cast::<Mailbox>();
        // The schedule was emptied: every entry is to be made again.
        mb.entry.set(schedule::Entry::Unknown);
        let key_name = redis_module::RedisString::string_as_slice(name);
        if let Some(due) = mb.next_due(&scan.settings) {
            let mut s = sched();
            s.set(&mb.entry, Some(due), || schedule::slot(scan.db, key_name));
        } else {
            mb.entry.set(schedule::Entry::Idle);
        }
    }
    let db_before = selected_db(ctx);
    sched().clear();
    let (Some(create), Some(scan_fn), Some(destroy)) = (unsafe {
        (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_Scan,
            raw::RedisModule_ScanCursorDestroy,
        )
    }) else {
        return;
    };
    let mut db = 0;
    while select_db(ctx, db) {
        let mut scan = Scan {
            settings: settings(),
            db,
        };
        unsafe {
            let cursor = create();
            while scan_fn(
                ctx.get_raw(),
                cursor,
                Some(on_key),
                (&mut scan as *mut Scan).cast(),
            ) != 0
            {}
            destroy(cursor);
        }
        db += 1;
    }
    select_db(ctx, db_before);
    metrics::SCHEDULE_SIZE.store(sched().len() as i64, Relaxed);
    arm(ctx);
}

/// Called when a mailbox arrives under a new name (RENAME, MOVE, COPY,
/// RESTORE): schedule it there.
pub fn key_arrived(ctx: &Context, key: &[u8]) {
    let name = ctx.create_string(key);
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
