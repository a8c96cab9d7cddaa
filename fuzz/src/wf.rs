//! A small, strict reference checker for the XML a stanza must be
//! (SPEC §3, IM.STORE): one element, well-formed as XML 1.0 (Fifth
//! Edition) and Namespaces in XML 1.0 say, with no DOCTYPE, no XML
//! declaration and no processing instruction. Slow and simple on purpose:
//! it is the oracle the `stanza` fuzz target compares the module's scanner
//! against. It also reads the facts the offline policy needs, resolving
//! namespaces as XML does.

const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const NS_DELAY: &str = "urn:xmpp:delay";

/// What the reference reads from a well-formed document.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The root element's local name.
    pub root: String,
    /// The root's unprefixed `id` and `type` attributes, references resolved.
    pub id: Option<String>,
    pub type_attr: Option<String>,
    /// A child of the root with local name `body`.
    pub has_body: bool,
    /// A child of the root in the chat states namespace.
    pub chat_state: bool,
    /// `no-store` / `no-permanent-store` in the hints namespace.
    pub no_store: bool,
    /// `store` in the hints namespace.
    pub store_hint: bool,
    /// `delay` in the delay namespace.
    pub has_delay: bool,
}

/// XML 1.0 `Char`.
pub fn is_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_name_start(c: char) -> bool {
    matches!(c, ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

struct P {
    s: Vec<char>,
    i: usize,
}

type R<T> = Result<T, String>;

/// One attribute as written: qualified name and value with references
/// resolved and white space normalised (XML §3.3.3, CDATA type).
struct Attr {
    name: String,
    value: String,
}

impl P {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn at(&self, lit: &str) -> bool {
        let mut k = self.i;
        for c in lit.chars() {
            if self.s.get(k) != Some(&c) {
                return false;
            }
            k += 1;
        }
        true
    }

    fn fail<T>(&self, what: &str) -> R<T> {
        Err(format!("{what} at char {}", self.i))
    }

    fn space(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(is_space) {
            self.i += 1;
        }
        self.i > start
    }

    fn name(&mut self) -> R<String> {
        match self.peek() {
            Some(c) if is_name_start(c) => {}
            _ => return self.fail("bad name start"),
        }
        let start = self.i;
        while self.peek().is_some_and(is_name_char) {
            self.i += 1;
        }
        Ok(self.s[start..self.i].iter().collect())
    }

    /// `&...;` just at `self.i`: the text it stands for.
    fn reference(&mut self) -> R<char> {
        debug_assert_eq!(self.peek(), Some('&'));
        self.i += 1;
        let c = if self.peek() == Some('#') {
            self.i += 1;
            let hex = self.peek() == Some('x');
            if hex {
                self.i += 1;
            }
            let start = self.i;
            while self.peek().is_some_and(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            }) {
                self.i += 1;
            }
            let digits: String = self.s[start..self.i].iter().collect();
            if digits.is_empty() {
                return self.fail("empty character reference");
            }
            let v = u32::from_str_radix(&digits, if hex { 16 } else { 10 }).unwrap_or(u32::MAX);
            match char::from_u32(v) {
                Some(c) if is_char(c) => c,
                _ => return self.fail("character reference to a non-Char"),
            }
        } else {
            let n = self.name()?;
            match n.as_str() {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "apos" => '\'',
                "quot" => '"',
                _ => return self.fail("undeclared entity"),
            }
        };
        if self.peek() != Some(';') {
            return self.fail("reference without ';'");
        }
        self.i += 1;
        Ok(c)
    }

    fn comment(&mut self) -> R<()> {
        self.i += 4; // <!--
        loop {
            match self.peek() {
                None => return self.fail("unterminated comment"),
                Some('-') if self.at("--") => {
                    if self.at("-->") {
                        self.i += 3;
                        return Ok(());
                    }
                    return self.fail("'--' inside a comment");
                }
                Some(_) => self.i += 1,
            }
        }
    }

    fn start_tag(&mut self) -> R<(String, Vec<Attr>, bool)> {
        self.i += 1; // <
        let name = self.name()?;
        let mut attrs: Vec<Attr> = Vec::new();
        let mut names = std::collections::HashSet::new();
        loop {
            let spaced = self.space();
            match self.peek() {
                Some('>') => {
                    self.i += 1;
                    return Ok((name, attrs, false));
                }
                Some('/') if self.at("/>") => {
                    self.i += 2;
                    return Ok((name, attrs, true));
                }
                None => return self.fail("unclosed start tag"),
                Some(_) if !spaced => return self.fail("no space before an attribute"),
                Some(_) => {}
            }
            let an = self.name()?;
            if !names.insert(an.clone()) {
                return self.fail("duplicate attribute");
            }
            self.space();
            if self.peek() != Some('=') {
                return self.fail("attribute without '='");
            }
            self.i += 1;
            self.space();
            let q = match self.peek() {
                Some(q @ ('\'' | '"')) => q,
                _ => return self.fail("unquoted attribute value"),
            };
            self.i += 1;
            let mut v = String::new();
            loop {
                match self.peek() {
                    None => return self.fail("unterminated attribute value"),
                    Some(c) if c == q => {
                        self.i += 1;
                        break;
                    }
                    Some('<') => return self.fail("'<' in an attribute value"),
                    Some('&') => v.push(self.reference()?),
                    Some(c) => {
                        v.push(if is_space(c) { ' ' } else { c });
                        self.i += 1;
                    }
                }
            }
            attrs.push(Attr { name: an, value: v });
        }
    }
}

/// A namespace-valid qualified name: `(prefix, local)`.
fn qname(n: &str) -> R<(Option<&str>, &str)> {
    match n.split_once(':') {
        None => Ok((None, n)),
        Some((p, l)) if !p.is_empty() && !l.is_empty() && !l.contains(':') => {
            // The local part must start with a name start character.
            if l.chars().next().is_some_and(is_name_start) {
                Ok((Some(p), l))
            } else {
                Err(format!("bad local name in '{n}'"))
            }
        }
        _ => Err(format!("'{n}' is not a qualified name")),
    }
}

/// Namespace bindings in scope: a stack of (prefix, uri), "" for the default.
struct Scope {
    binds: Vec<(String, String)>,
}

impl Scope {
    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(NS_XML);
        }
        self.binds
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }
}

/// Checks one start tag against the namespace rules and pushes its
/// declarations; answers the element's namespace URI (if any).
fn namespaces(scope: &mut Scope, name: &str, attrs: &[Attr]) -> R<Option<String>> {
    for a in attrs {
        let (p, l) = qname(&a.name)?;
        let declared = match (p, l) {
            (None, "xmlns") => Some(""),
            (Some("xmlns"), l) => Some(l),
            _ => None,
        };
        let Some(prefix) = declared else { continue };
        if a.value == NS_XMLNS {
            return Err("binding the xmlns namespace".into());
        }
        match prefix {
            "xmlns" => return Err("declaring the xmlns prefix".into()),
            "xml" if a.value != NS_XML => return Err("rebinding the xml prefix".into()),
            "xml" => {}
            _ if a.value == NS_XML => {
                return Err("binding the xml namespace to another prefix".into())
            }
            "" => {}
            _ if a.value.is_empty() => {
                return Err("undeclaring a prefix (XML Namespaces 1.1 only)".into())
            }
            _ => {}
        }
        scope.binds.push((prefix.to_string(), a.value.clone()));
    }
    let (p, _) = qname(name)?;
    let ns = match p {
        Some("xmlns") => return Err("element with the xmlns prefix".into()),
        Some(p) => Some(
            scope
                .lookup(p)
                .ok_or_else(|| format!("undeclared prefix '{p}'"))?
                .to_string(),
        ),
        None => scope
            .lookup("")
            .filter(|u| !u.is_empty())
            .map(str::to_string),
    };
    let mut expanded = std::collections::HashSet::new();
    for a in attrs {
        let (p, l) = qname(&a.name)?;
        match p {
            None | Some("xmlns") => {}
            Some(p) => {
                let uri = scope
                    .lookup(p)
                    .ok_or_else(|| format!("undeclared prefix '{p}'"))?;
                if !expanded.insert((uri.to_string(), l.to_string())) {
                    return Err("two attributes with the same expanded name".into());
                }
            }
        }
    }
    Ok(ns)
}

/// Checks `raw` and reads its facts.
pub fn check(raw: &[u8]) -> R<Facts> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut p = P {
        s: text.chars().collect(),
        i: 0,
    };
    if let Some(k) = p.s.iter().position(|&c| !is_char(c)) {
        p.i = k;
        return p.fail("a character that is not a Char");
    }
    let mut facts = Facts::default();
    let mut seen_root = false;
    // Prolog and epilog: white space and comments only.
    loop {
        p.space();
        match p.peek() {
            None => break,
            Some('<') if p.at("<!--") => p.comment()?,
            Some('<') if p.at("<?") || p.at("<!") => return p.fail("declaration or PI"),
            Some('<') if !seen_root && !p.at("</") => {
                element(&mut p, &mut facts)?;
                seen_root = true;
            }
            Some(_) => return p.fail("content outside the root element"),
        }
    }
    if !seen_root {
        return Err("no element".into());
    }
    Ok(facts)
}

/// The root element and everything in it, without recursion.
fn element(p: &mut P, facts: &mut Facts) -> R<()> {
    let mut scope = Scope { binds: Vec::new() };
    // Open elements: name and the scope's depth before it.
    let mut open: Vec<(String, usize)> = Vec::new();
    loop {
        // Here `p` is at a '<' that starts a tag, an end tag, a comment
        // or CDATA, or at text inside an element.
        match p.peek() {
            None => return p.fail("unclosed element"),
            Some('<') if p.at("<!--") => {
                if open.is_empty() {
                    unreachable!("comments outside the root are handled by the caller")
                }
                p.comment()?;
            }
            Some('<') if p.at("<![CDATA[") => {
                if open.is_empty() {
                    return p.fail("CDATA outside the root");
                }
                p.i += 9;
                loop {
                    if p.peek().is_none() {
                        return p.fail("unterminated CDATA");
                    }
                    if p.at("]]>") {
                        p.i += 3;
                        break;
                    }
                    p.i += 1;
                }
            }
            Some('<') if p.at("<?") || p.at("<!") => return p.fail("declaration or PI"),
            Some('<') if p.at("</") => {
                p.i += 2;
                let n = p.name()?;
                p.space();
                if p.peek() != Some('>') {
                    return p.fail("bad end tag");
                }
                p.i += 1;
                match open.pop() {
                    Some((o, depth)) if o == n => scope.binds.truncate(depth),
                    _ => return p.fail("end tag does not match"),
                }
                if open.is_empty() {
                    return Ok(());
                }
            }
            Some('<') => {
                let depth = scope.binds.len();
                let (name, attrs, empty) = p.start_tag()?;
                let ns = namespaces(&mut scope, &name, &attrs)?;
                let (_, local) = qname(&name)?;
                if open.is_empty() {
                    facts.root = local.to_string();
                    for a in &attrs {
                        match a.name.as_str() {
                            "id" => facts.id = Some(a.value.clone()),
                            "type" => facts.type_attr = Some(a.value.clone()),
                            _ => {}
                        }
                    }
                } else if open.len() == 1 {
                    let ns = ns.as_deref();
                    match local {
                        "body" => facts.has_body = true,
                        "no-store" | "no-permanent-store" if ns == Some(NS_HINTS) => {
                            facts.no_store = true
                        }
                        "store" if ns == Some(NS_HINTS) => facts.store_hint = true,
                        "delay" if ns == Some(NS_DELAY) => facts.has_delay = true,
                        _ => {}
                    }
                    if ns == Some(NS_CHATSTATES) {
                        facts.chat_state = true;
                    }
                }
                if empty {
                    scope.binds.truncate(depth);
                    if open.is_empty() {
                        return Ok(());
                    }
                } else {
                    open.push((name, depth));
                }
            }
            Some(_) => {
                // Character data up to the next '<'.
                let start = p.i;
                let mut run = start;
                while let Some(c) = p.peek() {
                    match c {
                        '<' => break,
                        '&' => {
                            check_text(&p.s[run..p.i], run)?;
                            p.reference()?;
                            run = p.i;
                        }
                        _ => p.i += 1,
                    }
                }
                check_text(&p.s[run..p.i], run)?;
            }
        }
    }
}

/// Literal character data may not hold `]]>`.
fn check_text(s: &[char], at: usize) -> R<()> {
    match s.windows(3).position(|w| w == [']', ']', '>']) {
        Some(k) => Err(format!("']]>' in text at char {}", at + k)),
        None => Ok(()),
    }
}

/// The module refuses a well-formed root that is not a stanza.
pub fn root_is_stanza(f: &Facts) -> bool {
    matches!(f.root.as_str(), "message" | "iq" | "presence")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_stanzas() {
        for s in [
            "<message/>",
            "<message to='a@b' id='x' type='chat'><body>hi &amp; &#x1F600;</body></message>",
            " <!-- c --> <iq xmlns='jabber:client'><q:x xmlns:q='urn:q' q:a='1' b='2'/></iq> <!---->",
            "<presence><![CDATA[ ]] > <&]]></presence>",
            "<message xml:lang='en'><cs:active xmlns:cs='http://jabber.org/protocol/chatstates'/></message>",
        ] {
            assert!(check(s.as_bytes()).is_ok(), "{s}: {:?}", check(s.as_bytes()));
        }
        let f = check(
            b"<message><cs:active xmlns:cs='http://jabber.org/protocol/chatstates'/></message>",
        )
        .unwrap();
        assert!(f.chat_state && !f.has_body);
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "<message \u{100}='1' \u{100}='2'/>",
            "<message><body>\u{1b}</body></message>",
            "<message><body>&#1;</body></message>",
            "<message><body>]]></body></message>",
            "<message><!-- a -- b --></message>",
            "<message><body>\u{FFFE}</body></message>",
            "<message><p:x/></message>",
            "<message xmlns:a='u' xmlns:b='u' a:x='1' b:x='2'/>",
            "<message a='1'b='2'/>",
            "<message>&foo;</message>",
            "<?xml version='1.0'?><message/>",
            "<!DOCTYPE message><message/>",
            "<message/><message/>",
            "<message>",
            "<message><a></b></message>",
            "<message xmlns:p=''/>",
            "<1message/>",
            "<message><!-- a ---></message>",
        ] {
            assert!(check(s.as_bytes()).is_err(), "{s}");
        }
    }
}
