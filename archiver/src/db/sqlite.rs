//! SQLite (bundled with the program: nothing to install).

use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection};

use super::{devices_from_json, devices_to_json, Archive, HistoryRange, Message, Row};

/// The table and its index. `WITHOUT ROWID`: the rows are stored in
/// `(user_key, seq)` order, so a user's rows are read in seq order directly;
/// the index's entries end with the primary key, so they are in
/// `(user_key, ts, seq)` order for the history.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS im_archive (
    user_key    BLOB    NOT NULL,  -- the mailbox's key (bare JID), any bytes
    seq         INTEGER NOT NULL,  -- the module's seq, unique within the mailbox
    id          BLOB    NOT NULL,  -- the stanza id
    ts          INTEGER NOT NULL,  -- creation time, Unix ms
    stanza      BLOB    NOT NULL,  -- the stanza, exactly as stored
    devices     TEXT    NOT NULL,  -- JSON array of the devices that still owed it
    archived_at INTEGER NOT NULL,  -- when the archiver wrote it, Unix ms
    restored_at INTEGER,           -- when it was loaded back since, Unix ms; NULL if not
    PRIMARY KEY (user_key, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS im_archive_user_ts ON im_archive (user_key, ts);
";

const UPSERT: &str = "\
INSERT INTO im_archive (user_key, seq, id, ts, stanza, devices, archived_at, restored_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)
ON CONFLICT (user_key, seq) DO UPDATE SET
    id = excluded.id, ts = excluded.ts, stanza = excluded.stanza, devices = excluded.devices,
    archived_at = excluded.archived_at, restored_at = NULL";

const COLUMNS: &str = "user_key, seq, id, ts, stanza, devices, archived_at, restored_at";

/// An archive in a SQLite file.
pub struct SqliteArchive {
    conn: Connection,
}

impl SqliteArchive {
    /// Opens (or creates) the file and the table. WAL with `synchronous =
    /// FULL`: a commit is on disk when it returns, since the archiver then
    /// has the messages removed from Redis.
    pub fn open(path: &str) -> Result<SqliteArchive> {
        let conn = Connection::open(path).with_context(|| format!("opening SQLite file {path}"))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        tracing::debug!(path, journal_mode = %mode, "SQLite opened");
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the archive table in {path}"))?;
        Ok(SqliteArchive { conn })
    }
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let devices: String = r.get(5)?;
    let devices = devices_from_json(&devices).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(Row {
        message: Message {
            user: r.get(0)?,
            seq: r.get(1)?,
            id: r.get(2)?,
            ts: r.get(3)?,
            stanza: r.get(4)?,
            devices,
        },
        archived_at: r.get(6)?,
        restored_at: r.get(7)?,
    })
}

impl Archive for SqliteArchive {
    fn write_batch(&mut self, batch: &[Message], archived_at: i64) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut written = 0u64;
        {
            let mut stmt = tx.prepare_cached(UPSERT)?;
            for m in batch {
                written += stmt.execute(params![
                    m.user,
                    m.seq,
                    m.id,
                    m.ts,
                    m.stanza,
                    devices_to_json(&m.devices),
                    archived_at
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    fn restorable(
        &mut self,
        user: &[u8],
        include_restored: bool,
        newest: Option<u64>,
    ) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM im_archive WHERE user_key = ?1 \
             AND (restored_at IS NULL OR ?2) ORDER BY seq DESC LIMIT ?3"
        );
        let limit = newest.map_or(i64::MAX, |n| n.min(i64::MAX as u64) as i64);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt
            .query_map(params![user, include_restored, limit], row_of)?
            .map(|r| r.map(|row| row.message))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    fn mark_restored(&mut self, user: &[u8], seqs: &[i64], restored_at: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE im_archive SET restored_at = ?3 WHERE user_key = ?1 AND seq = ?2",
            )?;
            for seq in seqs {
                stmt.execute(params![user, seq, restored_at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn history(&mut self, user: &[u8], range: HistoryRange) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM im_archive WHERE user_key = ?1 AND ts >= ?2 AND ts <= ?3 \
             ORDER BY ts, seq LIMIT ?4"
        );
        let limit = range
            .limit
            .map_or(i64::MAX, |n| n.min(i64::MAX as u64) as i64);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(
                params![
                    user,
                    range.since.unwrap_or(i64::MIN),
                    range.until.unwrap_or(i64::MAX),
                    limit
                ],
                row_of,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    #[cfg(test)]
    fn count(&mut self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM im_archive", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}
