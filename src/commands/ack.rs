//! IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
//! (SPEC §3)

use super::connect::refusal;
use super::{is, parse_u64, user_device, Answer};
use crate::keyspace::{self, Propagate, Writer};
use crate::mailbox::effect::Seqs;
use crate::mailbox::{self, Effect};
use crate::reply::{error, Reply};
use crate::{metrics, server};
use redis_module::{Context, RedisString};
use smallvec::SmallVec;

/// Most ids one `IM.ACK` names (SPEC §3).
pub const MAX_ACK_IDS: usize = 10_000;

/// Marks the messages acked for the device (registering it if new);
/// answers how many were newly acked. Unknown ids are ignored.
pub fn ack(ctx: &Context, args: &[RedisString]) -> Answer {
    let (user, device, ids) = user_device(args)?;
    let upto = match ids {
        [] => return Err(Reply::WrongArity),
        [w, n] if is(w.as_slice(), "UPTO") => Some(parse_u64(n.as_slice(), "UPTO")?),
        [w, ..] if is(w.as_slice(), "UPTO") => {
            return Err(error("ERR UPTO takes exactly one seq"));
        }
        _ if ids.len() > MAX_ACK_IDS => {
            return Err(error(format!("ERR IM.ACK takes at most {MAX_ACK_IDS} ids")));
        }
        _ => None,
    };
    let mut w = Writer::open(ctx, user)?;
    mailbox::room_for(w.mailbox(), std::iter::once(device)).map_err(refusal)?;
    let now = server::now_ms();
    let mut effects: SmallVec<[Effect<'_>; 2]> = SmallVec::new();
    effects.extend(keyspace::create_if_new(w.mailbox(), now));
    effects.push(match upto {
        Some(upto) => Effect::AckUpto { device, upto },
        None => {
            let mut seqs: Seqs = ids
                .iter()
                .filter_map(|id| w.mailbox().and_then(|m| m.find_id(id.as_slice())))
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            Effect::Ack { device, seqs }
        }
    });
    let acked = w.commit(now, &effects, Propagate::Effects);
    metrics::add(&metrics::ACKED, acked as i64);
    Ok(acked.into())
}
