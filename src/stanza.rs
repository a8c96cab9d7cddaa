//! Stanzas: validation, the facts the offline policy needs, and the
//! XEP-0203 `<delay>` stamp added when a message is read from offline.

use quick_xml::events::Event;
use quick_xml::Reader;
use smallvec::SmallVec;
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

impl Kind {
    /// The kind a root element's local name makes, or the error for a root
    /// that is not a stanza.
    fn of_root(name: &[u8]) -> Result<Kind, String> {
        match name {
            b"message" => Ok(Kind::Message),
            b"iq" => Ok(Kind::Iq),
            b"presence" => Ok(Kind::Presence),
            other => Err(format!(
                "ERR stanza root must be message, iq or presence, not '{}'",
                String::from_utf8_lossy(other)
            )),
        }
    }
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

impl<'a> Stanza<'a> {
    /// A stanza's root, before its children are seen.
    fn new(kind: Kind, type_attr: Option<Cow<'a, [u8]>>, id: Option<IdAttr<'a>>) -> Self {
        Stanza {
            kind,
            type_attr,
            id,
            has_body: false,
            chat_state: false,
            no_store: false,
            store_hint: false,
            has_delay: false,
        }
    }

    /// XEP-0160/XEP-0334: may this stanza be kept for an offline device?
    /// `kept_type` says whether a message type is one kept offline.
    pub fn keep_offline(&self, kept_type: impl Fn(&[u8]) -> bool) -> bool {
        if self.store_hint {
            return true;
        }
        if self.kind != Kind::Message || self.no_store {
            return false;
        }
        if self.chat_state && !self.has_body {
            return false;
        }
        kept_type(self.type_attr.as_deref().unwrap_or(b"normal"))
    }
}

#[cold]
#[inline(never)]
fn err(msg: impl std::fmt::Display) -> String {
    format!("ERR stanza is not well-formed XML: {msg}")
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The entity or character reference that starts `s` (just after its
/// `&`): answers the character it stands for and its length up to and
/// including the `;`.
fn entity(s: &[u8]) -> Option<(char, usize)> {
    let end = s.iter().take(32).position(|&b| b == b';')?;
    let c = match &s[..end] {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"apos" => '\'',
        b"quot" => '"',
        [b'#', b'x', hex @ ..] if !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit) => {
            char::from_u32(u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?)?
        }
        [b'#', dec @ ..] if !dec.is_empty() && dec.iter().all(u8::is_ascii_digit) => {
            char::from_u32(std::str::from_utf8(dec).ok()?.parse().ok()?)?
        }
        _ => return None,
    };
    (c != '\0').then_some((c, end + 1))
}

/// Where the first of three bytes is in `s`, eight bytes at a time: for
/// the short runs of an attribute value, quicker than a vector search.
fn find3(s: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` that equals the byte of `x`: exact
    // for the lowest such byte, which is the one wanted.
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let (ra, rb, rc) = (LO * u64::from(a), LO * u64::from(b), LO * u64::from(c));
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(bytes);
        let hit = zero(w ^ ra) | zero(w ^ rb) | zero(w ^ rc);
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..]
        .iter()
        .position(|&x| x == a || x == b || x == c)
        .map(|k| i + k)
}

/// Scans from `at` to the first `stop` byte (or the end), checking every
/// reference on the way. Answers where it stopped and whether a reference
/// was seen; a `<` is refused unless it is the stop byte.
fn scan_to(raw: &[u8], at: usize, stop: u8) -> Result<(usize, bool), String> {
    let mut i = at;
    let mut refs = false;
    loop {
        let next = if stop == b'<' {
            // Most text between tags is empty: no search for it.
            if raw.get(i) == Some(&b'<') {
                return Ok((i, refs));
            }
            memchr::memchr2(b'<', b'&', &raw[i..])
        } else {
            find3(&raw[i..], stop, b'<', b'&')
        };
        let Some(k) = next else {
            return Ok((raw.len(), refs));
        };
        i += k;
        match raw[i] {
            b if b == stop => return Ok((i, refs)),
            b'&' => {
                let Some((_, n)) = entity(&raw[i + 1..]) else {
                    return Err(err(format_args!("bad entity reference at byte {i}")));
                };
                refs = true;
                i += 1 + n;
            }
            _ => return Err(err(format_args!("'<' in an attribute value at byte {i}"))),
        }
    }
}

/// A value with its references resolved (it was checked already).
fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'&', &v[i..]) {
        out.extend_from_slice(&v[i..i + k]);
        match entity(&v[i + k + 1..]) {
            Some((c, n)) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += k + 1 + n;
            }
            None => {
                out.push(b'&');
                i += k + 1;
            }
        }
    }
    out.extend_from_slice(&v[i..]);
    out
}

/// The part of a qualified name after its prefix.
fn local(name: &[u8]) -> &[u8] {
    // Names are short: a plain loop beats a vector search's setup.
    match name.iter().position(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Bytes that end a name: whitespace, `/`, `>`, `=`, and those that may
/// not appear in one (`<`, `&`, quotes).
static NAME_END: [bool; 256] = {
    let mut t = [false; 256];
    let ends = b" \t\r\n/>=<&\"'";
    let mut i = 0;
    while i < ends.len() {
        t[ends[i] as usize] = true;
        i += 1;
    }
    t
};

/// One pass over the bytes of a stanza: well-formedness (one root element,
/// matched tags, quoted and unique attributes, known references, no text
/// outside the root, no declarations, UTF-8) and the facts the policy needs.
struct Scanner<'a> {
    raw: &'a [u8],
    pos: usize,
}

/// A start tag as scanned: its name and, for the elements the policy
/// reads, the attributes it needs.
struct Tag<'a> {
    name: &'a [u8],
    empty: bool,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.raw.get(self.pos).copied()
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.raw[self.pos..].starts_with(s)
    }

    fn skip_space(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
        self.pos > start
    }

    #[cold]
    #[inline(never)]
    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(err(format_args!("{what} at byte {}", self.pos)))
    }

    /// A name: up to whitespace, `/`, `>` or `=`.
    fn name(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        let len = self.raw[start..]
            .iter()
            .position(|&b| NAME_END[usize::from(b)])
            .unwrap_or(self.raw.len() - start);
        self.pos = start + len;
        if matches!(self.peek(), Some(b'<' | b'&' | b'"' | b'\'')) {
            return self.fail("bad character in a name");
        }
        let name = &self.raw[start..self.pos];
        match name.first() {
            None => self.fail("missing name"),
            Some(b'0'..=b'9' | b'-' | b'.' | b':') => self.fail("bad name"),
            _ => Ok(name),
        }
    }

    /// Skips past `end`, which must follow.
    fn skip_past(&mut self, end: &[u8], what: &str) -> Result<(), String> {
        match memchr::memmem::find(&self.raw[self.pos..], end) {
            Some(i) => {
                self.pos += i + end.len();
                Ok(())
            }
            None => self.fail(what),
        }
    }

    /// Scans a start tag from just after its `<`, calling `attr` with each
    /// attribute's name, raw value, the value's offset and whether the
    /// value holds references.
    fn start_tag(
        &mut self,
        mut attr: impl FnMut(&'a [u8], &'a [u8], usize, bool),
    ) -> Result<Tag<'a>, String> {
        let name = self.name()?;
        let mut seen = Seen::new();
        loop {
            let spaced = self.skip_space();
            match self.peek() {
                Some(b'>') => {
                    self.pos += 1;
                    return Ok(Tag { name, empty: false });
                }
                Some(b'/') if self.raw.get(self.pos + 1) == Some(&b'>') => {
                    self.pos += 2;
                    return Ok(Tag { name, empty: true });
                }
                None => return self.fail("unclosed tag"),
                Some(_) if !spaced => return self.fail("attributes need a space before them"),
                Some(_) => {}
            }
            let key = self.name()?;
            seen.add(key)?;
            self.skip_space();
            if self.peek() != Some(b'=') {
                return self.fail("attribute without a value");
            }
            self.pos += 1;
            self.skip_space();
            let quote = match self.peek() {
                Some(q @ (b'\'' | b'"')) => q,
                _ => return self.fail("attribute value without quotes"),
            };
            let at = self.pos + 1;
            let (end, refs) = scan_to(self.raw, at, quote)?;
            if end == self.raw.len() {
                self.pos = end;
                return self.fail("unterminated attribute value");
            }
            self.pos = end + 1;
            attr(key, &self.raw[at..end], at, refs);
        }
    }
}

/// Checks that `raw` is exactly one well-formed `message`, `iq` or
/// `presence` element and reads what the policy needs.
pub fn parse(raw: &[u8]) -> Result<Stanza<'_>, String> {
    if raw.is_empty() {
        return Err("ERR stanza is empty".into());
    }
    if let Err(e) = std::str::from_utf8(raw) {
        return Err(err(format_args!("not UTF-8 at byte {}", e.valid_up_to())));
    }
    let mut sc = Scanner { raw, pos: 0 };
    let mut open: SmallVec<[&[u8]; 8]> = SmallVec::new();
    let mut stanza: Option<Stanza<'_>> = None;
    loop {
        // Text up to the next markup.
        let start = sc.pos;
        let lt = if open.is_empty() {
            let lt = raw[start..]
                .iter()
                .position(|&b| !is_space(b))
                .map_or(raw.len(), |i| start + i);
            if lt < raw.len() && raw[lt] != b'<' {
                return Err(err("text outside the root element"));
            }
            lt
        } else {
            scan_to(raw, start, b'<')?.0
        };
        sc.pos = lt;
        if lt == raw.len() {
            break;
        }
        sc.pos += 1;
        let after = sc.peek();
        if after == Some(b'!') && sc.starts_with(b"!--") {
            sc.skip_past(b"-->", "unterminated comment")?;
        } else if after == Some(b'!') && sc.starts_with(b"![CDATA[") {
            if open.is_empty() {
                return sc.fail("CDATA outside the root element");
            }
            sc.skip_past(b"]]>", "unterminated CDATA section")?;
        } else if matches!(after, Some(b'?' | b'!')) {
            return Err(err(
                "declarations and processing instructions are not allowed in a stanza",
            ));
        } else if after == Some(b'/') {
            sc.pos += 1;
            let name = sc.name()?;
            sc.skip_space();
            if sc.peek() != Some(b'>') {
                return sc.fail("bad end tag");
            }
            sc.pos += 1;
            match open.pop() {
                Some(o) if o == name => {}
                Some(o) => {
                    return Err(err(format_args!(
                        "end tag '{}' does not match '{}'",
                        String::from_utf8_lossy(name),
                        String::from_utf8_lossy(o)
                    )))
                }
                None => return Err(err("unexpected end tag")),
            }
        } else if open.is_empty() {
            if stanza.is_some() {
                return Err("ERR stanza has more than one root element".into());
            }
            let mut type_attr = None;
            let mut id = None;
            let tag = sc.start_tag(|key, value, at, refs| {
                let (v, verbatim_at) = if refs {
                    (Cow::Owned(unescape(value)), None)
                } else {
                    (Cow::Borrowed(value), Some(at))
                };
                match key {
                    b"type" => type_attr = Some(v),
                    b"id" => {
                        id = Some(IdAttr {
                            value: v,
                            verbatim_at,
                        })
                    }
                    _ => {}
                }
            })?;
            let kind = Kind::of_root(local(tag.name))?;
            stanza = Some(Stanza::new(kind, type_attr, id));
            if !tag.empty {
                open.push(tag.name);
            }
        } else {
            let mut ns = None;
            let tag = sc.start_tag(|key, value, _, refs| {
                if key == b"xmlns" {
                    let v = if refs {
                        Cow::Owned(unescape(value))
                    } else {
                        Cow::Borrowed(value)
                    };
                    ns = match &*v {
                        NS_CHATSTATES => Some(Ns::ChatStates),
                        NS_HINTS => Some(Ns::Hints),
                        NS_DELAY => Some(Ns::Delay),
                        _ => None,
                    };
                }
            })?;
            if open.len() == 1 {
                if let Some(s) = stanza.as_mut() {
                    child(s, local(tag.name), ns);
                }
            }
            if !tag.empty {
                open.push(tag.name);
            }
        }
    }
    if !open.is_empty() {
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

/// What a child of the root tells the policy.
fn child(s: &mut Stanza<'_>, name: &[u8], ns: Option<Ns>) {
    match name {
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

/// The parser this module used before its own scanner, built on
/// quick-xml: kept to compare the two on many inputs.
#[cfg(test)]
mod reference {
    use super::{err, IdAttr, Kind, Ns, Seen, Stanza, NS_CHATSTATES, NS_DELAY, NS_HINTS};
    use quick_xml::events::{BytesStart, Event};
    use quick_xml::Reader;
    use std::borrow::Cow;

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
        let kind = Kind::of_root(e.local_name().as_ref())?;
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
        Ok(Stanza::new(kind, type_attr, id))
    }

    fn child(s: &mut Stanza<'_>, e: &BytesStart<'_>, ns: Option<Ns>) {
        super::child(s, e.local_name().as_ref(), ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(t: &[u8]) -> bool {
        t == b"chat" || t == b"normal"
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
        assert!(s.has_body && s.keep_offline(chat));
    }

    #[test]
    fn escaped_id_is_not_verbatim() {
        let s = parse(b"<message id='a&amp;b'/>").unwrap();
        let id = s.id.unwrap();
        assert_eq!(&*id.value, b"a&b");
        assert_eq!(id.verbatim_at, None);
    }

    #[test]
    fn find3_finds_the_first_of_three_bytes() {
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 40) as usize;
            let s: Vec<u8> = (0..len)
                .map(|k| b"ab'<&xyz\x80\xff\x01"[((x >> (k % 24)) as usize + k) % 11])
                .collect();
            let want = s.iter().position(|&b| b == b'\'' || b == b'<' || b == b'&');
            assert_eq!(find3(&s, b'\'', b'<', b'&'), want, "{s:?}");
        }
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
            b"<message id='<'/>",
            b"<message a/>",
            b"<message a='1'b='2'/>",
            b"<message>\xff</message>",
            b"<![CDATA[x]]><message/>",
            b"<message><body>&#0;</body></message>",
            b"<message><body>&#xD800;</body></message>",
            b"<message><body></message></body>",
            b"<message><!-- open </message>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn offline_policy() {
        let keep = |x: &str| parse(x.as_bytes()).unwrap().keep_offline(chat);
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

#[cfg(test)]
mod differential {
    use super::*;

    /// What a parse tells the module, comparable across parsers.
    fn facts(s: &Stanza<'_>) -> String {
        format!(
            "{:?} {:?} {:?} {} {} {} {} {}",
            s.kind,
            s.type_attr.as_deref().map(String::from_utf8_lossy),
            s.id.as_ref().map(|i| (
                String::from_utf8_lossy(&i.value).into_owned(),
                i.verbatim_at
            )),
            s.has_body,
            s.chat_state,
            s.no_store,
            s.store_hint,
            s.has_delay
        )
    }

    const CORPUS: &[&str] = &[
        "<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' type='chat' id='x1-2'><body>hey, lunch? &amp; &#x263A; &#9731;</body></message>",
        "<message to='a@b' id='m1' type='chat'><body>hi &amp; bye</body></message>",
        "<message id='a&amp;b' type=\"groupchat\"/>",
        "<message><body>x</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message><body>x</body><no-store xmlns='urn:xmpp:hints'/><store xmlns='urn:xmpp:hints'/></message>",
        "<message><delay xmlns='urn:xmpp:delay' stamp='x'/><body>a<b>c</b>d</body></message>",
        "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        "<presence/>",
        "  <message id='s'>\n<body><![CDATA[<not markup>]]></body><!-- note --></message>\n",
        "<cli:message xmlns:cli='jabber:client' id='p'><cli:body>t</cli:body></cli:message>",
        "<message id='q' a='1' b='2' c='3' d='4' e='5' f='6' g='7' h='8' i='9'/>",
    ];

    const BYTES: &[u8] = b"<>&'\"/=; !?-x#:\n";

    #[test]
    fn agrees_with_the_reference_parser() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for c in CORPUS {
            let c = c.as_bytes();
            inputs.push(c.to_vec());
            for i in 0..=c.len() {
                let mut del = c.to_vec();
                if i < c.len() {
                    del.remove(i);
                    inputs.push(del);
                }
                for &b in BYTES {
                    let mut ins = c.to_vec();
                    ins.insert(i, b);
                    inputs.push(ins);
                    if i < c.len() {
                        let mut rep = c.to_vec();
                        rep[i] = b;
                        inputs.push(rep);
                    }
                }
            }
        }
        let mut differ = Vec::new();
        for raw in &inputs {
            let ours = parse(raw).map(|s| facts(&s));
            let theirs = reference::parse(raw).map(|s| facts(&s));
            // The reference reads attributes without checks; this scanner
            // refuses what XML 1.0 does not allow in a tag, and only that.
            let stricter = [
                "bad character in a name",
                "missing name",
                "bad name",
                "attribute without a value",
                "'<' in an attribute value",
                "attributes need a space before them",
            ];
            let same = match (&ours, &theirs) {
                (Ok(a), Ok(b)) => a == b,
                (Err(_), Err(_)) => true,
                (Err(e), Ok(_)) => stricter.iter().any(|w| e.contains(w)),
                (Ok(_), Err(_)) => false,
            };
            if !same {
                differ.push(format!(
                    "{}\n    ours: {:?}\n  theirs: {:?}",
                    String::from_utf8_lossy(raw),
                    ours,
                    theirs
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {} differ:\n{}",
            differ.len(),
            inputs.len(),
            differ.join("\n")
        );
    }
}

/// Parse time of realistic stanzas, in release:
/// `cargo test --release --lib stanza::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    use super::parse;
    use std::hint::black_box;
    use std::time::Instant;

    /// A chat message as clients send it: 241 bytes.
    pub const CHAT_241: &str = "<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' type='chat' id='x000000000001-000000000002'><body>Lunch at noon? I booked, &amp; paid.</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>";

    /// A message of about 4 KB: a long body, its XHTML-IM copy and the
    /// usual extensions.
    pub fn chat_4k() -> String {
        let para = "The table by the window is booked for noon &amp; the menu looks good: soup, \
                    bread, a salad with caf\u{e9} dressing, and tea (\u{4e00}\u{676f}). ";
        let mut body = String::new();
        let mut html = String::new();
        while body.len() + html.len() < 3300 {
            body.push_str(para);
            html.push_str("<p style='margin:0'>");
            html.push_str(para);
            html.push_str("<br/></p>");
        }
        format!(
            "<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' \
             type='chat' id='x000000000001-000000000002' xml:lang='en'><body>{body}</body>\
             <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>{html}</body></html>\
             <active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/>\
             <markable xmlns='urn:xmpp:chat-markers:0'/><origin-id xmlns='urn:xmpp:sid:0' id='b9d3f0c2-6f7e-4a5b'/>\
             <store xmlns='urn:xmpp:hints'/></message>"
        )
    }

    fn ns_per_parse(raw: &[u8]) -> f64 {
        assert!(parse(raw).is_ok());
        let mut best = f64::MAX;
        for _ in 0..7 {
            let n = 2_000_000 / (1 + raw.len() / 256);
            let t = Instant::now();
            for _ in 0..n {
                black_box(parse(black_box(raw)).is_ok());
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    }

    #[test]
    #[ignore]
    fn parse_time() {
        assert_eq!(CHAT_241.len(), 241);
        let big = chat_4k();
        println!(
            "241 bytes: {:.1} ns/parse",
            ns_per_parse(CHAT_241.as_bytes())
        );
        println!(
            "{} bytes: {:.1} ns/parse",
            big.len(),
            ns_per_parse(big.as_bytes())
        );
    }
}
