//! IM.CONNECT, IM.DISCONNECT, IM.DEVICES, IM.FORGET.

use super::{
    is, node_name, now_ms, read, unknown_option, user_device, Propagate, Writer, MAX_DEVICES,
};
use crate::mailbox::{Effect, Mailbox, OfflineInfo, DEFAULT_NODE};
use crate::reply::{error, Reply};
use redis_module::{Context, RedisString};
use std::sync::atomic::{AtomicU64, Ordering};

pub fn offline_info_reply(info: &OfflineInfo) -> Vec<(&'static str, Reply)> {
    vec![
        ("count", info.count.into()),
        ("bytes", info.bytes.into()),
        ("first", info.first.into()),
        ("last", info.last.into()),
    ]
}

/// The highest seq this server has handed out, in any mailbox.
static HIGHEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Notes a seq handed out, so that no new mailbox starts below it.
pub fn seq_issued(seq: u64) {
    HIGHEST_SEQ.fetch_max(seq, Ordering::Relaxed);
}

/// The effect that creates the mailbox when the key is new. Its counter
/// starts from the clock (ms x 1000), and above every seq handed out
/// since the server started, so that a mailbox deleted and created again
/// in the same millisecond never hands out a seq twice.
pub fn create_if_new<'a>(mb: Option<&Mailbox>, now: i64, effects: &mut impl Extend<Effect<'a>>) {
    if mb.is_none() {
        let clock = (now.max(0) as u64).saturating_mul(1000);
        let next_seq = clock.max(HIGHEST_SEQ.load(Ordering::Relaxed).saturating_add(1));
        effects.extend([Effect::Create { next_seq }]);
    }
}

/// Refuses a new device when the mailbox already has the most it may hold.
pub fn check_room(mb: Option<&Mailbox>, device: &[u8]) -> Result<(), Reply> {
    check_room_for(mb, std::iter::once(device))
}

/// Refuses `devices` (distinct names) when registering those that are new
/// would take the mailbox, new or not, over [`MAX_DEVICES`]. Linear in the
/// names and the mailbox's devices.
pub fn check_room_for<'a>(
    mb: Option<&Mailbox>,
    devices: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<(), Reply> {
    let have = mb.map_or(0, |m| m.devices.len());
    let new = match mb {
        None => devices.len(),
        Some(m) if devices.len() > 8 && have > 8 => {
            let known: hashbrown::HashSet<&[u8]> = m.devices.iter().map(|d| &*d.name).collect();
            devices.filter(|d| !known.contains(d)).count()
        }
        Some(m) => devices.filter(|d| m.device_index(d).is_none()).count(),
    };
    if have + new > MAX_DEVICES {
        return Err(error(format!(
            "ERR a mailbox holds at most {MAX_DEVICES} devices"
        )));
    }
    Ok(())
}

/// IM.CONNECT <user> <device> [NODE <node>]
pub fn connect(ctx: &Context, args: &[RedisString]) -> Reply {
    let (user, device, opts) = match user_device(args) {
        Ok(parts) => parts,
        Err(e) => return e,
    };
    let mut node: &[u8] = DEFAULT_NODE;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        if is(o.as_slice(), "NODE") {
            let Some(n) = it.next() else {
                return error("ERR NODE needs a node name");
            };
            node = match node_name(n.as_slice()) {
                Ok(n) => n,
                Err(e) => return e,
            };
        } else {
            return unknown_option(o.as_slice());
        }
    }
    let mut w = match Writer::open(ctx, user) {
        Ok(w) => w,
        Err(e) => return e,
    };
    if let Err(e) = check_room(w.mailbox(), device) {
        return e;
    }
    let now = now_ms();
    let mut effects = Vec::new();
    create_if_new(w.mailbox(), now, &mut effects);
    effects.push(Effect::Connect { device, node });
    w.commit(now, &effects, Propagate::Effects);
    let info = w
        .mailbox()
        .map(|m| m.offline_info(device))
        .unwrap_or_default();
    Reply::Map(offline_info_reply(&info))
}

/// IM.DISCONNECT <user> <device>
pub fn disconnect(ctx: &Context, args: &[RedisString]) -> Reply {
    for_registered(ctx, args, |device| Effect::Disconnect { device })
}

/// IM.FORGET <user> <device>
pub fn forget(ctx: &Context, args: &[RedisString]) -> Reply {
    for_registered(ctx, args, |device| Effect::Forget { device })
}

/// `<command> <user> <device>`: applies the device's effect when the device
/// is registered and answers its count; 0, changing nothing, otherwise.
fn for_registered(
    ctx: &Context,
    args: &[RedisString],
    effect: for<'a> fn(&'a [u8]) -> Effect<'a>,
) -> Reply {
    let [_, user, device] = args else {
        return Reply::WrongArity;
    };
    let device = device.as_slice();
    let mut w = match Writer::open(ctx, user) {
        Ok(w) => w,
        Err(e) => return e,
    };
    if w.mailbox().and_then(|m| m.device_index(device)).is_none() {
        return Reply::Int(0);
    }
    w.commit(now_ms(), &[effect(device)], Propagate::Effects)
        .into()
}

/// IM.DEVICES <user>
pub fn devices(ctx: &Context, args: &[RedisString]) -> Reply {
    let [_, user] = args else {
        return Reply::WrongArity;
    };
    let mb = match read(ctx, user) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let list = mb.map_or(&[][..], |m| &m.devices[..]);
    Reply::Array(
        list.iter()
            .map(|d| {
                Reply::Map(vec![
                    ("device", Reply::Bulk(d.name.to_vec())),
                    ("online", Reply::Int(i64::from(d.online))),
                    ("node", Reply::Bulk(d.node.to_vec())),
                    ("last_seen", Reply::Int(d.last_seen)),
                    ("pending", (d.pending.len() as u64).into()),
                    ("offline", d.offline_count.into()),
                ])
            })
            .collect(),
    )
}
