//! IM.OFFLINE.INFO, IM.OFFLINE.PAGE and IM.INFO: reads only.

use super::session::offline_info_reply;
use super::{is, parse_u64, read, unknown_option, user_device};
use crate::config;
use crate::mailbox::log::HAS_DELAY;
use crate::reply::{error, Reply};
use crate::stanza;
use redis_module::{Context, RedisString};

pub const DEFAULT_IDS_LIMIT: u64 = 1000;
pub const MAX_IDS_LIMIT: u64 = 1_000_000;
pub const DEFAULT_PAGE: u64 = 10;
pub const MAX_PAGE: u64 = 1000;

/// IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]]
pub fn offline_info(ctx: &Context, args: &[RedisString]) -> Reply {
    let (user, device, opts) = match user_device(args) {
        Ok(parts) => parts,
        Err(e) => return e,
    };
    let mut ids: Option<u64> = None;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let o = o.as_slice();
        if is(o, "IDS") {
            ids = Some(ids.unwrap_or(DEFAULT_IDS_LIMIT));
        } else if is(o, "LIMIT") && ids.is_some() {
            let Some(n) = it.next() else {
                return error("ERR LIMIT needs a count");
            };
            match parse_u64(n.as_slice(), "LIMIT") {
                Ok(n) if n <= MAX_IDS_LIMIT => ids = Some(n),
                Ok(_) => return error(format!("ERR LIMIT is at most {MAX_IDS_LIMIT}")),
                Err(e) => return e,
            }
        } else {
            return unknown_option(o);
        }
    }
    let mb = match read(ctx, user) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let info = mb.map(|m| m.offline_info(device)).unwrap_or_default();
    let mut fields = offline_info_reply(&info);
    if let Some(limit) = ids {
        let list = mb.map_or(Vec::new(), |m| {
            m.offline_page(device, 0, limit as usize)
                .0
                .iter()
                .map(|msg| Reply::Bulk(msg.id.to_vec()))
                .collect()
        });
        fields.push(("ids", Reply::Array(list)));
    }
    Reply::Map(fields)
}

/// IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
pub fn offline_page(ctx: &Context, args: &[RedisString]) -> Reply {
    let (user, device, opts) = match user_device(args) {
        Ok(parts) => parts,
        Err(e) => return e,
    };
    let mut after = 0;
    let mut count = DEFAULT_PAGE;
    let mut delay: Option<Vec<u8>> =
        Some(config::delay_from().into_bytes()).filter(|d| !d.is_empty());
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let o = o.as_slice();
        let Some(v) = it.next().map(|v| v.as_slice()) else {
            return if is(o, "AFTER") || is(o, "COUNT") || is(o, "DELAY") {
                error(format!(
                    "ERR {} needs a value",
                    String::from_utf8_lossy(o).to_uppercase()
                ))
            } else {
                unknown_option(o)
            };
        };
        if is(o, "AFTER") {
            after = match parse_u64(v, "AFTER") {
                Ok(n) => n,
                Err(e) => return e,
            };
        } else if is(o, "COUNT") {
            count = match parse_u64(v, "COUNT") {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                Ok(_) => return error(format!("ERR COUNT must be between 1 and {MAX_PAGE}")),
                Err(e) => return e,
            };
        } else if is(o, "DELAY") {
            if let Err(e) = stanza::check_delay_from(v) {
                return error(e);
            }
            delay = Some(v.to_vec());
        } else {
            return unknown_option(o);
        }
    }
    let mb = match read(ctx, user) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let Some(mb) = mb else {
        return Reply::Array(vec![Reply::Int(0), Reply::Array(Vec::new())]);
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
    Reply::Array(vec![cursor.into(), Reply::Array(items)])
}

/// IM.INFO <user>
pub fn info(ctx: &Context, args: &[RedisString]) -> Reply {
    let [_, user] = args else {
        return Reply::WrongArity;
    };
    let mb = match read(ctx, user) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let (
        mut messages,
        mut bytes,
        mut devices,
        mut online,
        mut pending,
        mut first,
        mut last,
        mut next,
    ) = (0, 0, 0, 0, 0, 0, 0, 0);
    if let Some(m) = mb {
        messages = m.log.len();
        bytes = m.log.bytes();
        devices = m.devices.len() as u64;
        online = m.devices.iter().filter(|d| d.online).count() as u64;
        pending = m.pending_total();
        first = m.log.first().map_or(0, |x| x.seq);
        last = m.log.last().map_or(0, |x| x.seq);
        next = m.next_seq;
    }
    Reply::Map(vec![
        ("messages", messages.into()),
        ("bytes", bytes.into()),
        ("devices", devices.into()),
        ("online", online.into()),
        ("pending", pending.into()),
        ("first", first.into()),
        ("last", last.into()),
        ("next_seq", next.into()),
    ])
}
