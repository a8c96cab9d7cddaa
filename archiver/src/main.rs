//! im-archiver: moves redis-im's archive queue into a relational database
//! (SQLite or PostgreSQL) and brings returning users back. See
//! docs/archiver.md.

mod db;
mod nodes;
mod reply;
mod restore;
mod run;
#[cfg(test)]
mod testpg;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use clap::{Args, Parser, Subcommand};

use db::{DbUrl, HistoryRange, Row, DEFAULT_DB};

#[derive(Parser, Debug)]
#[command(
    name = "im-archiver",
    version,
    about = "Archives redis-im's old messages into SQLite or PostgreSQL and restores returning users"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull every primary's archive queue into the database, and serve
    /// restore requests, until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Load a user's archived messages back into the mailbox (IM.IMPORT).
    Restore(RestoreArgs),
    /// A user's archived messages in time order.
    History(HistoryArgs),
    /// Print the SQL schema of the database kind.
    Schema(SchemaArgs),
}

#[derive(Args, Debug)]
struct RedisArg {
    /// A server, or any node of a Redis Cluster (its primaries are found
    /// from it).
    #[arg(
        long,
        env = "IM_ARCHIVER_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
}

#[derive(Args, Debug)]
struct DbArg {
    /// `postgres://user:pass@host/db`, or a SQLite file (`sqlite://path` or
    /// a path).
    #[arg(long, env = "IM_ARCHIVER_DB", default_value = DEFAULT_DB)]
    db: String,
}

#[derive(Args, Debug)]
struct UserArg {
    /// The user (the mailbox's key), as bytes.
    user: OsString,
    /// The user argument is standard base64 (as in events' `user_base64`).
    #[arg(long)]
    base64: bool,
}

impl UserArg {
    fn bytes(&self) -> Result<Vec<u8>> {
        let raw = self.user.as_bytes();
        if self.base64 {
            Ok(base64::engine::general_purpose::STANDARD
                .decode(raw)
                .context("user is not base64")?)
        } else {
            Ok(raw.to_vec())
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    redis: RedisArg,
    #[command(flatten)]
    db: DbArg,
    /// The module's event-prefix: restore requests come on `<prefix>archive`.
    #[arg(long, default_value = "im:events:")]
    event_prefix: String,
    /// Messages per pull (at most 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Lease of a pulled batch, ms: a batch not acked by then is handed out
    /// again.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    lease: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    status_interval: u64,
    /// Longest pause, ms, between polls while every queue is empty.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    idle_max: u64,
    /// Do not subscribe to restore requests.
    #[arg(long)]
    no_restore: bool,
    /// Stop once every queue was found empty.
    #[arg(long)]
    once: bool,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    user: UserArg,
    #[command(flatten)]
    redis: RedisArg,
    #[command(flatten)]
    db: DbArg,
    /// Also the messages restored before (the mailbox keeps one copy of
    /// each id).
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    #[command(flatten)]
    user: UserArg,
    #[command(flatten)]
    db: DbArg,
    /// Messages with ts (Unix ms) at or after this.
    #[arg(long)]
    since: Option<i64>,
    /// Messages with ts (Unix ms) at or before this.
    #[arg(long)]
    until: Option<i64>,
    /// At most this many, the oldest first.
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SchemaArgs {
    #[command(flatten)]
    db: DbArg,
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bytes for a log line or a terminal: as they are when UTF-8, escaped
/// otherwise.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// `2026-11-27T07:31:10.635Z`
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "?".into())
}

/// A field that is UTF-8 as `name`, otherwise as `name_base64`, as the
/// module's events do.
fn put_bytes(obj: &mut serde_json::Map<String, serde_json::Value>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => obj.insert(name.into(), s.into()),
        Err(_) => obj.insert(
            format!("{name}_base64"),
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        ),
    };
}

fn history_json(row: &Row) -> String {
    let m = &row.message;
    let mut o = serde_json::Map::new();
    put_bytes(&mut o, "user", &m.user);
    o.insert("ts".into(), m.ts.into());
    o.insert("time".into(), utc(m.ts).into());
    o.insert("seq".into(), m.seq.into());
    put_bytes(&mut o, "id", &m.id);
    put_bytes(&mut o, "stanza", &m.stanza);
    let devices: serde_json::Value =
        serde_json::from_str(&db::devices_to_json(&m.devices)).expect("valid JSON");
    o.insert("devices".into(), devices);
    o.insert("archived_at".into(), row.archived_at.into());
    o.insert("restored_at".into(), row.restored_at.into());
    serde_json::Value::Object(o).to_string()
}

fn history_text(row: &Row) -> String {
    let m = &row.message;
    let devices: Vec<String> = m.devices.iter().map(|d| show_bytes(d)).collect();
    format!(
        "{}  ts={}  seq={}  id={}  devices={}  {}",
        utc(m.ts),
        m.ts,
        m.seq,
        show_bytes(&m.id),
        devices.join(","),
        String::from_utf8_lossy(&m.stanza)
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,postgres=warn,tokio_postgres=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT/SIGTERM set the flag (the current batch finishes); a second one
/// ends the process at once (a batch not acked is handed out again after
/// its lease).
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Run(a) => {
            let stop = stop_on_signals()?;
            let cfg = run::RunConfig {
                redis_url: a.redis.redis,
                db: DbUrl::parse(&a.db.db)?,
                batch: a.batch,
                lease_ms: a.lease,
                idle_max: Duration::from_millis(a.idle_max),
                status_every: Duration::from_secs(a.status_interval),
                discover_every: Duration::from_secs(30),
                restore_requests: !a.no_restore,
                event_prefix: a.event_prefix,
                once: a.once,
            };
            run::run(cfg, stop)
        }
        Command::Restore(a) => {
            let stop = stop_on_signals()?;
            let user = a.user.bytes()?;
            let db_url = DbUrl::parse(&a.db.db)?;
            let mut db = db_url.open()?;
            let mut redis = nodes::Redis::open(&a.redis.redis)?;
            let opts = restore::RestoreOptions {
                include_restored: a.all,
                newest: None,
            };
            let n = restore::restore_user(&mut redis, db.as_mut(), &user, opts, &stop)?;
            tracing::info!(user = %show_bytes(&user), restored = n, "restore done");
            println!("{n}");
            Ok(())
        }
        Command::History(a) => {
            let user = a.user.bytes()?;
            let mut db = DbUrl::parse(&a.db.db)?.open()?;
            let rows = db.history(
                &user,
                HistoryRange {
                    since: a.since,
                    until: a.until,
                    limit: a.limit,
                },
            )?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for row in &rows {
                let line = if a.json {
                    history_json(row)
                } else {
                    history_text(row)
                };
                if let Err(e) = writeln!(out, "{line}") {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            out.flush().or_else(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            Ok(())
        }
        Command::Schema(a) => {
            print!("{}", DbUrl::parse(&a.db.db)?.schema());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("im-archiver").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn run_arguments() {
        let Command::Run(a) = parse(&[
            "run",
            "--redis",
            "redis://h:7000",
            "--db",
            "postgres://x/y",
            "--batch",
            "1000",
            "--lease",
            "5000",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.redis.redis.as_str(), a.db.db.as_str(), a.batch, a.lease),
            ("redis://h:7000", "postgres://x/y", 1000, 5000)
        );
        assert_eq!(a.event_prefix, "im:events:");
        assert!(parse(&["run", "--batch", "1001"]).is_err());
        assert!(parse(&["run", "--batch", "0"]).is_err());
        assert!(parse(&["run", "--lease", "0"]).is_err());
        let Command::Run(a) = parse(&["run"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.batch, a.lease, a.db.db.as_str()),
            (500, 30_000, DEFAULT_DB)
        );
    }

    #[test]
    fn user_arguments() {
        let Command::History(a) = parse(&[
            "history",
            "alice@example.com",
            "--since",
            "5",
            "--limit",
            "3",
            "--json",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.user.bytes().unwrap(), b"alice@example.com");
        assert_eq!(
            (a.since, a.until, a.limit, a.json),
            (Some(5), None, Some(3), true)
        );
        let Command::Restore(a) = parse(&["restore", "--base64", "/wBi"]).unwrap() else {
            panic!()
        };
        assert_eq!(a.user.bytes().unwrap(), b"\xff\x00b");
        assert!(parse(&["restore"]).is_err());
        assert!(parse(&["history", "u", "--since", "x"]).is_err());
    }

    #[test]
    fn history_lines() {
        let row = Row {
            message: db::Message {
                user: b"alice".to_vec(),
                seq: 7,
                id: b"\xffm".to_vec(),
                ts: 1_795_764_670_635,
                stanza: b"<message/>".to_vec(),
                devices: vec![b"phone".to_vec()],
            },
            archived_at: 9,
            restored_at: None,
        };
        assert_eq!(
            history_text(&row),
            "2026-11-27T07:31:10.635Z  ts=1795764670635  seq=7  id=\\xffm  devices=phone  <message/>"
        );
        let v: serde_json::Value = serde_json::from_str(&history_json(&row)).unwrap();
        assert_eq!(v["id_base64"], "/20=");
        assert_eq!(v["stanza"], "<message/>");
        assert_eq!(v["devices"], serde_json::json!(["phone"]));
        assert_eq!(v["time"], "2026-11-27T07:31:10.635Z");
        assert!(v["restored_at"].is_null());
    }
}
