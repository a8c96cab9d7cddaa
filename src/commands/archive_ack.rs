//! IM.ARCHIVE.ACK <user> <seq> [<seq> ...] (SPEC §6)

use super::{parse_u64, Answer};
use crate::keyspace::{Propagate, Writer};
use crate::mailbox::Effect;
use crate::reply::{error, Reply};
use crate::{metrics, server};
use redis_module::{Context, RedisString};

/// Most seqs one call names.
pub const MAX_SEQS: usize = 10_000;

/// The archiver confirmed these queued messages: they leave Redis for
/// good. Answers how many did; a seq that is not queued counts 0.
pub fn archive_ack(ctx: &Context, args: &[RedisString]) -> Answer {
    let [_, user, seqs @ ..] = args else {
        return Err(Reply::WrongArity);
    };
    if seqs.is_empty() {
        return Err(Reply::WrongArity);
    }
    if seqs.len() > MAX_SEQS {
        return Err(error(format!(
            "ERR IM.ARCHIVE.ACK takes at most {MAX_SEQS} seqs"
        )));
    }
    let seqs = seqs
        .iter()
        .map(|s| parse_u64(s.as_slice(), "seq"))
        .collect::<Result<Vec<u64>, Reply>>()?;
    let mut w = Writer::open(ctx, user)?;
    let Some(mb) = w.mailbox() else {
        return Ok(Reply::Int(0));
    };
    let mut queued: Vec<u64> = seqs.into_iter().filter(|&s| mb.is_queued(s)).collect();
    queued.sort_unstable();
    queued.dedup();
    if queued.is_empty() {
        return Ok(Reply::Int(0));
    }
    let n = w.commit(
        server::now_ms(),
        &[Effect::ArchiveAck { seqs: queued }],
        Propagate::Effects,
    );
    metrics::add(&metrics::ARCHIVED, n as i64);
    Ok(n.into())
}
