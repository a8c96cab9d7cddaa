//! Mailboxes and effect lists made the way the commands make them, encoded
//! as seeds for the decoder targets (`examples/make_seeds.rs`).

use redis_im::mailbox::effect::{self, Devices, Effect};
use redis_im::mailbox::log::{IdSpec, HAS_DELAY, ID_IN_STANZA, VOLATILE};
use redis_im::mailbox::Mailbox;

/// A chat stanza with the given id.
pub fn chat(id: &str, body: &str) -> Vec<u8> {
    format!(
        "<message from='bob@example.com/pc' to='alice@example.com' id='{id}' type='chat'><body>{body}</body></message>"
    )
    .into_bytes()
}

/// A store effect; the id is read from the stanza's `id='...'` when `own`
/// is `None`, as IM.STORE does for a stanza id given verbatim.
fn store<'a>(
    seq: u64,
    ts: i64,
    flags: u8,
    stanza: &'a [u8],
    own: Option<&'a [u8]>,
    pending: &[&'a [u8]],
) -> Effect<'a> {
    let (flags, id) = match own {
        Some(b) => (flags, IdSpec::Own(b)),
        None => {
            let at = stanza
                .windows(4)
                .position(|w| w == b"id='")
                .expect("the stanza has an id")
                + 4;
            let len = stanza[at..].iter().position(|&b| b == b'\'').unwrap_or(0);
            (flags | ID_IN_STANZA, IdSpec::InStanza { off: at, len })
        }
    };
    Effect::Store {
        message: redis_im::mailbox::Message {
            seq,
            ts,
            flags,
            id,
            stanza,
        },
        pending: pending.iter().copied().collect::<Devices<'_>>(),
    }
}

/// Named effect lists, each applied to a new mailbox.
pub fn scripts(stanzas: &[Vec<u8>]) -> Vec<(&'static str, Vec<Effect<'_>>)> {
    let t = 1_732_690_028_000i64;
    let base = 1_732_690_028_000_000u64;
    let s = |i: usize| stanzas[i % stanzas.len()].as_slice();
    let mut out = Vec::new();

    out.push((
        "one-device",
        vec![
            Effect::Create { next_seq: base },
            Effect::Connect {
                device: b"phone",
                node: b"xmpp-1",
            },
        ],
    ));

    out.push((
        "two-devices",
        vec![
            Effect::Create { next_seq: base },
            Effect::Connect {
                device: b"phone",
                node: b"xmpp-1",
            },
            Effect::Register { device: b"laptop" },
            store(base, t, 0, s(0), None, &[b"phone"]),
            store(base + 1, t + 5, 0, s(1), Some(b"own-id"), &[]),
            store(base + 2, t + 9, VOLATILE, s(2), None, &[b"phone"]),
            store(base + 3, t + 12, HAS_DELAY, s(3), None, &[b"phone"]),
            Effect::Ack {
                device: b"phone",
                seqs: [base].into_iter().collect(),
            },
            Effect::Resend {
                device: b"phone",
                seqs: vec![base + 2],
            },
        ],
    ));

    let mut many = vec![
        Effect::Create { next_seq: base },
        Effect::Register { device: b"a" },
        Effect::Register {
            device: b"b\x00\xff",
        },
        Effect::Connect {
            device: "\u{4e00}".as_bytes(),
            node: b"n-2",
        },
    ];
    for i in 0..120u64 {
        let own: Option<&[u8]> = if i == 0 { Some(b"x") } else { None };
        many.push(store(base + i, t + i as i64, 0, s(i as usize), own, &[]));
    }
    for i in (0..120u64).step_by(7) {
        many.push(Effect::Ack {
            device: b"a",
            seqs: [base + i, base + i + 1].into_iter().collect(),
        });
    }
    many.push(Effect::AckUpto {
        device: b"b\x00\xff",
        upto: base + 30,
    });
    many.push(Effect::Drop { seq: base + 50 });
    out.push(("many-ranges", many));

    out.push((
        "kicked",
        vec![
            Effect::Create { next_seq: 7 },
            Effect::Connect {
                device: b"d",
                node: b"default",
            },
            store(7, -5, 0, s(0), None, &[b"d"]),
            store(8, 0, 0, s(1), None, &[b"d"]),
            Effect::Expire { device: b"d" },
            Effect::Connect {
                device: b"e",
                node: b"x.y:z_w-1",
            },
            Effect::Disconnect { device: b"e" },
            Effect::Forget { device: b"e" },
        ],
    ));
    out
}

/// The stanzas the samples store.
pub fn stanzas() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..200)
        .map(|i| chat(&format!("m{i}"), "Hi Alice"))
        .collect();
    v[2] = b"<message id='v1' type='headline'><body>news</body></message>".to_vec();
    v[3] = b"<message id='d1'><delay xmlns='urn:xmpp:delay' from='x' stamp='2024-01-01T00:00:00Z'/><body>old</body></message>".to_vec();
    v[5] = "<message id='u5'><body>\u{4e00} &amp; &#x1F600;</body></message>"
        .as_bytes()
        .to_vec();
    v
}

/// A mailbox built from an effect list.
pub fn build(effects: &[Effect<'_>]) -> Mailbox {
    let next = match effects.first() {
        Some(Effect::Create { next_seq }) => *next_seq,
        _ => 0,
    };
    let mut mb = Mailbox::new(next, 1_732_690_028_000);
    for (i, e) in effects.iter().enumerate() {
        mb.apply(1_732_690_028_000 + i as i64, e);
    }
    mb
}

/// A `mailbox_decode` input: the header, then batches of about `batch`
/// bytes, each length-prefixed.
pub fn mailbox_seed(mb: &Mailbox, batch: usize) -> Vec<u8> {
    let mut out = Vec::new();
    crate::join(&mut out, &mb.encode_header());
    mb.encode_messages(batch, |b| crate::join(&mut out, b));
    out
}

/// An `effect_decode` input: the blob, and the stanza argument when one
/// store names it.
pub fn effect_seed(effects: &[Effect<'_>], shared: Option<&[u8]>) -> Vec<u8> {
    let mut blob = Vec::new();
    let named = effect::encode(&mut blob, 1_732_690_028_000, effects, shared);
    let mut out = Vec::new();
    crate::join(&mut out, &blob);
    if let (true, Some(s)) = (named, shared) {
        out.extend_from_slice(s);
    }
    out
}
