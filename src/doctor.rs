//! How safe the messages are right now (SPEC §8): the findings behind the
//! warnings the module logs at load and on every change of the server's
//! configuration, and behind `IM.DOCTOR` (in the manner of `MEMORY
//! DOCTOR`): durability, eviction risk, the timer's lag, backlogs, losses.
//! Each finding says what to change.

use crate::{config, log, metrics, server, timer};
use redis_module::{Context, RedisValue};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// A mailbox was given a TTL since the server started (`EXPIRE` on one):
/// then a `volatile-*` policy can evict mailboxes too.
static MAILBOX_TTL_SEEN: AtomicBool = AtomicBool::new(false);

/// Notes that a mailbox carries a TTL.
pub fn mailbox_ttl_seen() {
    MAILBOX_TTL_SEEN.store(true, Relaxed);
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Messages can be lost.
    Risk,
    /// Something is late or growing.
    Warning,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Risk => "risk",
            Severity::Warning => "warning",
        }
    }
}

/// One finding: its area, how bad, what was found, and what to change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    pub area: &'static str,
    pub what: String,
    pub fix: String,
}

/// A server setting (`CONFIG GET`), as text.
fn config_get(ctx: &Context, name: &str) -> Option<String> {
    match ctx.call("CONFIG", &["GET", name]) {
        Ok(RedisValue::Array(v)) => v.into_iter().nth(1).and_then(|x| String::try_from(x).ok()),
        _ => None,
    }
}

/// A field of an `INFO` section, as text.
fn info_field(ctx: &Context, section: &str, field: &str) -> Option<String> {
    ctx.server_info(section)
        .field(field)
        .map(|v| v.to_string_lossy())
}

/// What the server's configuration says about the messages' safety: the
/// findings that the module warns about in the log.
pub fn settings_findings(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let policy = config_get(ctx, "maxmemory-policy").unwrap_or_default();
    if policy.starts_with("allkeys-") {
        out.push(Finding {
            severity: Severity::Risk,
            area: "eviction",
            what: format!("maxmemory-policy is {policy}: when memory is full the server evicts mailboxes with their messages"),
            fix: "CONFIG SET maxmemory-policy noeviction (or volatile-* and no TTL on mailboxes); give mailboxes a server of their own if this one also caches".into(),
        });
    } else if policy.starts_with("volatile-") && MAILBOX_TTL_SEEN.load(Relaxed) {
        out.push(Finding {
            severity: Severity::Risk,
            area: "eviction",
            what: format!("maxmemory-policy is {policy} and a mailbox was given a TTL: such mailboxes can be evicted"),
            fix: "PERSIST the mailboxes (no TTL on a mailbox), or CONFIG SET maxmemory-policy noeviction".into(),
        });
    }
    let aof = config_get(ctx, "appendonly").is_some_and(|v| v == "yes");
    let save = config_get(ctx, "save").unwrap_or_default();
    if !aof && save.trim().is_empty() {
        out.push(Finding {
            severity: Severity::Risk,
            area: "durability",
            what: "nothing persists: appendonly is no and there are no RDB save points; a restart loses every message".into(),
            fix: "CONFIG SET appendonly yes (appendfsync everysec, or always to have every acknowledged store on disk)".into(),
        });
    } else if !aof {
        out.push(Finding {
            severity: Severity::Warning,
            area: "durability",
            what: format!("only RDB snapshots (save {save}): a crash loses what was stored since the last one"),
            fix: "CONFIG SET appendonly yes".into(),
        });
    }
    let left_out = config::default_types_left_out();
    if !left_out.is_empty() {
        out.push(Finding {
            severity: Severity::Risk,
            area: "offline",
            what: format!(
                "offline-types leaves out {}: such a message to a user with no device online is dropped, not kept (SPEC §3)",
                left_out.join(" and ")
            ),
            fix: format!(
                "CONFIG SET im.offline-types \"{}\" (headline or groupchat may be added)",
                config::defaults::OFFLINE_TYPES
            ),
        });
    }
    let replicas: u64 = info_field(ctx, "replication", "connected_slaves")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let min_replicas = config_get(ctx, "min-replicas-to-write")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if server::is_primary(ctx) && replicas > 0 && min_replicas == 0 {
        out.push(Finding {
            severity: Severity::Warning,
            area: "replication",
            what: format!("{replicas} replica(s) and min-replicas-to-write 0: a store acknowledged just before a failover may be missing on the new primary"),
            fix: "CONFIG SET min-replicas-to-write 1 (with min-replicas-max-lag), and WAIT after stores that must survive a failover".into(),
        });
    }
    out
}

/// The warnings logged last, so that each is logged once per change.
static LOGGED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Logs, at warning level, the settings findings that are new since the
/// last check (at load time and after each configuration or replica
/// change).
pub fn warn_settings(ctx: &Context) {
    let now: BTreeSet<String> = settings_findings(ctx)
        .into_iter()
        .map(|f| format!("redis-im: {}: {} — {}", f.area, f.what, f.fix))
        .collect();
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    for line in now.difference(&logged) {
        log::warning(line);
    }
    *logged = now;
}

/// The timer's findings: off with work overdue, or lagging.
fn timer_findings(ctx: &Context, out: &mut Vec<Finding>) -> serde_json::Value {
    let interval = config::get(&config::SWEEP_INTERVAL);
    let budget = config::get(&config::SWEEP_BUDGET);
    let now = server::now_ms();
    let lag = timer::lag_ms(now);
    let primary = server::is_primary(ctx);
    if primary && interval == 0 && lag > 0 {
        out.push(Finding {
            severity: Severity::Warning,
            area: "timer",
            what: format!("the timer is off (sweep-interval 0) and work is {lag} ms overdue: resends, expiries and retention wait for IM.SWEEP"),
            fix: "call IM.SWEEP from a scheduler, or CONFIG SET im.sweep-interval 100".into(),
        });
    } else if primary && interval > 0 && lag > (interval * 10).max(1000) {
        out.push(Finding {
            severity: Severity::Warning,
            area: "timer",
            what: format!("the timer is {lag} ms behind: resends and expiries are late"),
            fix: "raise im.sweep-budget (µs per run) or lower im.sweep-interval".into(),
        });
    }
    serde_json::json!({
        "enabled": interval > 0,
        "role": if primary { "primary" } else { "replica" },
        "sweep_interval_ms": interval,
        "sweep_budget_us": budget,
        "last_sweep_us": metrics::value(&metrics::SWEEP_LAST_US),
        "longest_sweep_us": metrics::value(&metrics::SWEEP_LONGEST_US),
        "lag_ms": lag,
    })
}

/// A report of the store's safety now, with its findings (most severe
/// first), as JSON; `oldest_offline_ms` and `oldest_queued_ms` are the
/// ages (ms) of the oldest offline and queued messages found by a bounded
/// look at the mailboxes (`backlog_complete` says whether it saw them
/// all).
pub fn report(
    ctx: &Context,
    oldest_offline_ms: Option<i64>,
    oldest_queued_ms: Option<i64>,
    backlog_complete: bool,
) -> (Vec<Finding>, serde_json::Value) {
    let mut findings = settings_findings(ctx);
    let timer = timer_findings(ctx, &mut findings);
    let retention = config::get(&config::RETENTION);
    if let Some(age) = oldest_offline_ms {
        if retention == 0 && age > 7 * config::DAY_MS {
            findings.push(Finding {
                severity: Severity::Warning,
                area: "backlog",
                what: format!("an offline message is {} days old and retention is off: offline mail grows without bound", age / config::DAY_MS),
                fix: "CONFIG SET im.retention <ms> (with im.archive yes and an archiver to keep it)".into(),
            });
        }
    }
    if let Some(age) = oldest_queued_ms {
        if age > 3_600_000 {
            findings.push(Finding {
                severity: Severity::Warning,
                area: "archive",
                what: format!(
                    "a message waits in the archive queue for {} minutes: no archiver keeps up",
                    age / 60_000
                ),
                fix: "run im-archiver against this server (docs/archiver.md)".into(),
            });
        }
    }
    let lost = metrics::value(&metrics::LOST_EVICTED) + metrics::value(&metrics::LOST_EXPIRED);
    if lost > 0 {
        findings.push(Finding {
            severity: Severity::Risk,
            area: "losses",
            what: format!(
                "{} mailboxes ({} messages) were evicted and {} ({} messages) expired since the server started",
                metrics::value(&metrics::LOST_EVICTED),
                metrics::value(&metrics::LOST_EVICTED_MESSAGES),
                metrics::value(&metrics::LOST_EXPIRED),
                metrics::value(&metrics::LOST_EXPIRED_MESSAGES)
            ),
            fix: "see the eviction finding; never EXPIRE a mailbox; the server log names each mailbox lost".into(),
        });
    }
    findings.sort();
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "severity": f.severity.name(),
                "area": f.area,
                "what": f.what,
                "fix": f.fix,
            })
        })
        .collect();
    let json = serde_json::json!({
        "safe": !findings.iter().any(|f| f.severity == Severity::Risk),
        "findings": list,
        "durability": {
            "appendonly": config_get(ctx, "appendonly"),
            "appendfsync": config_get(ctx, "appendfsync"),
            "save": config_get(ctx, "save"),
            "rdb_last_bgsave_status": info_field(ctx, "persistence", "rdb_last_bgsave_status"),
            "aof_last_write_status": info_field(ctx, "persistence", "aof_last_write_status"),
            "connected_replicas": info_field(ctx, "replication", "connected_slaves")
                .and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
            "min_replicas_to_write": config_get(ctx, "min-replicas-to-write"),
        },
        "eviction": { "maxmemory_policy": config_get(ctx, "maxmemory-policy") },
        "timer": timer,
        "backlog": {
            "pending": metrics::value(&metrics::PENDING),
            "offline": metrics::value(&metrics::OFFLINE),
            "oldest_offline_ms": oldest_offline_ms,
            "archive_queue": metrics::value(&metrics::ARCHIVE_QUEUE),
            "oldest_queued_ms": oldest_queued_ms,
            "complete": backlog_complete,
        },
        "losses": {
            "lost_evicted_mailboxes": metrics::value(&metrics::LOST_EVICTED),
            "lost_evicted_messages": metrics::value(&metrics::LOST_EVICTED_MESSAGES),
            "lost_expired_mailboxes": metrics::value(&metrics::LOST_EXPIRED),
            "lost_expired_messages": metrics::value(&metrics::LOST_EXPIRED_MESSAGES),
            "deleted_mailboxes": metrics::value(&metrics::DELETED),
            "deleted_messages": metrics::value(&metrics::DELETED_MESSAGES),
        },
    });
    (findings, json)
}

/// The report as text for people: one line per finding with what to
/// change, or a line that says all is well.
pub fn text(findings: &[Finding], json: &serde_json::Value) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("redis-im: no risk found. Messages are persisted, not evictable, and the timer keeps up.\n");
    } else {
        out.push_str(&format!("redis-im: {} finding(s):\n", findings.len()));
        for f in findings {
            out.push_str(&format!(
                "- [{}] {}: {}\n  To change: {}\n",
                f.severity.name(),
                f.area,
                f.what,
                f.fix
            ));
        }
    }
    let b = &json["backlog"];
    let t = &json["timer"];
    out.push_str(&format!(
        "Backlog: {} pending, {} offline, {} in the archive queue. Timer: {}, lag {} ms, longest run {} µs (budget {} µs).\n",
        b["pending"], b["offline"], b["archive_queue"],
        match (t["enabled"] == true, t["role"] == "replica") {
            (false, _) => "off",
            (true, true) => "on once this replica is promoted",
            (true, false) => "on",
        },
        t["lag_ms"], t["longest_sweep_us"], t["sweep_budget_us"]
    ));
    out
}
