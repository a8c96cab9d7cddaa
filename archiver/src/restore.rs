//! Bringing a user back: the user's archived messages loaded into the
//! mailbox again with `IM.IMPORT`, in seq order, each with its seq, id and
//! time; and the restore requests the module publishes when a device
//! connects to an evicted mailbox.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::db::{Archive, DbUrl};
use crate::nodes::Redis;
use crate::reply::{self, RestoreRequest};
use crate::{now_ms, show_bytes};

/// Which archived messages to load.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Also the rows loaded back before (by default only those not restored
    /// since they were archived). Loading a message the mailbox still holds
    /// stores nothing: `IM.IMPORT` finds its id.
    pub include_restored: bool,
    /// Only the newest that many (by seq) of the rows chosen.
    pub newest: Option<u64>,
}

/// Loads a user's archived messages back into the mailbox, oldest seq
/// first, and marks them restored in the database.
pub fn restore_user(
    redis: &mut Redis,
    db: &mut dyn Archive,
    user: &[u8],
    opts: RestoreOptions,
    stop: &AtomicBool,
) -> Result<u64> {
    let rows = db.restorable(user, opts.include_restored, opts.newest)?;
    let mut imported = 0u64;
    for chunk in rows.chunks(100) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut seqs = Vec::with_capacity(chunk.len());
        let mut result = Ok(());
        for m in chunk {
            match redis.import(m) {
                Ok((seq, _)) => {
                    if seq != m.seq {
                        tracing::debug!(user = %show_bytes(user), archived_seq = m.seq, seq, "imported under another seq");
                    }
                    seqs.push(m.seq);
                }
                Err(e) => {
                    result = Err(e).with_context(|| {
                        format!(
                            "IM.IMPORT of seq {} of {} (after {} loaded)",
                            m.seq,
                            show_bytes(user),
                            imported + seqs.len() as u64
                        )
                    });
                    break;
                }
            }
        }
        db.mark_restored(user, &seqs, now_ms())?;
        imported += seqs.len() as u64;
        result?;
    }
    Ok(imported)
}

/// State the pulling loop shares with the restore worker.
pub struct Shared {
    /// Set on SIGINT/SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Messages loaded back by restore requests.
    pub restored: AtomicU64,
}

/// Listens on `<prefix>archive` and hands each restore request over to
/// the worker; reconnects (to the seed, then to any primary) when the
/// connection drops. Requests published while it is not subscribed are
/// lost: `im-archiver restore` loads such a user by hand.
pub fn listen(
    redis_url: String,
    channel: String,
    requests: Sender<RestoreRequest>,
    shared: Arc<Shared>,
) {
    let mut attempt = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        match subscribe_once(&redis_url, &channel, attempt, &requests, &shared) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(channel, error = %format!("{e:#}"), "restore requests: subscription lost, reconnecting");
                attempt += 1;
                sleep_unless(&shared.stop, Duration::from_secs(1));
            }
        }
    }
}

fn subscribe_once(
    redis_url: &str,
    channel: &str,
    attempt: usize,
    requests: &Sender<RestoreRequest>,
    shared: &Shared,
) -> Result<()> {
    let redis = Redis::open(redis_url)?;
    let node = &redis.nodes()[attempt % redis.nodes().len()];
    let mut conn = node.connect()?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(channel)?;
    pubsub.set_read_timeout(Some(Duration::from_millis(250)))?;
    tracing::info!(channel, node = %node.label, "listening for restore requests");
    while !shared.stop.load(Ordering::Relaxed) {
        let msg = match pubsub.get_message() {
            Ok(msg) => msg,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e.into()),
        };
        match reply::restore_request(msg.get_payload_bytes()) {
            Ok(Some(req)) => {
                tracing::info!(user = %show_bytes(&req.user), archived = ?req.archived, "restore requested");
                if requests.send(req).is_err() {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), payload = %show_bytes(msg.get_payload_bytes()), "bad restore request")
            }
        }
    }
    Ok(())
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Serves restore requests until stopped: for each, loads back the newest
/// `archived` rows of the user not restored since they were archived. The
/// module counts a message as archived when an archiver acked it, and the
/// archiver acks only after its commit: those rows are in the database.
pub fn worker(
    redis_url: String,
    db_url: DbUrl,
    requests: Receiver<RestoreRequest>,
    shared: Arc<Shared>,
) {
    let mut conns: Option<(Redis, Box<dyn Archive>)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let req = match requests.recv_timeout(Duration::from_millis(250)) {
            Ok(req) => req,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let opts = RestoreOptions {
            include_restored: false,
            newest: req.archived,
        };
        let mut tries = 0;
        loop {
            let result = (|| -> Result<u64> {
                if conns.is_none() {
                    conns = Some((Redis::open(&redis_url)?, db_url.open()?));
                }
                let (redis, db) = conns.as_mut().expect("just set");
                restore_user(redis, db.as_mut(), &req.user, opts, &shared.stop)
            })();
            match result {
                Ok(n) => {
                    shared.restored.fetch_add(n, Ordering::Relaxed);
                    tracing::info!(user = %show_bytes(&req.user), restored = n, archived = ?req.archived, "user restored");
                    break;
                }
                Err(e) => {
                    conns = None;
                    tries += 1;
                    tracing::error!(user = %show_bytes(&req.user), error = %format!("{e:#}"), tries, "restore failed");
                    if tries >= 3 || shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    sleep_unless(&shared.stop, Duration::from_secs(1));
                }
            }
        }
    }
}
