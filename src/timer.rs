//! The timer (SPEC §5): one module timer, armed on the primary for the
//! next deadline in the schedule (never sooner than `sweep-interval` after
//! the last run), and the upkeep of that schedule as mailboxes change.
//! What a run does is `sweep`; the callback itself is in `wrapper::timer`,
//! handed over at load time ([`set_callback`]).

use crate::config;
use crate::mailbox::due::TimerSettings;
use crate::mailbox::Mailbox;
use crate::schedule::{self, KeyName, Schedule};
use crate::{metrics, server};
use redis_module::{raw, Context};
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};

static SCHEDULE: LazyLock<Mutex<Schedule>> = LazyLock::new(Default::default);
/// The armed timer: its id and when it fires (ms).
static TIMER: Mutex<Option<(u64, i64)>> = Mutex::new(None);
/// When the last run started (ms).
static LAST_RUN: AtomicI64 = AtomicI64::new(0);
/// The last run left due work undone (it ran out of budget): the timer is
/// behind, and runs again sooner than `sweep-interval`.
static BEHIND: AtomicBool = AtomicBool::new(false);
/// The last run did some work: deadlines are flowing, and the next run
/// comes after half an interval, so that what falls due waits at most
/// that long (SPEC §5).
static BUSY: AtomicBool = AtomicBool::new(false);
/// The timer's callback (`wrapper::timer::on_timer`).
static CALLBACK: OnceLock<raw::RedisModuleTimerProc> = OnceLock::new();

/// Hands over the timer's callback (at load time).
pub fn set_callback(callback: raw::RedisModuleTimerProc) {
    let _ = CALLBACK.set(callback);
}

fn sched() -> MutexGuard<'static, Schedule> {
    SCHEDULE.lock().unwrap_or_else(|e| e.into_inner())
}

fn gauge(s: &Schedule) {
    metrics::SCHEDULE_SIZE.store(s.len() as i64, Relaxed);
}

/// The settings the timer's decisions depend on, as they are now.
pub fn settings() -> TimerSettings {
    TimerSettings {
        resend_interval: config::get(&config::RESEND_INTERVAL),
        ack_timeout: config::get(&config::ACK_TIMEOUT),
        device_idle: config::get(&config::DEVICE_IDLE),
        retention: config::get(&config::RETENTION),
        archive: config::ARCHIVE.load(Relaxed),
        mailbox_idle: config::get(&config::MAILBOX_IDLE),
    }
}

/// Moves mailbox `key`'s (in the selected db) schedule entry to `due`;
/// answers the schedule's [`Schedule::next_due_bound`] after the move,
/// read in the same hold of the lock (for [`arm_for`]).
fn set_due(ctx: &Context, key: &[u8], mb: &Mailbox, due: Option<i64>) -> Option<i64> {
    let mut s = sched();
    s.set(&mb.entry, due, || {
        schedule::key_name(server::selected_db(ctx), key)
    });
    gauge(&s);
    s.next_due_bound()
}

/// Records when mailbox `key` (in the selected db) next needs the timer,
/// and arms it.
pub fn reschedule(ctx: &Context, key: &[u8], mb: &Mailbox) {
    let next = set_due(ctx, key, mb, mb.next_due(&settings()));
    arm_for(ctx, next);
}

/// Schedules mailbox `key` (in the selected db) for `at` (ms), whatever
/// its own deadlines: a mailbox whose visit failed is retried then.
pub fn retry_at(ctx: &Context, key: &[u8], mb: &Mailbox, at: i64) {
    forget(mb);
    let next = set_due(ctx, key, mb, Some(at));
    arm_for(ctx, next);
}

/// After a change of mailbox `key` (`None`: it is gone, and its entry
/// went with it): as [`reschedule`], skipped when the mailbox's due time
/// is the one the schedule already holds.
pub fn changed(ctx: &Context, key: &[u8], mb: Option<&Mailbox>) {
    if let Some(m) = mb {
        let due = m.next_due(&settings());
        if m.entry.get().due() != Some(due) {
            let next = set_due(ctx, key, m, due);
            arm_for(ctx, next);
        }
    }
}

/// Asks the CPU to start fetching mailbox `mb`'s schedule entry, which a
/// change about to be made will move (a hint only).
pub fn prefetch_entry(mb: &Mailbox) {
    if let Some(p) = sched().address(mb.entry.get()) {
        crate::prefetch::prefetch_address(p);
    }
}

/// A mailbox left the keyspace or is about to move (`unlink` callback).
pub fn forget(mb: &Mailbox) {
    let mut s = sched();
    s.forget(&mb.entry);
    gauge(&s);
}

/// Empties the schedule (before a rebuild from every mailbox).
pub fn clear() {
    let mut s = sched();
    s.clear(server::now_ms());
    gauge(&s);
}

/// Schedules a mailbox found by the scan of a rebuild: its entry is made
/// anew (the schedule was emptied).
pub fn schedule_scanned(db: i32, key: &[u8], mb: &Mailbox, settings: &TimerSettings) {
    mb.entry.set(schedule::Entry::Unknown);
    let mut s = sched();
    match mb.next_due(settings) {
        Some(due) => s.set(&mb.entry, Some(due), || schedule::key_name(db, key)),
        None => mb.entry.set(schedule::Entry::Idle),
    }
    gauge(&s);
}

/// Removes and answers the earliest entry due at or before `now`: its
/// due time, entry id, and the mailbox's db and key.
pub fn pop_due(now: i64) -> Option<(i64, u64, KeyName)> {
    let mut s = sched();
    let popped = s.pop_due(now);
    gauge(&s);
    popped
}

/// The earliest deadline in the schedule (ms), exactly.
pub fn next_due() -> Option<i64> {
    sched().next_due()
}

/// A time (ms) no later than the earliest deadline in the schedule: what
/// the timer is armed for (a run that finds nothing due yet re-arms).
fn next_due_bound() -> Option<i64> {
    sched().next_due_bound()
}

/// Schedule handles looked at per server cron tick ([`upkeep`]): at the
/// default `hz` of 10, 20,480 a second, about 0.1 ms of each tick.
const UPKEEP_HANDLES: usize = 2048;

/// The schedule's upkeep, on every node at each server cron tick: drops
/// dead handles and moves the deadlines that come within the next half
/// hour or so into the schedule's near tree, ahead of time, a bounded
/// share per tick (`Schedule::advance`).
pub fn upkeep(now: i64) {
    sched().advance(now, UPKEEP_HANDLES);
}

/// Arms the timer for the next deadline, no sooner than `sweep-interval`
/// after the last run; nothing when there is nothing to wait for, or on a
/// replica.
pub fn arm(ctx: &Context) {
    arm_for(ctx, next_due_bound());
}

/// [`arm`], given the schedule's [`next_due_bound`] (`next`) read already:
/// a change of a mailbox's entry reads it in the same hold of the
/// schedule's lock as the change (a first message makes an entry, so this
/// is on the store's path).
fn arm_for(ctx: &Context, next: Option<i64>) {
    let interval = config::get(&config::SWEEP_INTERVAL);
    let mut timer = TIMER.lock().unwrap_or_else(|e| e.into_inner());
    if interval == 0 {
        // Only IM.SWEEP runs the timer's work.
        if let Some((id, _)) = timer.take() {
            stop_timer(ctx, id);
        }
        return;
    }
    let Some(next) = next else {
        return;
    };
    let gap = if BEHIND.load(Relaxed) {
        catch_up_gap_ms().min(interval)
    } else if BUSY.load(Relaxed) {
        interval / 2
    } else {
        interval
    };
    let at = next.max(LAST_RUN.load(Relaxed).saturating_add(gap));
    // The usual case, first: the armed timer fires in time.
    if matches!(*timer, Some((_, fires)) if fires <= at) {
        return;
    }
    if !server::is_primary(ctx) {
        if let Some((id, _)) = timer.take() {
            stop_timer(ctx, id);
        }
        return;
    }
    let now = server::now_ms();
    let at = at.max(now);
    match *timer {
        Some((_, fires)) if fires <= at => return,
        Some((id, _)) => stop_timer(ctx, id),
        None => {}
    }
    let (Some(create), Some(&callback)) = (unsafe { raw::RedisModule_CreateTimer }, CALLBACK.get())
    else {
        return;
    };
    // A deadline further off than the longest wait is reached in steps:
    // the timer fires, the run finds nothing due and arms it again.
    let wait = (at - now).min(MAX_WAIT_MS);
    // SAFETY: a valid context; the callback lives as long as the module.
    let id = unsafe { create(ctx.get_raw(), wait, callback, std::ptr::null_mut()) };
    *timer = Some((id, now + wait));
}

/// The longest the timer is armed for (ms): 30 minutes. Redis 7.0 keeps
/// the wait until its next module timer in an `int` of ms that it
/// multiplies by 1,000 in `int`: with a module timer more than 2,147,483
/// ms (35.8 minutes) away, armed from the timer's own callback, the server
/// ran its module-timer handler on every turn of its event loop, at 100%
/// CPU. A timer some 2^53 ms away made `RM_CreateTimer`'s µs overflow into
/// the past on every server, which then ran the timer in a loop it never
/// left.
pub const MAX_WAIT_MS: i64 = 30 * 60 * 1000;

fn stop_timer(ctx: &Context, id: u64) {
    if let Some(stop) = unsafe { raw::RedisModule_StopTimer } {
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: a valid context; an unknown id is refused, not a fault.
        unsafe { stop(ctx.get_raw(), id, &mut data) };
    }
}

/// Stops the timer (this server became a replica).
pub fn disarm(ctx: &Context) {
    if let Some((id, _)) = TIMER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        stop_timer(ctx, id);
    }
}

/// The timer fired: it is no longer armed. Noted first, before the run,
/// whose own changes re-arm the timer, which must then wait a whole
/// interval.
pub fn fired() {
    *TIMER.lock().unwrap_or_else(|e| e.into_inner()) = None;
    LAST_RUN.store(server::now_ms(), Relaxed);
}

/// The gap between runs (ms) while the timer is behind, counted from one
/// run's start to the next one's (a run is noted when it fires, before its
/// work: [`fired`]): `sweep-budget` µs of work every `budget × 100 /
/// effort` µs, so that the runs take at most `sweep-effort` % of the time
/// (SPEC §5: while due work is overdue the timer runs sooner and more
/// often, up to a set share of the CPU, as Redis's own active expiry does
/// with `active-expire-effort`). 25 % and 1,000 µs: a run every 4 ms, 3 ms
/// apart.
pub fn catch_up_gap_ms() -> i64 {
    catch_up_gap(budget_us() as i64, config::get(&config::SWEEP_EFFORT))
}

/// [`catch_up_gap_ms`] for a budget (µs) and an effort (%, clamped to
/// 1–100): the ms, rounded up, in which a budget's work is that share.
fn catch_up_gap(budget_us: i64, effort: i64) -> i64 {
    let effort = effort.clamp(1, 100);
    let period_us = budget_us.max(1).saturating_mul(100) / effort;
    period_us.saturating_add(999) / 1000
}

/// Notes whether the run that just ended left due work undone, and
/// whether it did any.
pub fn ran(behind: bool, busy: bool) {
    BEHIND.store(behind, Relaxed);
    BUSY.store(busy, Relaxed);
}

/// Whether the last run left due work undone.
pub fn is_behind() -> bool {
    BEHIND.load(Relaxed)
}

/// How overdue the earliest deadline is at `now` (ms; 0 when nothing is
/// overdue): the timer's lag (SPEC §5).
pub fn lag_ms(now: i64) -> i64 {
    let mut s = sched();
    match s.next_due_bound() {
        Some(bound) if bound <= now => s.next_due().map_or(0, |d| (now - d).max(0)),
        _ => 0,
    }
}

/// Whether a timer run does work now: on a primary, with the timer on.
/// (A run while the server pauses writes does nothing: `sweep::run`.)
pub fn runs_here(ctx: &Context) -> bool {
    server::is_primary(ctx) && config::get(&config::SWEEP_INTERVAL) > 0
}

/// Most µs of work per timer run (`sweep-budget`).
pub fn budget_us() -> u64 {
    config::get(&config::SWEEP_BUDGET).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::catch_up_gap;

    /// A run of `budget` µs every gap makes the share `effort` %: the gap
    /// is counted from one run's start to the next.
    #[test]
    fn the_catch_up_gap_makes_the_effort_a_share_of_the_time() {
        assert_eq!(catch_up_gap(1000, 25), 4);
        assert_eq!(catch_up_gap(1000, 50), 2);
        assert_eq!(catch_up_gap(1000, 100), 1);
        assert_eq!(catch_up_gap(1000, 1), 100);
        assert_eq!(catch_up_gap(1000, 0), 100, "clamped to 1 %");
        assert_eq!(catch_up_gap(1000, 1000), 1, "clamped to 100 %");
        assert_eq!(catch_up_gap(2500, 30), 9, "8,334 µs, rounded up");
        assert_eq!(catch_up_gap(0, 25), 1);
        assert_eq!(catch_up_gap(i64::MAX, 1), i64::MAX / 1000);
    }
}
