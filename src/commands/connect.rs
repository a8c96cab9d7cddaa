//! IM.CONNECT <user> <device> [NODE <node>] (SPEC §2)

use super::{is, node_name, unknown_option, user_device, Answer};
use crate::events;
use crate::keyspace::{self, Propagate, Writer};
use crate::mailbox::{self, Effect, OfflineInfo, DEFAULT_NODE};
use crate::reply::{error, Reply};
use crate::server;
use redis_module::{Context, RedisString};

/// Registers the device if new, marks it online on `node` and answers what
/// it missed (the map of `IM.OFFLINE.INFO`).
pub fn connect(ctx: &Context, args: &[RedisString]) -> Answer {
    let (user, device, opts) = user_device(args)?;
    let mut node: &[u8] = DEFAULT_NODE;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        if !is(o.as_slice(), "NODE") {
            return Err(unknown_option(o.as_slice()));
        }
        let n = it
            .next()
            .ok_or_else(|| error("ERR NODE needs a node name"))?;
        node = node_name(n.as_slice())?;
        may_name(ctx, node)?;
    }
    let mut w = Writer::open(ctx, user)?;
    mailbox::room_for(w.mailbox(), std::iter::once(device)).map_err(refusal)?;
    let now = server::now_ms();
    let mut effects: Vec<Effect<'_>> = Vec::with_capacity(3);
    effects.extend(keyspace::create_if_new(w.mailbox(), now));
    // A device back at an evicted mailbox brings back what is still queued
    // (SPEC §6).
    if w.mailbox().is_some_and(|m| m.is_evicted()) {
        effects.push(Effect::ComeBack);
    }
    effects.push(Effect::Connect { device, node });
    w.commit(now, &effects, Propagate::Effects);
    let (info, archived) = w
        .mailbox()
        .map(|m| (m.offline_info(device), m.archived()))
        .unwrap_or_default();
    let mut reply = offline_info_reply(&info, None);
    // The rest waits in the archive: the reply says how many, and a
    // restore request goes to the archiver.
    if archived > 0 {
        if let Reply::Map(fields) = &mut reply {
            fields.push(("archived", archived.into()));
        }
        events::publish_restore(ctx, user.as_slice(), archived);
    }
    Ok(reply)
}

/// Refuses a `NODE` whose event channel (`<event-prefix><node>`, SPEC §5)
/// the command's ACL user may not access: the module publishes the
/// device's events there (resends with the stanza, kicks), so a user
/// limited to its own channels (docs/operations.md, "ACL") could
/// otherwise have its stanzas published on another tenant's channel.
fn may_name(ctx: &Context, node: &[u8]) -> Result<(), Reply> {
    let mut channel = crate::config::event_prefix().to_vec();
    channel.extend_from_slice(node);
    if server::may_access_channel(ctx, &channel) {
        return Ok(());
    }
    Err(error(format!(
        "NOPERM this user has no permissions to access the channel '{}', where the events of node '{}' go",
        crate::log::escape(&channel, 128),
        crate::log::escape(node, 128)
    )))
}

/// The map of `IM.OFFLINE.INFO` (and `IM.CONNECT`): `count`, `bytes`,
/// `first`, `last`, and `ids` when asked.
pub fn offline_info_reply(info: &OfflineInfo, ids: Option<Vec<Reply>>) -> Reply {
    let mut fields = vec![
        ("count", info.count.into()),
        ("bytes", info.bytes.into()),
        ("first", info.first.into()),
        ("last", info.last.into()),
    ];
    if let Some(ids) = ids {
        fields.push(("ids", Reply::Array(ids)));
    }
    Reply::Map(fields)
}

/// The error reply of a refused change of a mailbox.
pub fn refusal(r: mailbox::store::Refusal) -> Reply {
    use mailbox::store::Refusal;
    match r {
        Refusal::IdTooLong { len } => error(format!(
            "ERR stanza id is {len} bytes; an id is 1 to {} bytes",
            mailbox::MAX_ID
        )),
        Refusal::TooManyDevices => error(format!(
            "ERR a mailbox holds at most {} devices",
            mailbox::MAX_DEVICES
        )),
        Refusal::SeqExhausted => error(format!(
            "ERR the mailbox has given every seq up to {}",
            mailbox::MAX_SEQ
        )),
        Refusal::Full {
            count,
            bytes,
            size,
            max_messages,
            max_bytes,
        } => error(format!(
            "IMFULL mailbox holds {count} messages and {bytes} bytes, and the stanza is {size} bytes (max-messages {max_messages}, max-bytes {max_bytes})"
        )),
    }
}
