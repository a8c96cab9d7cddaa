//! IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
//! (SPEC §4)

use super::{is, parse_u64, unknown_option, user_device, Answer};
use crate::config;
use crate::keyspace;
use crate::log;
use crate::mailbox::log::HAS_DELAY;
use crate::reply::{error, Reply};
use crate::stanza;
use redis_module::{Context, RedisString};

/// Messages per page without `COUNT`.
pub const DEFAULT_PAGE: u64 = 10;
/// Most messages per page.
pub const MAX_PAGE: u64 = 1000;

/// The device's offline messages after `AFTER` in seq order, at most
/// `COUNT`: `[cursor, [[seq, id, ts, stanza], ...]]`, the cursor 0 on the
/// last page. With `DELAY` (or `delay-from`) each stanza without a
/// XEP-0203 `<delay>` gets one stamped with its `ts`.
pub fn offline_page(ctx: &Context, args: &[RedisString]) -> Answer {
    let (user, device, opts) = user_device(args)?;
    let mut after = 0;
    let mut count = DEFAULT_PAGE;
    let mut delay: Option<Vec<u8>> =
        Some(config::delay_from().into_bytes()).filter(|d| !d.is_empty());
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let o = o.as_slice();
        let Some(v) = it.next().map(|v| v.as_slice()) else {
            return Err(if is(o, "AFTER") || is(o, "COUNT") || is(o, "DELAY") {
                error(format!(
                    "ERR {} needs a value",
                    log::escape(o, 16).to_uppercase()
                ))
            } else {
                unknown_option(o)
            });
        };
        if is(o, "AFTER") {
            after = parse_u64(v, "AFTER")?;
        } else if is(o, "COUNT") {
            count = parse_u64(v, "COUNT")?;
            if !(1..=MAX_PAGE).contains(&count) {
                return Err(error(format!("ERR COUNT must be between 1 and {MAX_PAGE}")));
            }
        } else if is(o, "DELAY") {
            // Written into each stanza as an attribute value: it must keep
            // the stanza well-formed (SPEC §3, §4).
            stanza::check_delay_from(v).map_err(error)?;
            delay = Some(v.to_vec());
        } else {
            return Err(unknown_option(o));
        }
    }
    let Some(mb) = keyspace::read(ctx, user)? else {
        return Ok(Reply::Array(vec![Reply::Int(0), Reply::Array(Vec::new())]));
    };
    let (page, more) = mb.offline_page(device, after, count as usize);
    let cursor = if more {
        page.last().map_or(0, |m| m.seq)
    } else {
        0
    };
    let items = page
        .iter()
        .map(|m| {
            let body = match &delay {
                Some(from) if m.flags & HAS_DELAY == 0 => stanza::with_delay(m.stanza, from, m.ts),
                _ => m.stanza.to_vec(),
            };
            Reply::Array(vec![
                m.seq.into(),
                Reply::Bulk(m.id.to_vec()),
                Reply::Int(m.ts),
                Reply::Bulk(body),
            ])
        })
        .collect();
    Ok(Reply::Array(vec![cursor.into(), Reply::Array(items)]))
}
