//! The checks behind the fuzz targets, kept here so that the seeds can be
//! replayed by plain `cargo test` in this crate as well as by libFuzzer.
//!
//! Each `check_*` function takes the fuzzer's bytes and panics on a fault:
//! a panic inside redis-im itself, or a property the contract promises
//! that does not hold (a stanza accepted that is not well-formed XML, an
//! encoding that does not decode back to itself, ...).

pub mod samples;
pub mod wf;

use redis_im::mailbox::due::TimerSettings;
use redis_im::mailbox::effect::{self, Effect};
use redis_im::mailbox::Mailbox;
use redis_im::stanza::{self, Kind};

/// Splits `data` at a little-endian `u16` length prefix: `(part, rest)`.
/// A prefix longer than the data takes all of it.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    data[2..].split_at(n)
}

/// Prefixes `part` with its length as [`split`] reads it.
pub fn join(out: &mut Vec<u8>, part: &[u8]) {
    let n = u16::try_from(part.len()).expect("a part of a seed fits in 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(part);
}

/// The time the delay stamp is made from (2024-11-27T06:47:08.123Z).
pub const DELAY_TS: i64 = 1_732_690_028_123;

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Message => "message",
        Kind::Iq => "iq",
        Kind::Presence => "presence",
    }
}

/// An error reply's text must be one line that starts with an error code,
/// with no NUL and no control character (the reply writes its bytes as
/// they are, up to a NUL; quoted client bytes are escaped as `\xNN`).
pub fn check_error_text(e: &str) {
    assert!(
        e.starts_with("ERR "),
        "error text does not start with 'ERR ': {e:?}"
    );
    assert!(!e.contains(['\r', '\n']), "error text spans lines: {e:?}");
    assert!(
        !e.chars().any(char::is_control),
        "error text holds a control character: {e:?}"
    );
}

/// Attribute values holding literal white space other than spaces are
/// normalised by XML; the module keeps them verbatim. Not compared.
fn comparable(v: &[u8]) -> bool {
    !v.iter().any(|b| matches!(b, b'\t' | b'\r' | b'\n'))
}

/// `stanza` target: the scanner against the reference checker, and the
/// delay stamp.
pub fn check_stanza(data: &[u8]) {
    let got = stanza::parse(data);
    let reference = wf::check(data);
    let s = match got {
        Err(e) => {
            check_error_text(&e);
            if let Ok(f) = &reference {
                assert!(
                    !wf::root_is_stanza(f),
                    "refused a well-formed stanza ({e}): {:?}",
                    String::from_utf8_lossy(data)
                );
            }
            return;
        }
        Ok(s) => s,
    };
    let f = match reference {
        Ok(f) => f,
        Err(why) => panic!(
            "accepted a stanza that is not well-formed XML ({why}): {:?}",
            String::from_utf8_lossy(data)
        ),
    };
    assert_eq!(kind_name(s.kind), f.root, "stanza kind");
    if let (Some(id), Some(want)) = (&s.id, &f.id) {
        if comparable(want.as_bytes()) && comparable(&id.value) {
            assert_eq!(&*id.value, want.as_bytes(), "id attribute value");
        }
        if let Some(at) = id.verbatim_at {
            assert_eq!(
                data.get(at..at + id.value.len()),
                Some(&*id.value),
                "verbatim id is not where it says"
            );
        }
    }
    assert_eq!(s.id.is_some(), f.id.is_some(), "id attribute present");
    if let (Some(t), Some(want)) = (&s.type_attr, &f.type_attr) {
        if comparable(want.as_bytes()) && comparable(t) {
            assert_eq!(&**t, want.as_bytes(), "type attribute value");
        }
    }
    assert_eq!(
        s.type_attr.is_some(),
        f.type_attr.is_some(),
        "type attribute present"
    );
    assert_eq!(s.has_body, f.has_body, "has_body");
    assert_eq!(
        s.chat_state, f.chat_state,
        "chat state (by namespace, whatever the prefix)"
    );
    assert_eq!(s.no_store, f.no_store, "no-store hint (by namespace)");
    assert_eq!(s.store_hint, f.store_hint, "store hint (by namespace)");
    assert_eq!(s.has_delay, f.has_delay, "delay (by namespace)");

    // IM.OFFLINE.PAGE ... DELAY: the stamped stanza is a stanza too.
    let out = stanza::with_delay(data, b"example.com", DELAY_TS);
    let s2 = match stanza::parse(&out) {
        Ok(s2) => s2,
        Err(e) => panic!(
            "with_delay made a stanza that does not parse ({e}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    if let Err(why) = wf::check(&out) {
        panic!(
            "with_delay made XML that is not well-formed ({why}): {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    assert!(
        s2.has_delay,
        "with_delay added no delay: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s2.kind, s.kind);
    assert_eq!(
        s2.id.as_ref().map(|i| &i.value),
        s.id.as_ref().map(|i| &i.value)
    );
    assert_eq!(s2.type_attr, s.type_attr);
    assert_eq!(
        (s2.has_body, s2.chat_state, s2.no_store, s2.store_hint),
        (s.has_body, s.chat_state, s.no_store, s.store_hint),
        "with_delay changed what the policy reads"
    );
}

/// The messages of a mailbox in the logical encoding, in batches of about
/// `batch` bytes, as RDB save and AOF rewrite write them.
pub fn batches(mb: &Mailbox, batch: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    mb.encode_messages(batch, |b| out.push(b.to_vec()));
    out
}

/// Decodes a header and its message batches as the RDB loader does;
/// `None` where the loader would refuse.
pub fn load<'a>(header: &[u8], mut chunks: impl Iterator<Item = &'a [u8]>) -> Option<Mailbox> {
    let (mut mb, n) = Mailbox::decode_header(header)?;
    let mut maybe = Default::default();
    while mb.log.len() < n {
        if mb.load_messages(chunks.next()?, &mut maybe)? == 0 {
            return None;
        }
    }
    // The loader refuses what does not hold together (wrapper::datatype),
    // and a RESTORE a repeated id.
    (mb.log.len() == n && mb.consistent().is_ok() && mb.repeated_ids(&mut maybe) == 0).then_some(mb)
}

/// The timer settings of the command fuzzer (short deadlines).
pub const SETTINGS: TimerSettings = TimerSettings {
    resend_interval: 50,
    ack_timeout: 200,
    device_idle: 30 * 24 * 3600 * 1000,
    retention: 7 * 24 * 3600 * 1000,
    archive: false,
    mailbox_idle: 0,
};

/// What a command or the timer reads from a mailbox that was just loaded.
pub fn exercise(mb: &Mailbox) {
    let _ = mb.mem_usage();
    let _ = mb.pending_total();
    let names: Vec<Vec<u8>> = mb.devices.iter().map(|d| d.name().to_vec()).collect();
    for name in names.iter().map(Vec::as_slice).chain([&b"nobody"[..]]) {
        let info = mb.offline_info(name);
        let (page, _) = mb.offline_page(name, 0, 1000);
        for m in &page {
            let _ = mb.find_id(m.id);
            let _ = mb.pending_on(m.seq);
        }
        let _ = info;
    }
    let _ = mb.next_due(&SETTINGS);
    for now in [
        0,
        mb.touched,
        mb.touched.saturating_add(1 << 40),
        i64::MAX / 2,
    ] {
        let _ = mb.due_work(now, &SETTINGS, 1000);
    }
}

/// The timer's work on a loaded mailbox, applied as the sweep applies it.
pub fn sweep(mb: &mut Mailbox, now: i64) {
    let w = mb.due_work(now, &SETTINGS, 1000);
    let name = |i: usize| mb.devices.get(i).map(|d| d.name().to_vec());
    let mut owned: Vec<(u8, Vec<u8>, Vec<u64>)> = Vec::new();
    for (i, _) in &w.expire {
        if let Some(n) = name(*i) {
            owned.push((0, n, Vec::new()));
        }
    }
    for (i, seqs) in &w.resend {
        if let Some(n) = name(*i) {
            owned.push((1, n, seqs.clone()));
        }
    }
    for i in &w.forget {
        if let Some(n) = name(*i) {
            owned.push((2, n, Vec::new()));
        }
    }
    let mut effects: Vec<Effect<'_>> = owned
        .iter()
        .map(|(k, n, seqs)| match k {
            0 => Effect::Expire { device: n },
            1 => Effect::Resend {
                device: n,
                seqs: seqs.clone(),
            },
            _ => Effect::Forget { device: n },
        })
        .collect();
    effects.extend(w.drop.iter().map(|&seq| Effect::Drop { seq }));
    for e in &effects {
        mb.apply(now, e);
    }
}

/// What a mailbox built by commands always satisfies: every pending or
/// offline seq of a device is a message of the log, a device's offline
/// count and bytes are those of its offline seqs, no seq is both pending and
/// offline for one device, and each message's count of devices owing it is
/// the number of devices that have it pending or offline. A decoder that
/// accepts a mailbox breaking these hands the commands and the timer a
/// state they were not written for (for example an offline range of 2^40
/// seqs, which forgetting the device expands into memory).
pub fn consistency(mb: &Mailbox) -> Result<(), String> {
    let messages = mb.log.len();
    let mut owing: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for d in &mb.devices {
        let name = String::from_utf8_lossy(d.name());
        let (mut count, mut bytes) = (0u64, 0u64);
        for (s, e) in d.offline.ranges() {
            if e < s || e - s >= messages {
                return Err(format!("device {name:?}: offline range {s}..={e} is longer than the log ({messages} messages)"));
            }
            for seq in s..=e {
                let Some(m) = mb.log.get(seq) else {
                    return Err(format!(
                        "device {name:?}: offline seq {seq} is not in the log"
                    ));
                };
                if d.pending.contains(seq) {
                    return Err(format!(
                        "device {name:?}: seq {seq} is both pending and offline"
                    ));
                }
                count += 1;
                bytes += m.stanza.len() as u64;
                *owing.entry(seq).or_default() += 1;
            }
        }
        if (count, bytes) != (d.offline_count(), d.offline_bytes()) {
            return Err(format!(
                "device {name:?}: offline count/bytes {}/{} but its ranges hold {count}/{bytes}",
                d.offline_count(),
                d.offline_bytes()
            ));
        }
        for (seq, _) in d.pending.iter() {
            if mb.log.get(seq).is_none() {
                return Err(format!(
                    "device {name:?}: pending seq {seq} is not in the log"
                ));
            }
            *owing.entry(seq).or_default() += 1;
        }
    }
    for m in mb.log.iter_from(0) {
        let want = owing.get(&m.seq).copied().unwrap_or(0);
        if u64::from(m.owers) != want.min(u64::from(redis_im::mailbox::log::MAX_OWERS)) {
            return Err(format!(
                "message {}: owed by {} devices, its header says {}",
                m.seq, want, m.owers
            ));
        }
    }
    Ok(())
}

/// `mailbox_decode` target. Input: a length-prefixed header, then
/// length-prefixed message batches (the last one may run to the end).
pub fn check_mailbox(data: &[u8]) {
    let (header, mut rest) = split(data);
    let chunks = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let (c, r) = split(rest);
        rest = r;
        Some(c)
    });
    let Some(mut mb) = load(header, chunks) else {
        return;
    };
    roundtrip(&mb, 64);
    roundtrip(&mb, 256 * 1024);
    let copy = mb
        .copy_via_encoding(256 * 1024)
        .expect("COPY of a loaded mailbox fails");
    assert_eq!(
        copy.encode_header(),
        mb.encode_header(),
        "COPY changed the header"
    );
    if let Err(why) = consistency(&mb) {
        panic!("the decoder accepted an inconsistent mailbox (RESTORE hands it any bytes): {why}");
    }
    exercise(&mb);
    // The timer's first run after loading, then the encoding again.
    let now = mb.touched.saturating_add(1 << 40);
    sweep(&mut mb, now);
    exercise(&mb);
    roundtrip(&mb, 64);
}

/// decode(encode(mb)) encodes to the same bytes, whatever the batch size.
pub fn roundtrip(mb: &Mailbox, batch: usize) {
    let h1 = mb.encode_header();
    let m1 = batches(mb, batch);
    let Some(mb2) = load(&h1, m1.iter().map(Vec::as_slice)) else {
        panic!(
            "the encoding of a mailbox does not load back (header {} bytes, {} batches, {} messages)",
            h1.len(),
            m1.len(),
            mb.log.len()
        );
    };
    assert_eq!(
        mb2.encode_header(),
        h1,
        "header changed through encode/decode"
    );
    assert_eq!(
        batches(&mb2, batch).concat(),
        m1.concat(),
        "messages changed through encode/decode"
    );
}

/// `effect_decode` target. Input: a length-prefixed effect blob, then the
/// argument that may follow it in `IM.APPLY` (the stored stanza).
pub fn check_effects(data: &[u8]) {
    let (blob, arg) = split(data);
    let args: Vec<&[u8]> = if arg.is_empty() { vec![] } else { vec![arg] };
    let Some((now, effects)) = effect::decode(blob, &args) else {
        return;
    };
    // Inline encoding decodes to the same effects.
    let mut out = Vec::new();
    let shared = effect::encode(&mut out, now, &effects, None);
    assert!(!shared, "an effect named an argument that was not given");
    // Compared through their Debug text: the decoded effects borrow from
    // other buffers than `effects` does.
    let want = format!("{:?}", (now, &effects));
    let same = |blob: &[u8], args: &[&[u8]]| {
        effect::decode(blob, args).is_some_and(|d| format!("{:?}", (d.0, &d.1)) == want)
    };
    assert!(same(&out, &[]), "effects changed through encode/decode");
    // With the argument passed on, as the primary does for IM.STORE.
    if let Some(a) = args.first() {
        let mut by_ref = Vec::new();
        effect::encode(&mut by_ref, now, &effects, Some(a));
        assert!(
            same(&by_ref, &args),
            "effects changed through encode/decode with the stanza argument"
        );
    }
}
