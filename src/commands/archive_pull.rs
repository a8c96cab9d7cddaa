//! IM.ARCHIVE.PULL [COUNT <n>] [LEASE <ms>] (SPEC §6)

use super::{is, parse_u64, unknown_option, Answer};
use crate::archive::{self, MAX_PULL};
use crate::reply::{error, Reply};
use crate::server;
use crate::{keyspace, schedule};
use redis_module::{Context, RedisString};

/// Messages handed out without `COUNT`.
pub const DEFAULT_COUNT: u64 = 100;
/// How long a lease lasts without `LEASE` (ms).
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// The longest lease (ms): a day.
pub const MAX_LEASE_MS: u64 = 24 * 3600 * 1000;

/// Hands out up to `COUNT` queued messages of this node's selected db, each
/// `[user, seq, id, ts, stanza, [device, ...]]` (the devices that still
/// owed it), and leases them for `LEASE` ms: not acked by then, they are
/// handed out again.
pub fn archive_pull(ctx: &Context, args: &[RedisString]) -> Answer {
    let mut count = DEFAULT_COUNT;
    let mut lease = DEFAULT_LEASE_MS;
    let mut it = args.iter().skip(1);
    while let Some(o) = it.next() {
        let o = o.as_slice();
        let value = |it: &mut dyn Iterator<Item = &RedisString>, what: &str| {
            it.next()
                .ok_or_else(|| error(format!("ERR {what} needs a value")))
                .and_then(|v| parse_u64(v.as_slice(), what))
        };
        if is(o, "COUNT") {
            count = value(&mut it, "COUNT")?;
            if !(1..=MAX_PULL).contains(&count) {
                return Err(error(format!("ERR COUNT must be between 1 and {MAX_PULL}")));
            }
        } else if is(o, "LEASE") {
            lease = value(&mut it, "LEASE")?;
            if !(1..=MAX_LEASE_MS).contains(&lease) {
                return Err(error(format!(
                    "ERR LEASE must be between 1 and {MAX_LEASE_MS} ms"
                )));
            }
        } else {
            return Err(unknown_option(o));
        }
    }
    if !server::is_primary(ctx) {
        return Err(error("ERR IM.ARCHIVE.PULL runs on a primary"));
    }
    Ok(Reply::Array(pull(ctx, count, lease as i64)))
}

/// Up to `count` queued messages not under a lease, from the client's
/// selected db (where its `IM.ARCHIVE.ACK` goes), leased for `lease_ms`.
fn pull(ctx: &Context, count: u64, lease_ms: i64) -> Vec<Reply> {
    let now = server::now_ms();
    let mut out = Vec::new();
    for c in archive::candidates(server::selected_db(ctx), now) {
        if out.len() as u64 >= count {
            break;
        }
        let (_, key) = schedule::split(&c.name);
        // A mailbox whose slot is not this node's (an atomic slot
        // migration's copy on its target) is handed out by its owner.
        if !crate::cluster::owns(ctx, key) {
            continue;
        }
        let name = server::string(ctx, key);
        let Ok(Some(mb)) = keyspace::read(ctx, &name) else {
            continue;
        };
        let Some(a) = mb.archive.as_ref() else {
            continue;
        };
        let mut last = None;
        let before = out.len();
        'ranges: for (s, e) in a.queued.ranges_from(c.from) {
            for seq in s.max(c.from)..=e {
                if out.len() as u64 >= count {
                    break 'ranges;
                }
                let Some(m) = mb.log.get(seq) else {
                    continue;
                };
                out.push(Reply::Array(vec![
                    Reply::Bulk(key.to_vec()),
                    seq.into(),
                    Reply::Bulk(m.id.to_vec()),
                    Reply::Int(m.ts),
                    Reply::Bulk(m.stanza.to_vec()),
                    Reply::Array(
                        a.owed_by(seq)
                            .into_iter()
                            .map(|d| Reply::Bulk(d.to_vec()))
                            .collect(),
                    ),
                ]));
                last = Some(seq);
            }
        }
        if let Some(up_to) = last {
            let taken = (out.len() - before) as u64;
            archive::leased(
                c.name,
                up_to,
                now.saturating_add(lease_ms),
                c.leased + taken,
            );
        }
    }
    out
}
