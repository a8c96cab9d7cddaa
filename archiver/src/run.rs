//! `im-archiver run`: pull from every primary, write into the database in
//! one transaction per batch, commit, then ack; serve restore requests on
//! the side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::db::{Archive, DbUrl};
use crate::nodes::Redis;
use crate::now_ms;
use crate::restore::{self, Shared};

/// How `run` behaves.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub redis_url: String,
    pub db: DbUrl,
    /// Messages per `IM.ARCHIVE.PULL` (1 to 1000).
    pub batch: u64,
    /// Lease of a pulled batch, ms: not acked by then, it is handed out again.
    pub lease_ms: u64,
    /// Longest sleep between passes when every queue is empty.
    pub idle_max: Duration,
    /// Time between status lines.
    pub status_every: Duration,
    /// Time between discoveries of the primaries when nothing failed.
    pub discover_every: Duration,
    /// Serve restore requests on `<event_prefix>archive`.
    pub restore_requests: bool,
    pub event_prefix: String,
    /// Exit once every queue was found empty (for cron jobs and tests).
    pub once: bool,
}

/// Counters for the status line.
#[derive(Default)]
struct Totals {
    pulled: u64,
    written: u64,
    acked: u64,
    batches: u64,
    errors: u64,
    /// Age (ms) of the oldest message pulled since the last status line.
    oldest_ms: i64,
}

/// Sleeps up to `total`, waking early on stop.
fn nap(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Retries `open` every second until it works, unless `--once` (then the
/// first error ends the run) or stopped (`None`).
fn open_with_retry<T>(
    what: &str,
    cfg: &RunConfig,
    stop: &AtomicBool,
    open: impl Fn() -> Result<T>,
) -> Result<Option<T>> {
    loop {
        match open() {
            Ok(x) => return Ok(Some(x)),
            Err(e) if !cfg.once => {
                tracing::warn!(error = %format!("{e:#}"), "{what} not reachable; retrying")
            }
            Err(e) => return Err(e),
        }
        nap(stop, Duration::from_secs(1));
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
    }
}

pub fn run(cfg: RunConfig, stop: Arc<AtomicBool>) -> Result<()> {
    let Some(db) = open_with_retry("database", &cfg, &stop, || cfg.db.open())? else {
        return Ok(());
    };
    let Some(mut redis) = open_with_retry("Redis", &cfg, &stop, || Redis::open(&cfg.redis_url))?
    else {
        return Ok(());
    };
    let mut db = Some(db);
    tracing::info!(
        db = %cfg.db.display(), cluster = redis.is_cluster(), primaries = redis.nodes().len(),
        batch = cfg.batch, lease_ms = cfg.lease_ms, "archiver started"
    );
    let shared = Arc::new(Shared {
        stop: stop.clone(),
        restored: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    if cfg.restore_requests {
        let (tx, rx) = std::sync::mpsc::channel();
        let channel = format!("{}archive", cfg.event_prefix);
        let (url, s) = (cfg.redis_url.clone(), shared.clone());
        threads.push(std::thread::spawn(move || {
            restore::listen(url, channel, tx, s)
        }));
        let (url, dbu, s) = (cfg.redis_url.clone(), cfg.db.clone(), shared.clone());
        threads.push(std::thread::spawn(move || restore::worker(url, dbu, rx, s)));
    }
    let result = pull_loop(&cfg, &mut redis, &mut db, &shared);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result
}

fn pull_loop(
    cfg: &RunConfig,
    redis: &mut Redis,
    db: &mut Option<Box<dyn Archive>>,
    shared: &Shared,
) -> Result<()> {
    let stop = &shared.stop;
    let mut totals = Totals::default();
    let mut interval = Totals::default();
    let mut idle = Duration::ZERO;
    let mut rediscover = false;
    let mut last_discovery = Instant::now();
    let mut last_status = Instant::now();
    let mut queues_empty = false;
    let mut failed_passes = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if rediscover || last_discovery.elapsed() >= cfg.discover_every {
            last_discovery = Instant::now();
            match redis.discover() {
                Ok(_) => rediscover = false,
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "no primary answers; retrying"),
            }
        }
        let mut pulled_any = false;
        let mut failed = false;
        if db.is_none() {
            match cfg.db.open() {
                Ok(d) => *db = Some(d),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "database not reachable; retrying");
                    failed = true;
                }
            }
        }
        for node in 0..redis.nodes().len() {
            let Some(archive) = db.as_mut() else {
                break;
            };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match archive_batch(cfg, redis, archive, node) {
                Ok(None) => {}
                Ok(Some(b)) => {
                    pulled_any = true;
                    for t in [&mut totals, &mut interval] {
                        t.pulled += b.pulled;
                        t.written += b.written;
                        t.acked += b.acked;
                        t.batches += 1;
                        t.oldest_ms = t.oldest_ms.max(b.oldest_ms);
                    }
                }
                Err(Failure { in_db, error }) => {
                    failed = true;
                    totals.errors += 1;
                    interval.errors += 1;
                    tracing::warn!(node = %redis.nodes()[node].label, error = %format!("{error:#}"), "batch failed");
                    if in_db {
                        // Connect again: a PostgreSQL restart leaves the
                        // old connection dead.
                        *db = None;
                    } else {
                        rediscover = true;
                    }
                }
            }
        }
        queues_empty = !pulled_any && !failed && !redis.nodes().is_empty();
        failed_passes = if failed || redis.nodes().is_empty() {
            failed_passes + 1
        } else {
            0
        };
        if cfg.once && failed_passes >= 5 {
            status(redis, &interval, &totals, shared, false);
            bail!("--once: five passes in a row failed");
        }
        if last_status.elapsed() >= cfg.status_every {
            status(redis, &interval, &totals, shared, queues_empty);
            interval = Totals::default();
            last_status = Instant::now();
        }
        if queues_empty && cfg.once {
            break;
        }
        if pulled_any {
            idle = Duration::ZERO;
        } else {
            idle = (idle * 2).max(Duration::from_millis(50)).min(cfg.idle_max);
            nap(stop, idle);
        }
    }
    status(redis, &interval, &totals, shared, queues_empty);
    tracing::info!(
        pulled = totals.pulled,
        written = totals.written,
        acked = totals.acked,
        "archiver stopped"
    );
    Ok(())
}

/// One line: what the interval did, the totals, what waits in the queues
/// (`INFO im` of every primary) and the lag: the age of the oldest message
/// pulled in the interval (queues hand out the oldest first), 0 when every
/// queue was found empty.
fn status(
    redis: &mut Redis,
    interval: &Totals,
    totals: &Totals,
    shared: &Shared,
    queues_empty: bool,
) {
    let mut queued = Some(0u64);
    for node in 0..redis.nodes().len() {
        queued = match (queued, redis.queued(node)) {
            (Some(sum), Ok(Some(n))) => Some(sum + n),
            _ => None,
        };
    }
    let queued = queued.map_or_else(|| "?".to_string(), |n| n.to_string());
    let lag_s = if queues_empty {
        0.0
    } else {
        interval.oldest_ms as f64 / 1000.0
    };
    tracing::info!(
        "status: pulled {} written {} acked {} in {} batches, {} errors; restored {}; total pulled {} acked {}; queued {}; lag {:.1}s",
        interval.pulled, interval.written, interval.acked, interval.batches, interval.errors,
        shared.restored.load(Ordering::Relaxed), totals.pulled, totals.acked, queued, lag_s
    );
}

/// A batch that failed, and where.
struct Failure {
    in_db: bool,
    error: anyhow::Error,
}

impl Failure {
    fn redis(error: anyhow::Error) -> Failure {
        Failure {
            in_db: false,
            error,
        }
    }
}

/// One batch's counts.
struct Batch {
    pulled: u64,
    written: u64,
    acked: u64,
    /// Age of its oldest message, ms.
    oldest_ms: i64,
}

/// Pull, write and commit, ack. `None` when the node's queue is empty.
/// A batch that fails after the pull is not acked: its lease runs out and
/// it is handed out again; writing it again changes nothing.
fn archive_batch(
    cfg: &RunConfig,
    redis: &mut Redis,
    db: &mut Box<dyn Archive>,
    node: usize,
) -> Result<Option<Batch>, Failure> {
    let started = Instant::now();
    let messages = redis
        .pull(node, cfg.batch, cfg.lease_ms)
        .map_err(Failure::redis)?;
    if messages.is_empty() {
        return Ok(None);
    }
    let now = now_ms();
    let oldest_ms = messages
        .iter()
        .map(|m| now - m.ts)
        .max()
        .unwrap_or(0)
        .max(0);
    let written = match db.write_batch(&messages, now) {
        Ok(n) => n,
        Err(e) => {
            // Once more on a new connection (a restarted PostgreSQL leaves
            // the old one dead), rather than wait for the lease to end.
            tracing::warn!(error = %format!("{e:#}"), "database write failed; connecting again");
            let in_db = |error| Failure { in_db: true, error };
            *db = cfg.db.open().map_err(in_db)?;
            db.write_batch(&messages, now).map_err(in_db)?
        }
    };
    let acked = redis.ack(node, &messages).map_err(Failure::redis)?;
    let b = Batch {
        pulled: messages.len() as u64,
        written,
        acked,
        oldest_ms,
    };
    if acked < b.pulled {
        // Acked by another archiver after its lease ran out, or a lease of
        // ours that ran out before the commit: the rows are there either way.
        tracing::debug!(node = %redis.nodes()[node].label, pulled = b.pulled, acked, "fewer acked than pulled");
    }
    tracing::info!(
        node = %redis.nodes()[node].label, pulled = b.pulled, written, acked,
        oldest_age_s = format!("{:.1}", oldest_ms as f64 / 1000.0), ms = started.elapsed().as_millis() as u64,
        "batch archived"
    );
    Ok(Some(b))
}
