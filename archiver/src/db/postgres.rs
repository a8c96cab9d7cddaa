//! PostgreSQL, through the `postgres` crate (plain TCP or a Unix socket; no
//! TLS).

use std::collections::HashSet;

use anyhow::{Context, Result};
use postgres::{Client, NoTls};

use super::{devices_from_json, devices_to_json, Archive, HistoryRange, Message, Row};

/// The table and its index.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS im_archive (
    user_key    BYTEA  NOT NULL,  -- the mailbox's key (bare JID), any bytes
    seq         BIGINT NOT NULL,  -- the module's seq, unique within the mailbox
    id          BYTEA  NOT NULL,  -- the stanza id
    ts          BIGINT NOT NULL,  -- creation time, Unix ms
    stanza      BYTEA  NOT NULL,  -- the stanza, exactly as stored
    devices     JSONB  NOT NULL,  -- JSON array of the devices that still owed it
    archived_at BIGINT NOT NULL,  -- when the archiver wrote it, Unix ms
    restored_at BIGINT,           -- when it was loaded back since, Unix ms; NULL if not
    PRIMARY KEY (user_key, seq)
);
CREATE INDEX IF NOT EXISTS im_archive_user_ts ON im_archive (user_key, ts, seq);
";

/// A batch in one statement: the columns as arrays, unnested into rows.
const UPSERT: &str = "\
INSERT INTO im_archive (user_key, seq, id, ts, stanza, devices, archived_at, restored_at)
SELECT u, s, i, t, st, d::jsonb, $7, NULL
FROM UNNEST($1::bytea[], $2::int8[], $3::bytea[], $4::int8[], $5::bytea[], $6::text[]) AS b(u, s, i, t, st, d)
ON CONFLICT (user_key, seq) DO UPDATE SET
    id = excluded.id, ts = excluded.ts, stanza = excluded.stanza, devices = excluded.devices,
    archived_at = excluded.archived_at, restored_at = NULL";

const COLUMNS: &str = "user_key, seq, id, ts, stanza, devices::text, archived_at, restored_at";

/// Any fixed number: archivers starting together create the table one at a
/// time (concurrent `CREATE TABLE IF NOT EXISTS` can fail in PostgreSQL).
const SCHEMA_LOCK: i64 = 0x696d_6172_6368;

/// An archive in a PostgreSQL database.
pub struct PostgresArchive {
    client: Client,
}

impl PostgresArchive {
    /// Connects and creates the table if it is missing.
    pub fn connect(url: &str) -> Result<PostgresArchive> {
        let mut client = Client::connect(url, NoTls)
            .with_context(|| format!("connecting to {}", super::redact_password(url)))?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        tx.batch_execute(SCHEMA)
            .context("creating the archive table")?;
        tx.commit()?;
        Ok(PostgresArchive { client })
    }
}

fn row_of(r: &postgres::Row) -> Result<Row> {
    let devices: String = r.try_get(5)?;
    Ok(Row {
        message: Message {
            user: r.try_get(0)?,
            seq: r.try_get(1)?,
            id: r.try_get(2)?,
            ts: r.try_get(3)?,
            stanza: r.try_get(4)?,
            devices: devices_from_json(&devices)?,
        },
        archived_at: r.try_get(6)?,
        restored_at: r.try_get(7)?,
    })
}

impl Archive for PostgresArchive {
    fn write_batch(&mut self, batch: &[Message], archived_at: i64) -> Result<u64> {
        // One statement may not update a row twice: the last copy of a
        // message wins, as it would row by row.
        let mut seen = HashSet::new();
        let mut unique: Vec<&Message> = batch
            .iter()
            .rev()
            .filter(|m| seen.insert((&m.user, m.seq)))
            .collect();
        unique.reverse();
        let users: Vec<&[u8]> = unique.iter().map(|m| m.user.as_slice()).collect();
        let seqs: Vec<i64> = unique.iter().map(|m| m.seq).collect();
        let ids: Vec<&[u8]> = unique.iter().map(|m| m.id.as_slice()).collect();
        let tss: Vec<i64> = unique.iter().map(|m| m.ts).collect();
        let stanzas: Vec<&[u8]> = unique.iter().map(|m| m.stanza.as_slice()).collect();
        let devices: Vec<String> = unique.iter().map(|m| devices_to_json(&m.devices)).collect();
        let mut tx = self.client.transaction()?;
        let written = tx.execute(
            UPSERT,
            &[&users, &seqs, &ids, &tss, &stanzas, &devices, &archived_at],
        )?;
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
            "SELECT {COLUMNS} FROM im_archive WHERE user_key = $1 \
             AND (restored_at IS NULL OR $2) ORDER BY seq DESC LIMIT $3"
        );
        let limit = newest.map_or(i64::MAX, |n| n.min(i64::MAX as u64) as i64);
        let rows = self
            .client
            .query(&sql, &[&user, &include_restored, &limit])?;
        let mut out = rows
            .iter()
            .map(|r| row_of(r).map(|row| row.message))
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    fn mark_restored(&mut self, user: &[u8], seqs: &[i64], restored_at: i64) -> Result<()> {
        self.client.execute(
            "UPDATE im_archive SET restored_at = $3 WHERE user_key = $1 AND seq = ANY($2)",
            &[&user, &seqs, &restored_at],
        )?;
        Ok(())
    }

    fn history(&mut self, user: &[u8], range: HistoryRange) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM im_archive WHERE user_key = $1 AND ts >= $2 AND ts <= $3 \
             ORDER BY ts, seq LIMIT $4"
        );
        let limit = range
            .limit
            .map_or(i64::MAX, |n| n.min(i64::MAX as u64) as i64);
        let rows = self.client.query(
            &sql,
            &[
                &user,
                &range.since.unwrap_or(i64::MIN),
                &range.until.unwrap_or(i64::MAX),
                &limit,
            ],
        )?;
        rows.iter().map(row_of).collect()
    }

    #[cfg(test)]
    fn count(&mut self) -> Result<u64> {
        let row = self
            .client
            .query_one("SELECT count(*) FROM im_archive", &[])?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}
