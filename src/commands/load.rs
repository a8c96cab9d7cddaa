//! IM.LOAD <user> HEAD|MSGS <blob>: a mailbox as an AOF rewrite writes it
//! (the data type's `aof_rewrite`). Refused to clients.

use super::apply::INTERNAL;
use super::Answer;
use crate::keyspace::Writer;
use crate::mailbox::ids::Maybe;
use crate::mailbox::Mailbox;
use crate::metrics::Gauges;
use crate::reply::{error, Reply};
use crate::{server, timer};
use redis_module::{Context, RedisString};

/// `HEAD` replaces the key with a mailbox holding the header's state;
/// `MSGS` adds a batch of its messages.
pub fn load(ctx: &Context, args: &[RedisString]) -> Answer {
    let [_, user, part, blob] = args else {
        return Err(Reply::WrongArity);
    };
    if !server::replicated_or_loading(ctx) {
        return Err(error(INTERNAL));
    }
    let mut w = Writer::open(ctx, user)?;
    let part = part.as_slice();
    if part.eq_ignore_ascii_case(b"HEAD") {
        let (mb, _) = Mailbox::decode_header(blob.as_slice())
            .ok_or_else(|| error("ERR IM.LOAD HEAD does not decode"))?;
        w.replace(mb);
    } else if part.eq_ignore_ascii_case(b"MSGS") {
        let mb = w
            .mailbox_mut()
            .ok_or_else(|| error("ERR IM.LOAD MSGS needs IM.LOAD HEAD first"))?;
        let before = Gauges::of(mb);
        let mut maybe = Maybe::default();
        let loaded = mb.load_messages(blob.as_slice(), &mut maybe);
        before.update(&Gauges::of(mb));
        loaded.ok_or_else(|| error("ERR IM.LOAD MSGS does not decode"))?;
        // IM.LOAD comes from the AOF or the primary only, whose rewrite
        // wrote a mailbox that its RDB loader kept: kept here too.
        let repeated = mb.repeated_ids(&mut maybe);
        if repeated > 0 {
            let key = format!("key '{}'", crate::log::escape(user.as_slice(), 200));
            crate::metrics::repeated_ids_kept(&key, repeated);
        }
    } else {
        return Err(error("ERR IM.LOAD takes HEAD or MSGS"));
    }
    if let Some(mb) = w.mailbox() {
        timer::reschedule(ctx, user.as_slice(), mb);
    }
    // Entered in the node's archive index as it is now, and never tidied:
    // the header's archive queue counts its messages only as MSGS loads
    // them, so after the HEAD (or a first batch) it may look idle, and
    // letting it go then would lose the queue. What loads is what was
    // written.
    if let Some(mb) = w.mailbox() {
        crate::archive::scanned(server::selected_db(ctx), user.as_slice(), mb);
    }
    ctx.replicate_verbatim();
    Ok(Reply::Simple("OK".into()))
}
