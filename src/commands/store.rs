//! IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
//! (SPEC §3)

use super::connect::refusal;
use super::{device_name, is, parse_u64, unknown_option, Answer};
use crate::config::{self, QuotaPolicy};
use crate::events;
use crate::keyspace::{self, Propagate, Writer};
use crate::mailbox::store::{self, Limits, Plan, Request};
use crate::mailbox::{MAX_DEVICES, MAX_ID};
use crate::reply::{self, error, Reply};
use crate::{metrics, server, stanza, timer};
use redis_module::{Context, RedisString};
use smallvec::SmallVec;

/// The arguments after the stanza.
#[derive(Default)]
struct Options<'a> {
    id: Option<&'a [u8]>,
    devices: Option<SmallVec<[&'a [u8]; 4]>>,
    force: bool,
}

fn parse_options(mut rest: &[RedisString]) -> Result<Options<'_>, Reply> {
    let mut a = Options::default();
    while let [o, tail @ ..] = rest {
        let o = o.as_slice();
        rest = tail;
        if is(o, "ID") {
            let [id, tail @ ..] = rest else {
                return Err(error("ERR ID needs a value"));
            };
            let id = id.as_slice();
            if id.is_empty() || id.len() > MAX_ID {
                return Err(error(format!("ERR ID must be 1 to {MAX_ID} bytes")));
            }
            a.id = Some(id);
            rest = tail;
        } else if is(o, "DEVICES") {
            let [n, tail @ ..] = rest else {
                return Err(error("ERR DEVICES needs a count"));
            };
            let n = parse_u64(n.as_slice(), "DEVICES count")?;
            if n > MAX_DEVICES as u64 {
                return Err(error(format!(
                    "ERR DEVICES lists at most {MAX_DEVICES} devices"
                )));
            }
            let n = n as usize;
            if tail.len() < n {
                return Err(error("ERR DEVICES count is larger than the devices given"));
            }
            // Distinct names, in order; a hash set past a few, so that the
            // work stays linear in the list.
            let mut list: SmallVec<[&[u8]; 4]> = SmallVec::with_capacity(n);
            let mut seen = hashbrown::HashSet::with_capacity(if n > 8 { n } else { 0 });
            for d in &tail[..n] {
                let d = device_name(d.as_slice())?;
                let new = if n > 8 {
                    seen.insert(d)
                } else {
                    !list.contains(&d)
                };
                if new {
                    list.push(d);
                }
            }
            a.devices = Some(list);
            rest = &tail[n..];
        } else if is(o, "FORCE") {
            a.force = true;
        } else {
            return Err(unknown_option(o));
        }
    }
    Ok(a)
}

/// The settings a store obeys, as they are now.
fn limits() -> Limits {
    Limits {
        max_messages: config::get(&config::MAX_MESSAGES).max(0) as u64,
        max_bytes: config::get(&config::MAX_BYTES).max(0) as u64,
        drop_oldest: config::quota_policy() == QuotaPolicy::DropOldest,
        max_pending: config::get(&config::MAX_PENDING).max(1) as usize,
        archive: config::ARCHIVE.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Stores the stanza; pending on the devices it was delivered to, offline
/// for the other owed devices. Replies `[seq, id, [pending devices]]`, or
/// nil when the offline policy kept nothing.
pub fn store(ctx: &Context, args: &[RedisString]) -> Answer {
    let [_, user, stanza_arg, rest @ ..] = args else {
        return Err(Reply::WrongArity);
    };
    let raw = stanza_arg.as_slice();
    // Refused options or size touch no key (a write lookup would expire
    // it, or refresh its access time).
    let opts = parse_options(rest)?;
    let max_stanza = config::get(&config::MAX_STANZA_BYTES).max(0) as usize;
    if raw.len() > max_stanza {
        return Err(error(format!(
            "ERR stanza is {} bytes, more than max-stanza-bytes ({max_stanza})",
            raw.len()
        )));
    }
    // Then the key is opened and the mailbox's lines asked for, so that
    // fetching them from memory (most mailboxes are cold among many)
    // overlaps the work that does not need them: the clock, the settings
    // and the parse's first part. Once the root's start tag is read, what
    // those lines point to is asked for, and the rest of the parse
    // overlaps that.
    let mut w = Writer::open(ctx, user)?;
    if let Some(m) = w.mailbox() {
        m.prefetch_lines();
    }
    let now = server::now_ms();
    let limits = limits();
    let parsed = stanza::parse_with(raw, || {
        if let Some(m) = w.mailbox() {
            m.prefetch_links(raw.len());
            if m.log.is_empty() {
                // A first message moves the mailbox's schedule entry.
                timer::prefetch_entry(m);
            }
        }
    })
    .map_err(error)?;
    if let Some(m) = w.mailbox() {
        m.prefetch_for_store(raw.len());
    }
    let request = Request {
        stanza: raw,
        id: opts.id,
        stanza_id: parsed.id.as_ref().map(|a| (&a.value[..], a.verbatim_at)),
        devices: opts.devices.as_deref(),
        keep_offline: opts.force || parsed.keep_offline(config::is_offline_type),
        has_delay: parsed.has_delay,
    };
    let new = match store::plan(
        w.mailbox(),
        &request,
        &limits,
        now,
        keyspace::new_counter(now),
    ) {
        Ok(Plan::Store(s)) => s,
        Ok(Plan::Duplicate {
            seq,
            id,
            pending_on,
        }) => {
            return Ok(reply::send_stored(ctx, seq, &id, pending_on.iter()));
        }
        Ok(Plan::NotKept) => {
            metrics::add(&metrics::DROPPED, 1);
            return Ok(Reply::Nil);
        }
        Err(r) => {
            if matches!(r, store::Refusal::Full { .. }) {
                metrics::add(&metrics::REJECTED, 1);
            }
            return Err(refusal(r));
        }
    };
    let mut kicks = Vec::new();
    if let Some(m) = w.mailbox() {
        for &i in &new.kick {
            kicks.push(events::kick_event(m, user.as_slice(), i, "max-pending"));
            metrics::add(&metrics::EXPIRED, m.devices[i].pending.len() as i64 + 1);
        }
    }
    metrics::add(&metrics::KICKED, kicks.len() as i64);
    if config::ARCHIVE.load(std::sync::atomic::Ordering::Relaxed) {
        metrics::add(&metrics::QUEUED, new.drop.len() as i64);
    } else {
        metrics::add(&metrics::DROPPED, new.drop.len() as i64);
    }
    w.commit(now, &new.effects(), Propagate::EffectsWith(stanza_arg));
    events::publish(ctx, &kicks);
    metrics::add(&metrics::STORED, 1);
    Ok(reply::send_stored(
        ctx,
        new.seq,
        new.id(),
        new.pending.iter(),
    ))
}
