//! IM.DEVICES <user> (SPEC §2)

use super::{user_only, Answer};
use crate::keyspace;
use crate::reply::Reply;
use redis_module::{Context, RedisString};

/// One map per registered device: `device`, `online`, `node`,
/// `last_seen` (ms), `pending`, `offline`.
pub fn devices(ctx: &Context, args: &[RedisString]) -> Answer {
    let mb = keyspace::read(ctx, user_only(args)?)?;
    Ok(Reply::Array(
        mb.iter()
            .flat_map(|m| &m.devices)
            .map(|d| {
                Reply::Map(vec![
                    ("device", Reply::Bulk(d.name().to_vec())),
                    ("online", Reply::Int(i64::from(d.online()))),
                    ("node", Reply::Bulk(d.node().to_vec())),
                    ("last_seen", Reply::Int(d.last_seen())),
                    ("pending", (d.pending.len() as u64).into()),
                    ("offline", d.offline_count().into()),
                ])
            })
            .collect(),
    ))
}
