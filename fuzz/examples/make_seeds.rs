//! Writes the seed corpora into `fuzz/seeds/<target>/`:
//! `cargo run --example make_seeds` in `fuzz/`, with `RUSTFLAGS="--cfg fuzzing"`
//! (the module's server allocator is left out under that cfg).
//!
//! The stanza seeds are the inputs known to break the scanner today, a
//! valid chat stanza and a few stanzas the offline policy reads; the
//! decoder seeds are encodings of mailboxes and effect lists made with the
//! module's own encoder.

use redis_im_fuzz::samples;
use std::fs;
use std::path::Path;

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).expect("create the seed directory");
    fs::write(dir.join(name), data).expect("write a seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");

    let st = root.join("stanza");
    let mut attrs = String::from("<message id='many'");
    for i in 0..10_000 {
        attrs.push_str(&format!(" a{i}='{i}'"));
    }
    attrs.push_str("><body>x</body></message>");
    let stanzas: Vec<(&str, Vec<u8>)> = vec![
        ("dup-attr-non-ascii", "<message \u{100}='1' \u{100}='2'/>".into()),
        ("control-char", b"<message><body>\x1b</body></message>".to_vec()),
        ("char-ref-1", b"<message><body>&#1;</body></message>".to_vec()),
        ("cdata-end-in-text", b"<message><body>]]></body></message>".to_vec()),
        ("double-dash-comment", b"<message><!-- a -- b --></message>".to_vec()),
        ("chat", samples::chat("m1", "Hi Alice")),
        ("10000-attributes", attrs.into_bytes()),
        ("fffe", "<message><body>\u{fffe}</body></message>".into()),
        ("undeclared-prefix", b"<message><p:x/></message>".to_vec()),
        ("chatstate", b"<message id='c1' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>".to_vec()),
        ("chatstate-prefixed", b"<message id='c2'><cs:active xmlns:cs='http://jabber.org/protocol/chatstates'/></message>".to_vec()),
        ("no-store", b"<message id='h1'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>".to_vec()),
        ("store-hint", b"<message type='headline'><store xmlns='urn:xmpp:hints'/><body>x</body></message>".to_vec()),
        ("delay", b"<message id='d'><delay xmlns='urn:xmpp:delay' from='x' stamp='2024-01-01T00:00:00Z'/><body>x</body></message>".to_vec()),
        ("iq", b"<iq type='get' id='q1'><query xmlns='jabber:iq:roster'/></iq>".to_vec()),
        ("presence-empty", b"<presence/>".to_vec()),
        ("refs-cdata", "<message id='a&amp;b'><body><![CDATA[<x>]]>&lt;&#x1F600;\u{4e00}</body><!-- c --></message>".into()),
    ];
    for (name, data) in &stanzas {
        write(&st, name, data);
    }

    let texts = samples::stanzas();
    let scripts = samples::scripts(&texts);
    let md = root.join("mailbox_decode");
    let ed = root.join("effect_decode");
    for (name, effects) in &scripts {
        let mb = samples::build(effects);
        write(
            &md,
            &format!("{name}-one-batch"),
            &samples::mailbox_seed(&mb, 256 * 1024),
        );
        write(
            &md,
            &format!("{name}-small-batches"),
            &samples::mailbox_seed(&mb, 200),
        );
        write(&ed, name, &samples::effect_seed(effects, None));
        // One store passing its stanza as the argument after the blob.
        let shared = effects.iter().find_map(|e| match e {
            redis_im::mailbox::Effect::Store { message, .. } => Some(message.stanza),
            _ => None,
        });
        if shared.is_some() {
            write(
                &ed,
                &format!("{name}-stanza-argument"),
                &samples::effect_seed(effects, shared),
            );
        }
    }
    println!("seeds written under {}", root.display());
}
