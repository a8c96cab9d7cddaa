//! Pub/Sub events (SPEC §5): one JSON object per event on
//! `<event-prefix><node>`.

use crate::mailbox::log::IdSpec;
use crate::mailbox::{Effect, Mailbox, Message};
use crate::words::{word, zero_bytes, HIGH, ONES};
use crate::{config, server};
use base64::Engine;
use redis_module::Context;
use smallvec::SmallVec;
use std::borrow::Cow;

/// An event as one JSON object: `event` first, then the fields in the
/// order given (SPEC §5 shows them). A field of client bytes is a JSON
/// string under its name when the bytes are UTF-8, and their standard
/// base64 under `<name>_base64` when they are not (SPEC §5: keys, devices
/// and ids are binary-safe, JSON strings are not). Written in one pass,
/// escaped as `serde_json` escapes (the tests compare).
fn json(event: &str, fields: &[(&'static str, Field<'_>)]) -> Json {
    if let Some(json) = json_plain(event, fields) {
        return json;
    }
    thread_local! {
        /// Where events are written before their copy is taken.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut out) => {
            out.clear();
            json_into(&mut out, event, fields);
            let json = Json::from_slice(&out);
            // A rare large event does not stay.
            if out.capacity() > 64 * 1024 {
                *out = Vec::new();
            }
            json
        }
        Err(_) => {
            let mut out = Vec::new();
            json_into(&mut out, event, fields);
            Json::from_vec(out)
        }
    })
}

fn json_into(out: &mut Vec<u8>, event: &str, fields: &[(&'static str, Field<'_>)]) {
    out.extend_from_slice(b"{\"event\":");
    json_string(out, event);
    for (name, v) in fields {
        out.push(b',');
        match v {
            // ASCII (nearly every key, device and id) is UTF-8 without
            // decoding it.
            Field::Bytes(b) if b.is_ascii() => {
                json_key(out, name);
                json_utf8(out, b);
            }
            Field::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => {
                    json_key(out, name);
                    json_string(out, t);
                }
                Err(_) => {
                    out.push(b'"');
                    json_chars(out, name.as_bytes());
                    out.extend_from_slice(b"_base64\":\"");
                    // Base64 needs no escaping.
                    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
                    out.extend_from_slice(b64.as_bytes());
                    out.push(b'"');
                }
            },
            Field::Text(t) => {
                json_key(out, name);
                json_string(out, t);
            }
            Field::Int(n) => {
                json_key(out, name);
                json_u64(out, *n);
            }
        }
    }
    out.push(b'}');
}

/// An event's JSON (UTF-8), in place for the usual short event (a push
/// hint, a kick), so that building one allocates nothing of its own.
type Json = SmallVec<[u8; JSON_INLINE]>;

/// The bytes of JSON an event holds in place.
const JSON_INLINE: usize = 160;

/// [`json`] for the usual event, written straight into its inline buffer:
/// `None` unless every string in it is [`plain`] (written as it is) and
/// the whole fits in [`JSON_INLINE`] bytes. The same bytes as
/// [`json_into`] writes (the tests compare).
fn json_plain(event: &str, fields: &[(&'static str, Field<'_>)]) -> Option<Json> {
    let mut w = Inline {
        buf: [0; JSON_INLINE],
        len: 0,
    };
    // The event's name is the module's own, plain (debug builds check).
    debug_assert!(plain(event.as_bytes()));
    w.put(b"{\"event\":\"")?;
    w.put(event.as_bytes())?;
    w.put(b"\"")?;
    for (name, v) in fields {
        debug_assert!(plain(name.as_bytes()));
        w.put(b",\"")?;
        w.put(name.as_bytes())?;
        w.put(b"\":")?;
        match v {
            Field::Bytes(b) => w.quoted(b)?,
            Field::Text(t) => w.quoted(t.as_bytes())?,
            Field::Int(n) => w.put(decimal(*n, &mut [0; 20]))?,
        }
    }
    w.put(b"}")?;
    Some(Json::from_buf_and_len(w.buf, w.len))
}

/// A JSON text being written into a fixed buffer.
struct Inline {
    buf: [u8; JSON_INLINE],
    len: usize,
}

impl Inline {
    /// Appends `s`; `None` when it does not fit. A short `s` (the usual
    /// name, device, id or number) is copied as two overlapping words in
    /// place rather than by a call to `memcpy`.
    #[inline(always)]
    fn put(&mut self, s: &[u8]) -> Option<()> {
        let n = s.len();
        let end = self.len + n;
        let to = self.buf.get_mut(self.len..end)?;
        match n {
            0..=3 => to.iter_mut().zip(s).for_each(|(t, b)| *t = *b),
            4..=8 => {
                to[..4].copy_from_slice(&s[..4]);
                to[n - 4..].copy_from_slice(&s[n - 4..]);
            }
            9..=16 => {
                to[..8].copy_from_slice(&s[..8]);
                to[n - 8..].copy_from_slice(&s[n - 8..]);
            }
            17..=32 => {
                to[..16].copy_from_slice(&s[..16]);
                to[n - 16..].copy_from_slice(&s[n - 16..]);
            }
            _ => to.copy_from_slice(s),
        }
        self.len = end;
        Some(())
    }

    /// Appends `s` as a JSON string; `None` unless it is [`plain`] and fits.
    #[inline(always)]
    fn quoted(&mut self, s: &[u8]) -> Option<()> {
        if !plain(s) {
            return None;
        }
        self.put(b"\"")?;
        self.put(s)?;
        self.put(b"\"")
    }
}

/// Whether `s` is a JSON string's characters as they are and UTF-8 as it
/// is: ASCII, none of it below U+0020, a quote or a backslash.
fn plain(s: &[u8]) -> bool {
    let Some(last) = s.len().checked_sub(8) else {
        return s
            .iter()
            .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\');
    };
    // Whole words, then the last eight bytes (which may overlap them).
    let mut bad = 0;
    for chunk in s.chunks_exact(8) {
        let x = word(chunk, 0);
        bad |= escaped(x) | (x & HIGH);
    }
    let x = word(s, last);
    bad | escaped(x) | (x & HIGH) == 0
}

/// `"name":` for a field name of the module's own, which needs no
/// escaping.
fn json_key(out: &mut Vec<u8>, name: &str) {
    debug_assert_eq!(clean_prefix(name.as_bytes()), name.len());
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `s` as a JSON string, quoted.
fn json_string(out: &mut Vec<u8>, s: &str) {
    json_utf8(out, s.as_bytes());
}

/// `s`, UTF-8 (checked by the caller), as a JSON string, quoted.
fn json_utf8(out: &mut Vec<u8>, s: &[u8]) {
    debug_assert!(std::str::from_utf8(s).is_ok());
    out.push(b'"');
    json_chars(out, s);
    out.push(b'"');
}

/// The characters of `s` escaped for a JSON string as `serde_json` does:
/// `"` and `\` with a backslash, the control characters that have a short
/// escape (`\b \t \n \f \r`) with it, the other ones below U+0020 as
/// `\u00xx` (lower-case hex); everything else as it is.
fn json_chars(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    loop {
        let clean = clean_prefix(rest);
        out.extend_from_slice(&rest[..clean]);
        let Some((&b, tail)) = rest[clean..].split_first() else {
            return;
        };
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            _ => b'u',
        };
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
        rest = tail;
    }
}

/// How many leading bytes of `s` a JSON string holds as they are (none of
/// them below U+0020, a quote or a backslash); eight at a time.
fn clean_prefix(s: &[u8]) -> usize {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        if escaped(word(chunk, 0)) != 0 {
            break;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .unwrap_or(s.len() - i)
}

/// Not zero when some byte of `x` is below 0x20, a quote or a backslash
/// (exact as a yes or no, whatever the other bytes are).
fn escaped(x: u64) -> u64 {
    // Some byte of `x` is below 0x20.
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    below_space
        | zero_bytes(x ^ (ONES * u64::from(b'"')))
        | zero_bytes(x ^ (ONES * u64::from(b'\\')))
}

/// `n` in decimal.
fn json_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// `n` in decimal, written at the end of `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"\
        0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = digits.len();
    while n >= 100 {
        let p = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    }
    if n >= 10 {
        let p = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    &digits[i..]
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
    node: Cow<'static, [u8]>,
    json: Json,
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
        node: Cow::Owned(d.node().to_vec()),
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
        node: Cow::Owned(d.node().to_vec()),
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
    let prefix = config::event_prefix();
    let mut channel = Vec::with_capacity(prefix.len() + ARCHIVE_CHANNEL.len());
    channel.extend_from_slice(&prefix);
    channel.extend_from_slice(ARCHIVE_CHANNEL);
    server::publish(ctx, &channel, &json);
}

/// Publishes events on `<event-prefix><node>` (a node name of `A-Z a-z
/// 0-9 . _ : -`, SPEC §8, or one of the module's own channels).
pub fn publish(ctx: &Context, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let prefix = config::event_prefix();
    let mut channel: SmallVec<[u8; 64]> = SmallVec::new();
    for e in events {
        channel.clear();
        channel.extend_from_slice(&prefix);
        channel.extend_from_slice(&e.node);
        server::publish(ctx, &channel, &e.json);
    }
}

/// Watches a change for messages becoming offline for a device (SPEC §5,
/// push hints): the devices' offline counts before it, and after it an
/// `offline` event for each device that is offline and has more offline
/// messages than before. Made only for changes that can do that (a store,
/// an expiry, a disconnect, messages coming back from the archive), and
/// only while `push-events` is on.
pub struct OfflineWatch<'a> {
    /// Each device's offline count before, by index, or by name when the
    /// change may remove devices (which moves the indexes).
    counts: SmallVec<[u64; 4]>,
    names: Option<Vec<(Box<[u8]>, u64)>>,
    /// The seq and id of the change's last store, if it stores: the id of
    /// a device's newest offline message without reading the log.
    stored: Option<(u64, &'a [u8])>,
}

impl<'a> OfflineWatch<'a> {
    /// Starts watching a change of `mb` by `effects`; `None` when the
    /// change cannot make anything offline or push events are off.
    pub fn before(mb: &Mailbox, effects: &[Effect<'a>]) -> Option<OfflineWatch<'a>> {
        // The usual store to a mailbox whose devices are all online: a
        // store makes no online device offline, and registers a device
        // with messages owed only in a mailbox that has none.
        let only_stores = effects.iter().all(|e| matches!(e, Effect::Store { .. }));
        if only_stores && !mb.devices.is_empty() && mb.devices.iter().all(|d| d.online()) {
            return None;
        }
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
        // The offline devices' names go into the events; nothing before
        // has read them (a store reads a device's queues, not its name),
        // so their fetch starts now, while the change is applied.
        for d in mb.devices.iter().filter(|d| !d.online()).take(8) {
            crate::prefetch::prefetch(d.name().first());
        }
        let stored = effects.iter().rev().find_map(|e| match e {
            Effect::Store { message, .. } => Some((message.seq, id_of(message))),
            _ => None,
        });
        Some(OfflineWatch {
            stored,
            counts: {
                let mut counts = SmallVec::with_capacity(mb.devices.len());
                for d in mb.devices.iter() {
                    counts.push(d.offline_count());
                }
                counts
            },
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
    pub fn after(self, mb: &Mailbox, user: &[u8]) -> SmallVec<[Event; 1]> {
        let mut out = SmallVec::new();
        for (i, d) in mb.devices.iter().enumerate() {
            let before = match &self.names {
                Some(names) => names
                    .iter()
                    .find(|(n, _)| **n == *d.name())
                    .map_or(0, |(_, c)| *c),
                None => self.counts.get(i).copied().unwrap_or(0),
            };
            if d.online() || d.offline_count() <= before {
                continue;
            }
            let seq = d.offline.last().unwrap_or(0);
            let id = match self.stored {
                Some((s, id)) if s == seq => {
                    debug_assert_eq!(mb.log.get(seq).map(|m| m.id), Some(id));
                    id
                }
                _ => mb.log.get(seq).map(|m| m.id).unwrap_or_default(),
            };
            out.push(Event {
                node: Cow::Borrowed(PUSH_CHANNEL),
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

/// The id of a message being stored, as the log will hold it.
fn id_of<'a>(m: &Message<'a>) -> &'a [u8] {
    match m.id {
        IdSpec::InStanza { off, len } => m.stanza.get(off..off + len).unwrap_or_default(),
        IdSpec::Own(id) => id,
    }
}

/// The channel of push hints, after the event prefix, under the node name
/// no device may take.
const PUSH_CHANNEL: &[u8] = crate::mailbox::PUSH_NODE;

/// The channel of restore requests, after the event prefix (SPEC §6).
const ARCHIVE_CHANNEL: &[u8] = crate::mailbox::ARCHIVE_NODE;

#[cfg(test)]
mod tests {
    use super::*;

    /// The events' JSON as it was first written, with `serde_json` quoting
    /// every string.
    fn reference(event: &str, fields: &[(&'static str, Field<'_>)]) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut out = format!("{{\"event\":{}", q(event));
        for (name, v) in fields {
            out.push(',');
            match v {
                Field::Bytes(b) => match std::str::from_utf8(b) {
                    Ok(t) => out.push_str(&format!("{}:{}", q(name), q(t))),
                    Err(_) => out.push_str(&format!(
                        "{}:{}",
                        q(&format!("{name}_base64")),
                        q(&base64::engine::general_purpose::STANDARD.encode(b))
                    )),
                },
                Field::Text(t) => out.push_str(&format!("{}:{}", q(name), q(t))),
                Field::Int(n) => out.push_str(&format!("{}:{n}", q(name))),
            }
        }
        out.push('}');
        out
    }

    use crate::test_rng::Rng;

    trait Bytes {
        /// Bytes weighted towards what needs escaping: control
        /// characters, quotes, backslashes, DEL, multi-byte UTF-8 and
        /// bytes that are not UTF-8.
        fn bytes(&mut self) -> Vec<u8>;
    }

    impl Bytes for Rng {
        fn bytes(&mut self) -> Vec<u8> {
            let len = self.below(40) as usize;
            let mut v = Vec::new();
            while v.len() < len {
                match self.below(8) {
                    0 => v.push(self.below(0x20) as u8),
                    1 => v.push(b"\"\\/\x7f"[self.below(4) as usize]),
                    2 => v.extend_from_slice("é€😀\u{2028}".as_bytes()),
                    3 => v.push(self.next() as u8),
                    _ => v.push(b' ' + self.below(95) as u8),
                }
            }
            v
        }
    }

    #[test]
    fn json_is_what_serde_json_writes() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut base64 = 0;
        for _ in 0..20_000 {
            let (a, b) = (rng.bytes(), rng.bytes());
            let text = String::from_utf8_lossy(&rng.bytes()).into_owned();
            let n = match rng.below(3) {
                0 => rng.below(10),
                1 => u64::MAX - rng.below(3),
                _ => rng.next() >> rng.below(64),
            };
            let fields = [
                ("user", Field::Bytes(&a)),
                ("reason", Field::Text(&text)),
                ("seq", Field::Int(n)),
                ("id", Field::Bytes(&b)),
            ];
            let ours = String::from_utf8(json("offline", &fields).to_vec()).unwrap();
            assert_eq!(ours, reference("offline", &fields));
            let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(v["seq"], n);
            base64 += usize::from(std::str::from_utf8(&a).is_err());
        }
        assert!(base64 > 1000, "bytes that are not UTF-8 were tried");
    }

    #[test]
    fn the_usual_event_is_written_in_place_up_to_the_inline_size() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            // Plain ASCII of any length around the inline size.
            let len = rng.below(140) as usize;
            let user: Vec<u8> = (0..len)
                .map(|_| match rng.below(10) {
                    0 => b'\x7f',
                    _ => b' ' + rng.below(95) as u8,
                })
                .filter(|&b| b != b'"' && b != b'\\')
                .collect();
            let n = rng.next() >> rng.below(64);
            let fields = [
                ("user", Field::Bytes(&user)),
                ("device", Field::Bytes(b"phone")),
                ("seq", Field::Int(n)),
                ("reason", Field::Text("timeout")),
            ];
            let want = reference("offline", &fields);
            match json_plain("offline", &fields) {
                Some(j) => {
                    assert_eq!(j[..], *want.as_bytes());
                    assert!(!j.spilled());
                }
                None => assert!(want.len() > JSON_INLINE, "{want}"),
            }
            assert_eq!(json("offline", &fields)[..], *want.as_bytes());
        }
        // A field of every length up to past the buffer's, beside others,
        // with a byte of each kind (to escape, DEL, not ASCII, a UTF-8
        // lead byte) at every place: the same bytes as the reference, in
        // place whenever the event is plain and fits.
        for len in 0..=170usize {
            for at in 0..len.max(1) {
                for b in [0x00, 0x1f, b' ', b'"', b'\\', b'~', 0x7f, 0x80, 0xc3, 0xff] {
                    let mut s: Vec<u8> = (0..len).map(|k| b'a' + (k % 26) as u8).collect();
                    if len > 0 {
                        s[at] = b;
                    }
                    let fields = [
                        ("user", Field::Bytes(&s)),
                        ("device", Field::Bytes(b"d")),
                        ("seq", Field::Int(len as u64)),
                    ];
                    let want = reference("offline", &fields);
                    assert_eq!(json("offline", &fields)[..], *want.as_bytes());
                    let plain = s
                        .iter()
                        .all(|&c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\');
                    match json_plain("offline", &fields) {
                        Some(j) => {
                            assert!(plain, "{len} {at} {b}");
                            assert_eq!(j[..], *want.as_bytes());
                            assert!(!j.spilled());
                        }
                        None => assert!(!plain || want.len() > JSON_INLINE, "{want}"),
                    }
                }
            }
        }
        let escaped = [("user", Field::Bytes(b"a\"b"))];
        assert!(json_plain("offline", &escaped).is_none());
        let utf8 = [("user", Field::Bytes("é".as_bytes()))];
        assert!(json_plain("offline", &utf8).is_none());
    }

    #[test]
    fn numbers_in_decimal() {
        let mut tens = 1u64;
        let edges = (0..20).flat_map(|_| {
            let t = tens;
            tens = tens.saturating_mul(10);
            [t - 1, t, t + 1]
        });
        for n in (0..100_000).chain(edges).chain([u64::MAX - 1, u64::MAX]) {
            let mut out = Vec::new();
            json_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn every_ascii_byte_at_every_place_of_a_word() {
        for b in 0..=0x7fu8 {
            for at in 0..18 {
                let mut s = vec![b'a'; 18];
                s[at] = b;
                let fields = [("id", Field::Bytes(&s)), ("seq", Field::Int(0))];
                assert_eq!(
                    json("kick", &fields)[..],
                    *reference("kick", &fields).as_bytes()
                );
            }
        }
    }
}
