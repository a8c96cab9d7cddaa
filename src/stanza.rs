//! Stanzas: validation, the facts the offline policy needs, and the
//! XEP-0203 `<delay>` stamp added when a message is read from offline.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::borrow::Cow;

pub const NS_CHATSTATES: &[u8] = b"http://jabber.org/protocol/chatstates";
pub const NS_HINTS: &[u8] = b"urn:xmpp:hints";
pub const NS_DELAY: &[u8] = b"urn:xmpp:delay";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Iq,
    Presence,
}

/// The stanza's `id` attribute.
#[derive(Debug, PartialEq, Eq)]
pub struct IdAttr<'a> {
    /// The value with entities resolved.
    pub value: Cow<'a, [u8]>,
    /// Where the raw value sits in the stanza, when it needed no unescaping.
    pub verbatim_at: Option<usize>,
}

/// What the module reads from a stanza.
#[derive(Debug)]
pub struct Stanza<'a> {
    pub kind: Kind,
    pub type_attr: Option<Cow<'a, [u8]>>,
    pub id: Option<IdAttr<'a>>,
    pub has_body: bool,
    pub chat_state: bool,
    pub no_store: bool,
    pub store_hint: bool,
    pub has_delay: bool,
}

impl Stanza<'_> {
    /// XEP-0160/XEP-0334: may this stanza be kept for an offline device?
    pub fn keep_offline(&self, offline_types: &[Vec<u8>]) -> bool {
        if self.store_hint {
            return true;
        }
        if self.kind != Kind::Message || self.no_store {
            return false;
        }
        if self.chat_state && !self.has_body {
            return false;
        }
        let t: &[u8] = self.type_attr.as_deref().unwrap_or(b"normal");
        offline_types.iter().any(|k| k.as_slice() == t)
    }
}

/// An attribute value with entities resolved, borrowed when it has none.
fn unescaped<'a>(v: Cow<'a, [u8]>) -> Result<Cow<'a, [u8]>, String> {
    if !v.contains(&b'&') {
        return Ok(v);
    }
    let text = std::str::from_utf8(&v).map_err(err)?;
    Ok(Cow::Owned(
        quick_xml::escape::unescape(text)
            .map_err(err)?
            .into_owned()
            .into_bytes(),
    ))
}

fn err(msg: impl std::fmt::Display) -> String {
    format!("ERR stanza is not well-formed XML: {msg}")
}

/// Checks that `raw` is exactly one well-formed `message`, `iq` or
/// `presence` element and reads what the policy needs.
pub fn parse(raw: &[u8]) -> Result<Stanza<'_>, String> {
    if raw.is_empty() {
        return Err("ERR stanza is empty".into());
    }
    let mut reader = Reader::from_reader(raw);
    let mut depth = 0usize;
    let mut stanza: Option<Stanza> = None;
    let mut root_done = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| err(format_args!("{e} at byte {}", reader.error_position())))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                if depth == 0 {
                    if root_done {
                        return Err("ERR stanza has more than one root element".into());
                    }
                    stanza = Some(root(e, raw)?);
                } else {
                    let ns = check_attributes(e)?;
                    if depth == 1 {
                        if let Some(s) = stanza.as_mut() {
                            child(s, e, ns);
                        }
                    }
                }
                if empty {
                    if depth == 0 {
                        root_done = true;
                    }
                } else {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| err("unexpected end tag"))?;
                if depth == 0 {
                    root_done = true;
                }
            }
            Event::Text(t) => {
                if depth == 0 {
                    if t.iter().any(|b| !b.is_ascii_whitespace()) {
                        return Err(err("text outside the root element"));
                    }
                } else {
                    t.unescape().map_err(err)?;
                }
            }
            Event::CData(_) | Event::Comment(_) => {}
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                return Err(err(
                    "declarations and processing instructions are not allowed in a stanza",
                ));
            }
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(err("unclosed element"));
    }
    stanza.ok_or_else(|| "ERR stanza has no element".into())
}

/// Attribute names seen on one element, to refuse a repeated one without
/// allocating for the few attributes a stanza's elements carry.
struct Seen<'a> {
    few: [&'a [u8]; 8],
    n: usize,
    more: Vec<&'a [u8]>,
}

impl<'a> Seen<'a> {
    fn new() -> Self {
        Seen {
            few: [&[]; 8],
            n: 0,
            more: Vec::new(),
        }
    }

    /// Notes `name`; refuses it when the element already had it.
    fn add(&mut self, name: &'a [u8]) -> Result<(), String> {
        if self.few[..self.n].contains(&name) || self.more.contains(&name) {
            return Err(err(format_args!(
                "duplicate attribute '{}'",
                String::from_utf8_lossy(name)
            )));
        }
        if self.n < self.few.len() {
            self.few[self.n] = name;
            self.n += 1;
        } else {
            self.more.push(name);
        }
        Ok(())
    }
}

/// The namespaces the offline policy looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    ChatStates,
    Hints,
    Delay,
}

/// Checks every attribute of a child element; answers its namespace when
/// it is one the policy looks at.
fn check_attributes(e: &BytesStart<'_>) -> Result<Option<Ns>, String> {
    let mut ns = None;
    let mut seen = Seen::new();
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(err)?;
        seen.add(a.key.into_inner())?;
        let is_ns = a.key.as_ref() == b"xmlns";
        let v = unescaped(a.value)?;
        if is_ns {
            ns = match &*v {
                NS_CHATSTATES => Some(Ns::ChatStates),
                NS_HINTS => Some(Ns::Hints),
                NS_DELAY => Some(Ns::Delay),
                _ => None,
            };
        }
    }
    Ok(ns)
}

/// `v` as a slice of `raw` when it lies inside it (the reader borrows the
/// input), so that it outlives the event it was read from.
fn within<'a>(raw: &'a [u8], v: &[u8]) -> Option<(usize, &'a [u8])> {
    let base = raw.as_ptr() as usize;
    let at = v.as_ptr() as usize;
    if at < base || at + v.len() > base + raw.len() {
        return None;
    }
    let off = at - base;
    Some((off, &raw[off..off + v.len()]))
}

fn root<'a>(e: &BytesStart<'a>, raw: &'a [u8]) -> Result<Stanza<'a>, String> {
    let kind = match e.local_name().as_ref() {
        b"message" => Kind::Message,
        b"iq" => Kind::Iq,
        b"presence" => Kind::Presence,
        other => {
            return Err(format!(
                "ERR stanza root must be message, iq or presence, not '{}'",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let mut type_attr = None;
    let mut id = None;
    let mut seen = Seen::new();
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(err)?;
        seen.add(a.key.into_inner())?;
        let (is_type, is_id) = (a.key.as_ref() == b"type", a.key.as_ref() == b"id");
        let place = within(raw, &a.value);
        let value = unescaped(a.value)?;
        // Borrowed from the input when it needed no unescaping.
        let (value, verbatim_at) = match (&value, place) {
            (Cow::Borrowed(_), Some((off, slice))) => (Cow::Borrowed(slice), Some(off)),
            _ => (Cow::Owned(value.into_owned()), None),
        };
        if is_type {
            type_attr = Some(value);
        } else if is_id {
            id = Some(IdAttr { value, verbatim_at });
        }
    }
    Ok(Stanza {
        kind,
        type_attr,
        id,
        has_body: false,
        chat_state: false,
        no_store: false,
        store_hint: false,
        has_delay: false,
    })
}

fn child(s: &mut Stanza<'_>, e: &BytesStart<'_>, ns: Option<Ns>) {
    let name = e.local_name();
    match name.as_ref() {
        b"body" => s.has_body = true,
        b"no-store" | b"no-permanent-store" if ns == Some(Ns::Hints) => s.no_store = true,
        b"store" if ns == Some(Ns::Hints) => s.store_hint = true,
        b"delay" if ns == Some(Ns::Delay) => s.has_delay = true,
        _ => {}
    }
    if ns == Some(Ns::ChatStates) {
        s.chat_state = true;
    }
}

/// XEP-0082 UTC time with milliseconds.
pub fn xep82(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// The stanza with `<delay xmlns='urn:xmpp:delay' from=.. stamp=../>` as
/// the root's first child.
pub fn with_delay(raw: &[u8], from: &[u8], ts_ms: i64) -> Vec<u8> {
    let mut reader = Reader::from_reader(raw);
    let mut end;
    let (empty, qname) = loop {
        let ev = reader.read_event();
        end = reader.buffer_position() as usize;
        match ev {
            Ok(Event::Start(e)) => break (false, e.name().as_ref().to_vec()),
            Ok(Event::Empty(e)) => break (true, e.name().as_ref().to_vec()),
            Ok(Event::Eof) | Err(_) => return raw.to_vec(),
            Ok(_) => {}
        }
    };
    let from = quick_xml::escape::escape(String::from_utf8_lossy(from));
    let delay = format!(
        "<delay xmlns='urn:xmpp:delay' from='{}' stamp='{}'/>",
        from,
        xep82(ts_ms)
    );
    let mut out = Vec::with_capacity(raw.len() + delay.len() + qname.len() + 4);
    if empty {
        // `<message .../>` becomes `<message ...><delay/></message>`.
        let head = &raw[..end];
        let slash = head.iter().rposition(|&b| b == b'/').unwrap_or(head.len());
        out.extend_from_slice(&head[..slash]);
        out.push(b'>');
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(b"</");
        out.extend_from_slice(&qname);
        out.push(b'>');
        out.extend_from_slice(&raw[end..]);
    } else {
        out.extend_from_slice(&raw[..end]);
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(&raw[end..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Vec<Vec<u8>> {
        vec![b"chat".to_vec(), b"normal".to_vec()]
    }

    #[test]
    fn accepts_a_message_and_reads_it() {
        let raw = b"<message to='a@b' id='m1' type='chat'><body>hi &amp; bye</body></message>";
        let s = parse(raw).unwrap();
        assert_eq!(s.kind, Kind::Message);
        let id = s.id.as_ref().unwrap();
        assert_eq!(&*id.value, b"m1");
        let at = id.verbatim_at.unwrap();
        assert_eq!(&raw[at..at + 2], b"m1");
        assert!(s.has_body && s.keep_offline(&chat()));
    }

    #[test]
    fn escaped_id_is_not_verbatim() {
        let s = parse(b"<message id='a&amp;b'/>").unwrap();
        let id = s.id.unwrap();
        assert_eq!(&*id.value, b"a&b");
        assert_eq!(id.verbatim_at, None);
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            &b"<message><body>x</message>"[..],
            b"<message/><message/>",
            b"<foo/>",
            b"<message>",
            b"hello",
            b"",
            b"<message a='1' a='2'/>",
            b"<message><body>&bogus;</body></message>",
            b"<message/>trailing",
            b"<?xml version='1.0'?><message/>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn offline_policy() {
        let keep = |x: &str| parse(x.as_bytes()).unwrap().keep_offline(&chat());
        assert!(keep("<message><body>x</body></message>"));
        assert!(!keep("<message type='groupchat'><body>x</body></message>"));
        assert!(!keep("<message type='headline'><body>x</body></message>"));
        assert!(!keep("<message type='error'><body>x</body></message>"));
        assert!(!keep(
            "<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(keep("<message><body>x</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"));
        assert!(!keep(
            "<message><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert!(!keep(
            "<message><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert!(keep(
            "<message type='groupchat'><body>x</body><store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert!(!keep("<iq type='get' id='1'><query/></iq>"));
        assert!(!keep("<presence/>"));
    }

    #[test]
    fn delay_is_added_once_in_front() {
        let out = with_delay(
            b"<message id='x'><body>b</body></message>",
            b"s&h",
            1_764_224_828_123,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message id='x'><delay xmlns='urn:xmpp:delay' from='s&amp;h' stamp='2025-11-27T06:27:08.123Z'/><body>b</body></message>"
        );
        let out = with_delay(b"<message id='x' />", b"h", 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message id='x' ><delay xmlns='urn:xmpp:delay' from='h' stamp='1970-01-01T00:00:00.000Z'/></message>"
        );
        assert!(
            parse(b"<message><delay xmlns='urn:xmpp:delay' stamp='x'/></message>")
                .unwrap()
                .has_delay
        );
    }
}
