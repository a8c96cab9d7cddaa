//! What a timer run does (SPEC §5): pop the mailboxes whose work is due,
//! turn that work into effects (replicated like any command's), publish
//! the events. `IM.SWEEP` runs the same work on demand.

use crate::events::{self, Event};
use crate::keyspace::{self, Propagate, Writer};
use crate::mailbox::due::TimerSettings;
use crate::mailbox::Effect;
use crate::{cluster, log, metrics, schedule, server, timer};
use redis_module::Context;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Most work items taken from one mailbox per visit; the rest waits for
/// the next visit, so that one mailbox cannot blow the budget.
const ITEMS_PER_VISIT: usize = 32;

/// A mailbox whose visit failed (a panic, logged) is visited again this
/// much later, so that it neither stops the timer for the others nor
/// fills the log with one line per run.
const RETRY_FAILED_VISIT_MS: i64 = 10_000;

/// What one sweep did (the reply of `IM.SWEEP`).
#[derive(Debug, Default)]
pub struct Report {
    /// `resend` events sent.
    pub resent: u64,
    /// Pending deliveries expired (moved offline).
    pub expired: u64,
    /// Devices kicked (one `kick` event each).
    pub kicked: u64,
    /// Messages put in the archive queue (retention, eviction).
    pub archived: u64,
    /// Messages deleted by retention (`archive no`).
    pub dropped: u64,
    /// Idle devices forgotten.
    pub forgotten: u64,
    /// Idle mailboxes evicted.
    pub evicted: u64,
    /// How overdue the earliest deadline still is after the run (ms): the
    /// timer's lag (SPEC §5); 0 when it caught up.
    pub lag: i64,
}

/// Does the due work: until `budget_us` is spent or `limit` mailboxes were
/// visited, whichever comes first. Nothing while the server pauses writes
/// or its cluster is down ([`cluster::down`]). A visit that fails is
/// logged and retried later; the others go on.
pub fn run(ctx: &Context, budget_us: Option<u64>, limit: Option<usize>) -> Report {
    let mut r = Report::default();
    let idle = if server::writes_paused() {
        // A pause may hand slots over (an atomic slot migration's
        // handover): which ones are this node's is read again after it.
        cluster::invalidate();
        Some(&metrics::SWEEPS_PAUSED)
    } else if cluster::down(ctx) {
        // No device can ack while the cluster is down; a restarted
        // primary whose replica took over is down until it is told.
        Some(&metrics::SWEEPS_CLUSTER_DOWN)
    } else {
        None
    };
    if let Some(counter) = idle {
        r.lag = timer::lag_ms(server::now_ms());
        metrics::add(counter, 1);
        return r;
    }
    let start = Instant::now();
    let cpu_start = thread_cpu_us();
    let s = timer::settings();
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
        let now = server::now_ms();
        let Some((due, id, name)) = timer::pop_due(now) else {
            break;
        };
        visited += 1;
        let (db, key) = schedule::split(&name);
        if !server::select_db(ctx, db) {
            // A db the server no longer has: the entry goes with it.
        } else if !cluster::owns(ctx, key) {
            not_owned(ctx, key, (due, id), now);
        } else {
            let mut part = Report::default();
            let ok = crate::panics::guard(
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
        metrics::SWEEP_LONGEST_VISIT_US.fetch_max(longest_visit as i64, Relaxed);
    }
    drop(keep_db);
    r.lag = timer::lag_ms(server::now_ms());
    let us = start.elapsed().as_micros() as i64;
    let cpu_us = thread_cpu_us() - cpu_start;
    metrics::SWEEP_LAST_CPU_US.store(cpu_us, Relaxed);
    metrics::SWEEP_LONGEST_CPU_US.fetch_max(cpu_us, Relaxed);
    metrics::add(&metrics::SWEEP_RUNS, 1);
    metrics::add(&metrics::SWEEP_US, us);
    metrics::SWEEP_LAST_US.store(us, Relaxed);
    metrics::SWEEP_LONGEST_US.fetch_max(us, Relaxed);
    metrics::add(&metrics::RESENT, r.resent as i64);
    metrics::add(&metrics::EXPIRED, r.expired as i64);
    metrics::add(&metrics::KICKED, r.kicked as i64);
    metrics::add(&metrics::DROPPED, r.dropped as i64);
    metrics::add(&metrics::FORGOTTEN, r.forgotten as i64);
    metrics::add(&metrics::QUEUED, r.archived as i64);
    metrics::add(&metrics::EVICTED, r.evicted as i64);
    r
}

/// The CPU time this thread has used (µs): a run's own cost, apart from
/// the time the system gave other processes meanwhile.
fn thread_cpu_us() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec * 1_000_000 + t.tv_nsec / 1000
}

/// A mailbox whose slot this node does not own (yet, or any more): left
/// alone, looked at again [`cluster::NOT_OWNED_RETRY_MS`] later (its keys
/// are removed when the slot's move ends, and the schedule with them).
fn not_owned(ctx: &Context, key: &[u8], (due, id): (i64, u64), now: i64) {
    metrics::add(&metrics::SWEEP_NOT_OWNED, 1);
    let name = server::string(ctx, key);
    if let Ok(Some(mb)) = keyspace::read(ctx, &name) {
        if mb.entry.get() == (schedule::Entry::At { due, id }) {
            timer::retry_at(
                ctx,
                key,
                mb,
                now.saturating_add(cluster::NOT_OWNED_RETRY_MS),
            );
        }
    }
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
    let name = server::string(ctx, key);
    if let Ok(Some(mb)) = keyspace::read(ctx, &name) {
        timer::retry_at(ctx, key, mb, now.saturating_add(RETRY_FAILED_VISIT_MS));
    }
}

impl Report {
    /// Whether the run did any work.
    pub fn did_work(&self) -> bool {
        self.resent + self.expired + self.archived + self.dropped + self.forgotten + self.evicted
            > 0
    }

    fn add(&mut self, o: &Report) {
        self.resent += o.resent;
        self.expired += o.expired;
        self.kicked += o.kicked;
        self.archived += o.archived;
        self.dropped += o.dropped;
        self.forgotten += o.forgotten;
        self.evicted += o.evicted;
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
    crate::panics::debug_panic(key);
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
        timer::reschedule(ctx, key, mb);
        return;
    }
    let names: Vec<Vec<u8>> = mb.devices.iter().map(|d| d.name().to_vec()).collect();
    let mut out: Vec<Event> = Vec::new();
    let mut effects: Vec<Effect<'_>> = Vec::new();
    for (di, seqs) in &work.resend {
        out.extend(
            seqs.iter()
                .filter_map(|&seq| events::resend_event(mb, key, *di, seq)),
        );
        r.resent += seqs.len() as u64;
    }
    for &(di, _) in &work.expire {
        out.push(events::kick_event(mb, key, di, "ack-timeout"));
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
    if !work.queue.is_empty() {
        r.archived += work.queue.len() as u64;
        effects.push(Effect::Queue { seqs: work.queue });
    }
    if work.evict {
        r.archived += mb.log.len() - mb.queued_count();
        r.evicted += 1;
        effects.push(Effect::Evict);
    }
    w.commit(now, &effects, Propagate::Timer);
    events::publish(ctx, &out);
}
