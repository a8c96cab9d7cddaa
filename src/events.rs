//! Pub/Sub events (SPEC §5): one JSON object per event on
//! `<event-prefix><node>`.

use crate::mailbox::{Effect, Mailbox};
use crate::{config, server};
use base64::Engine;
use redis_module::Context;
use smallvec::SmallVec;

/// An event as one JSON object: `event` first, then the fields in the
/// order given (SPEC §5 shows them). A field of client bytes is a JSON
/// string under its name when the bytes are UTF-8, and their standard
/// base64 under `<name>_base64` when they are not (SPEC §5: keys, devices
/// and ids are binary-safe, JSON strings are not).
fn json(event: &str, fields: &[(&'static str, Field<'_>)]) -> String {
    let mut out = String::with_capacity(128);
    let string = |out: &mut String, s: &str| {
        // Writing a str to a String cannot fail.
        if let Ok(quoted) = serde_json::to_string(s) {
            out.push_str(&quoted);
        }
    };
    out.push_str("{\"event\":");
    string(&mut out, event);
    for (name, v) in fields {
        out.push(',');
        match v {
            Field::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => {
                    string(&mut out, name);
                    out.push(':');
                    string(&mut out, t);
                }
                Err(_) => {
                    string(&mut out, &format!("{name}_base64"));
                    out.push(':');
                    string(
                        &mut out,
                        &base64::engine::general_purpose::STANDARD.encode(b),
                    );
                }
            },
            Field::Text(t) => {
                string(&mut out, name);
                out.push(':');
                string(&mut out, t);
            }
            Field::Int(n) => {
                string(&mut out, name);
                out.push(':');
                out.push_str(&n.to_string());
            }
        }
    }
    out.push('}');
    out
}

/// One field of an event.
enum Field<'a> {
    /// Client bytes: a key, a device, an id, a stanza.
    Bytes(&'a [u8]),
    /// The module's own text.
    Text(&'a str),
    Int(u64),
}

/// An event for `node`, ready to publish.
pub struct Event {
    node: Vec<u8>,
    json: String,
}

/// The `kick` event for a device whose session is given up.
pub fn kick_event(mb: &Mailbox, user: &[u8], device: usize, reason: &str) -> Event {
    let d = &mb.devices[device];
    let seq = d.pending.oldest().map_or(0, |(_, s)| s);
    let id = mb.log.get(seq).map(|m| m.id).unwrap_or_default();
    let json = json(
        "kick",
        &[
            ("user", Field::Bytes(user)),
            ("device", Field::Bytes(d.name())),
            ("reason", Field::Text(reason)),
            ("seq", Field::Int(seq)),
            ("id", Field::Bytes(id)),
        ],
    );
    Event {
        node: d.node().to_vec(),
        json,
    }
}

/// The `resend` event of the delivery of `seq` to device `device` (an
/// index), the attempt it is about to be (its count so far plus one);
/// `None` when that delivery is not pending.
pub fn resend_event(mb: &Mailbox, user: &[u8], device: usize, seq: u64) -> Option<Event> {
    let d = mb.devices.get(device)?;
    let (m, p) = (mb.log.get(seq)?, d.pending.get(seq)?);
    let json = json(
        "resend",
        &[
            ("user", Field::Bytes(user)),
            ("device", Field::Bytes(d.name())),
            ("seq", Field::Int(seq)),
            ("id", Field::Bytes(m.id)),
            (
                "attempt",
                Field::Int(u64::from(p.attempts.saturating_add(1))),
            ),
            ("stanza", Field::Bytes(m.stanza)),
        ],
    );
    Some(Event {
        node: d.node().to_vec(),
        json,
    })
}

/// Publishes a restore request for `user`, whose `archived` messages wait
/// in the archive (SPEC §6), on `<event-prefix>archive`:
/// `{"event":"restore","user":...,"archived":n}`.
pub fn publish_restore(ctx: &Context, user: &[u8], archived: u64) {
    let json = json(
        "restore",
        &[
            ("user", Field::Bytes(user)),
            ("archived", Field::Int(archived)),
        ],
    );
    let mut channel = config::event_prefix().into_bytes();
    channel.extend_from_slice(ARCHIVE_CHANNEL);
    server::publish(ctx, &channel, json.as_bytes());
}

/// Publishes events on `<event-prefix><node>` (any bytes).
pub fn publish(ctx: &Context, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let prefix = config::event_prefix();
    let mut channel = Vec::with_capacity(prefix.len() + 32);
    for e in events {
        channel.clear();
        channel.extend_from_slice(prefix.as_bytes());
        channel.extend_from_slice(&e.node);
        server::publish(ctx, &channel, e.json.as_bytes());
    }
}

/// Watches a change for messages becoming offline for a device (SPEC §5,
/// push hints): the devices' offline counts before it, and after it an
/// `offline` event for each device that is offline and has more offline
/// messages than before. Made only for changes that can do that (a store,
/// an expiry, a disconnect, messages coming back from the archive), and
/// only while `push-events` is on.
pub struct OfflineWatch {
    /// Each device's offline count before, by index, or by name when the
    /// change may remove devices (which moves the indexes).
    counts: SmallVec<[u64; 4]>,
    names: Option<Vec<(Box<[u8]>, u64)>>,
}

impl OfflineWatch {
    /// Starts watching a change of `mb` by `effects`; `None` when the
    /// change cannot make anything offline or push events are off.
    pub fn before(mb: &Mailbox, effects: &[Effect<'_>]) -> Option<OfflineWatch> {
        let can = effects.iter().any(|e| {
            matches!(
                e,
                Effect::Store { .. }
                    | Effect::Expire { .. }
                    | Effect::Disconnect { .. }
                    | Effect::Unqueue { .. }
                    | Effect::ComeBack
            )
        });
        if !can || !config::push_events() {
            return None;
        }
        let removes = effects
            .iter()
            .any(|e| matches!(e, Effect::Forget { .. } | Effect::Evict));
        Some(OfflineWatch {
            counts: mb.devices.iter().map(|d| d.offline_count()).collect(),
            names: removes.then(|| {
                mb.devices
                    .iter()
                    .map(|d| (Box::<[u8]>::from(d.name()), d.offline_count()))
                    .collect()
            }),
        })
    }

    /// The `offline` events of the change, for `user`'s mailbox `mb` as it
    /// is after it: `{"event":"offline","user":..,"device":..,"seq":..,
    /// "id":..,"count":..}` with the device's newest offline message and
    /// how many it has now.
    pub fn after(self, mb: &Mailbox, user: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, d) in mb.devices.iter().enumerate() {
            let before = match &self.names {
                Some(names) => names
                    .iter()
                    .find(|(n, _)| **n == *d.name())
                    .map_or(0, |(_, c)| *c),
                None => self.counts.get(i).copied().unwrap_or(0),
            };
            if d.online || d.offline_count() <= before {
                continue;
            }
            let seq = d.offline.last().unwrap_or(0);
            let id = mb.log.get(seq).map(|m| m.id).unwrap_or_default();
            out.push(Event {
                node: PUSH_CHANNEL.to_vec(),
                json: json(
                    "offline",
                    &[
                        ("user", Field::Bytes(user)),
                        ("device", Field::Bytes(d.name())),
                        ("seq", Field::Int(seq)),
                        ("id", Field::Bytes(id)),
                        ("count", Field::Int(d.offline_count())),
                    ],
                ),
            });
        }
        out
    }
}

/// The channel of push hints, after the event prefix: one for the
/// deployment, since an offline device has no node.
const PUSH_CHANNEL: &[u8] = b"push";

/// The channel of restore requests, after the event prefix (SPEC §6).
const ARCHIVE_CHANNEL: &[u8] = b"archive";

/// Names no node may take: the module's own channels after the event
/// prefix (a node's events would land where push services or archivers
/// listen).
pub const RESERVED_NODE_NAMES: &[&[u8]] = &[PUSH_CHANNEL, ARCHIVE_CHANNEL];
