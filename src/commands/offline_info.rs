//! IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]] (SPEC §4)

use super::connect::offline_info_reply;
use super::{is, parse_u64, unknown_option, user_device, Answer};
use crate::keyspace;
use crate::reply::{error, Reply};
use redis_module::{Context, RedisString};

/// Ids listed by `IDS` without `LIMIT`.
pub const DEFAULT_IDS_LIMIT: u64 = 1000;
/// Most ids `IDS LIMIT` lists: a reply of 10,000 ids takes a few ms; a
/// device owed more pages through them (`IM.OFFLINE.PAGE`).
pub const MAX_IDS_LIMIT: u64 = 10_000;

/// What the device has not received: `count`, `bytes`, `first`, `last`,
/// and with `IDS` the ids (at most `LIMIT`).
pub fn offline_info(ctx: &Context, args: &[RedisString]) -> Answer {
    let (user, device, opts) = user_device(args)?;
    let mut ids: Option<u64> = None;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let o = o.as_slice();
        if is(o, "IDS") {
            ids = Some(ids.unwrap_or(DEFAULT_IDS_LIMIT));
        } else if is(o, "LIMIT") && ids.is_some() {
            let n = it.next().ok_or_else(|| error("ERR LIMIT needs a count"))?;
            let n = parse_u64(n.as_slice(), "LIMIT")?;
            if n > MAX_IDS_LIMIT {
                return Err(error(format!("ERR LIMIT is at most {MAX_IDS_LIMIT}")));
            }
            ids = Some(n);
        } else {
            return Err(unknown_option(o));
        }
    }
    let mb = keyspace::read(ctx, user)?;
    let info = mb.map(|m| m.offline_info(device)).unwrap_or_default();
    let ids = ids.map(|limit| {
        mb.map_or(Vec::new(), |m| {
            m.offline_page(device, 0, limit as usize)
                .0
                .iter()
                .map(|msg| Reply::Bulk(msg.id.to_vec()))
                .collect()
        })
    });
    Ok(offline_info_reply(&info, ids))
}
