//! The relational side: one table of archived messages, behind one trait
//! for SQLite and PostgreSQL.
//!
//! A row is keyed by `(user, seq)`; writing a row that is already there
//! refreshes it (same message, archived again), so a batch written twice
//! (an archiver that stopped between its commit and its ack) leaves one row
//! per message.

mod postgres;
mod sqlite;

use anyhow::{bail, Result};
use base64::Engine;

pub use self::postgres::PostgresArchive;
pub use self::sqlite::SqliteArchive;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DB: &str = "im-archive.sqlite3";

/// One message as `IM.ARCHIVE.PULL` hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The mailbox's key (the bare JID), any bytes.
    pub user: Vec<u8>,
    /// The module's seq, unique within the mailbox.
    pub seq: i64,
    /// The stanza id, unique within the mailbox.
    pub id: Vec<u8>,
    /// Creation time, Unix ms.
    pub ts: i64,
    /// The stanza, exactly as stored.
    pub stanza: Vec<u8>,
    /// The devices that still owed it when it left the mailbox.
    pub devices: Vec<Vec<u8>>,
}

/// A row of the archive: the message and when it was archived and restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub message: Message,
    /// When the archiver wrote it (last time), Unix ms.
    pub archived_at: i64,
    /// When it was last loaded back into its mailbox, Unix ms; `None` if it
    /// has not been since it was (last) archived.
    pub restored_at: Option<i64>,
}

/// Which rows a history query returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryRange {
    /// Messages with `ts >= since`.
    pub since: Option<i64>,
    /// Messages with `ts <= until`.
    pub until: Option<i64>,
    /// At most this many (the oldest first).
    pub limit: Option<u64>,
}

/// An archive database.
pub trait Archive: Send {
    /// Writes a batch in one transaction; a row already there (same user and
    /// seq) is refreshed, never doubled. Returns the number of messages
    /// written (new or refreshed).
    fn write_batch(&mut self, batch: &[Message], archived_at: i64) -> Result<u64>;

    /// A user's rows to load back, in seq order: those not restored since
    /// they were archived (all of them with `include_restored`). With
    /// `newest`, only the last that many of those.
    fn restorable(
        &mut self,
        user: &[u8],
        include_restored: bool,
        newest: Option<u64>,
    ) -> Result<Vec<Message>>;

    /// Marks these rows as loaded back at `restored_at`.
    fn mark_restored(&mut self, user: &[u8], seqs: &[i64], restored_at: i64) -> Result<()>;

    /// A user's rows in time order (ts, then seq).
    fn history(&mut self, user: &[u8], range: HistoryRange) -> Result<Vec<Row>>;

    /// Number of rows in the table.
    #[cfg(test)]
    fn count(&mut self) -> Result<u64>;
}

/// The kind of database a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    /// A SQLite file at this path.
    Sqlite(String),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DbUrl {
    /// `postgres://...` or `postgresql://...` is PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a plain path is a SQLite file.
    pub fn parse(url: &str) -> Result<DbUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            bail!("no SQLite file in database URL {url:?}");
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if scheme != "sqlite" {
                bail!("unknown database URL scheme {scheme:?} (use sqlite://path, a path, or postgres://...)");
            }
        }
        Ok(DbUrl::Sqlite(path.to_string()))
    }

    /// The schema of this kind of database, without connecting.
    pub fn schema(&self) -> &'static str {
        match self {
            DbUrl::Sqlite(_) => sqlite::SCHEMA,
            DbUrl::Postgres(_) => postgres::SCHEMA,
        }
    }

    /// Connects (creating the table if it is missing).
    pub fn open(&self) -> Result<Box<dyn Archive>> {
        Ok(match self {
            DbUrl::Sqlite(path) => Box::new(SqliteArchive::open(path)?),
            DbUrl::Postgres(url) => Box::new(PostgresArchive::connect(url)?),
        })
    }

    /// The URL for logs, without a password.
    pub fn display(&self) -> String {
        match self {
            DbUrl::Sqlite(path) => format!("sqlite://{path}"),
            DbUrl::Postgres(url) => redact_password(url),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Devices as stored in the `devices` column: a JSON array of strings, a
/// name that is not UTF-8 as `{"base64": "<standard base64>"}`.
pub fn devices_to_json(devices: &[Vec<u8>]) -> String {
    serde_json::Value::Array(devices.iter().map(|d| bytes_json(d)).collect()).to_string()
}

/// The inverse of [`devices_to_json`].
pub fn devices_from_json(text: &str) -> Result<Vec<Vec<u8>>> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let Some(items) = value.as_array() else {
        bail!("devices column is not a JSON array: {text}");
    };
    items
        .iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Ok(s.clone().into_bytes()),
            serde_json::Value::Object(o) => match o.get("base64").and_then(|b| b.as_str()) {
                Some(b) => Ok(base64::engine::general_purpose::STANDARD.decode(b)?),
                None => bail!("bad device in devices column: {item}"),
            },
            _ => bail!("bad device in devices column: {item}"),
        })
        .collect()
}

/// A string if the bytes are UTF-8, else `{"base64": ...}`.
fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
