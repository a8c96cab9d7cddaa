//! IM.DOCTOR [JSON] (SPEC §8)

use super::{is, unknown_option, Answer};
use crate::reply::Reply;
use crate::{doctor, server, wrapper};
use redis_module::{Context, RedisString};
use std::time::{Duration, Instant};

/// How long the look at the mailboxes for the oldest offline and queued
/// messages may take; past it the report says it saw only part.
const BACKLOG_LOOK: Duration = Duration::from_millis(20);

/// How safe the store is now: a short report for people, or with `JSON`
/// the same findings and figures as one JSON object.
pub fn doctor(ctx: &Context, args: &[RedisString]) -> Answer {
    let json = match args {
        [_] => false,
        [_, o] if is(o.as_slice(), "JSON") => true,
        [_, o, ..] => return Err(unknown_option(o.as_slice())),
        _ => return Err(Reply::WrongArity),
    };
    crate::losses::settle();
    let (offline, queued, complete) = oldest(ctx);
    let (findings, report) = doctor::report(ctx, offline, queued, complete);
    let text = if json {
        report.to_string()
    } else {
        doctor::text(&findings, &report)
    };
    Ok(Reply::Bulk(text.into_bytes()))
}

/// The ages (ms) of the oldest offline message and the oldest queued one,
/// from as many mailboxes as [`BACKLOG_LOOK`] allows; whether all were
/// seen.
fn oldest(ctx: &Context) -> (Option<i64>, Option<i64>, bool) {
    let start = Instant::now();
    let now = server::now_ms();
    let (mut offline, mut queued): (Option<i64>, Option<i64>) = (None, None);
    let mut complete = true;
    wrapper::scan::all_mailboxes(ctx, &mut |_, _, mb| {
        let oldest_offline = mb
            .devices
            .iter()
            .filter_map(|d| d.offline.first())
            .filter_map(|s| mb.log.get(s))
            .map(|m| m.ts)
            .min();
        if let Some(ts) = oldest_offline {
            offline = Some(offline.map_or(now - ts, |a| a.max(now - ts)));
        }
        if let Some(a) = mb.archive.as_ref() {
            if let Some(ts) = a.queued.first().and_then(|s| mb.log.get(s)).map(|m| m.ts) {
                queued = Some(queued.map_or(now - ts, |q| q.max(now - ts)));
            }
        }
        if start.elapsed() > BACKLOG_LOOK {
            complete = false;
            return false;
        }
        true
    });
    (offline, queued, complete)
}
