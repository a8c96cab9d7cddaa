use super::log::IdSpec;
use super::*;

fn store<'a>(mb: &mut Mailbox, id: &'a str, pending: Vec<&'a [u8]>, flags: u8) -> u64 {
    let seq = mb.next_seq;
    let stanza = format!("<message id='{id}'><body>hello</body></message>");
    mb.apply(
        seq as i64,
        &Effect::Store {
            seq,
            ts: 1000,
            flags,
            id: IdSpec::Own(id.as_bytes()),
            stanza: stanza.as_bytes(),
            pending: pending.into(),
        },
    );
    seq
}

fn online(mb: &Mailbox) -> Vec<&[u8]> {
    mb.devices
        .iter()
        .filter(|d| d.online)
        .map(|d| &*d.name)
        .collect()
}

fn roundtrip(mb: &Mailbox) -> Mailbox {
    let (mut copy, n) = Mailbox::decode_header(&mb.encode_header()).unwrap();
    mb.encode_messages(100, |b| {
        copy.load_messages(b).unwrap();
    });
    assert_eq!(n, copy.log.len());
    assert_eq!(copy.encode_header(), mb.encode_header());
    copy
}

#[test]
fn phone_online_laptop_offline() {
    let mut mb = Mailbox::new(100, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n1",
        },
    );
    mb.apply(1, &Effect::Register { device: b"laptop" });
    let on = online(&mb)
        .into_iter()
        .map(|d| d.to_vec())
        .collect::<Vec<_>>();
    let on: Vec<&[u8]> = on.iter().map(|v| v.as_slice()).collect();
    let seq = store(&mut mb, "m1", on, 0);
    assert_eq!(mb.pending_on(seq), vec![&b"phone"[..]]);
    assert_eq!(mb.offline_info(b"laptop").count, 1);
    assert_eq!(mb.find_id(b"m1"), Some(seq));
    assert_eq!(
        mb.apply(
            2,
            &Effect::Ack {
                device: b"phone",
                seqs: smallvec::smallvec![seq]
            }
        ),
        1
    );
    assert_eq!(mb.log.len(), 1, "still owed to the laptop");
    let copy = roundtrip(&mb);
    assert_eq!(copy.find_id(b"m1"), Some(seq));
    let (page, more) = mb.offline_page(b"laptop", 0, 10);
    assert_eq!((page.len(), more), (1, false));
    assert_eq!(
        mb.apply(
            3,
            &Effect::Ack {
                device: b"laptop",
                seqs: smallvec::smallvec![seq]
            }
        ),
        1
    );
    assert_eq!(mb.log.len(), 0);
    assert_eq!(mb.find_id(b"m1"), None);
}

#[test]
fn first_device_rule_and_forget() {
    let mut mb = Mailbox::new(100, 0);
    let a = store(&mut mb, "a", vec![], 0);
    let b = store(&mut mb, "b", vec![], 0);
    assert_eq!(mb.offline_info(b"x").count, 2, "a newcomer would get both");
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    assert_eq!(mb.offline_info(b"phone").count, 2);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"tablet",
            node: b"n",
        },
    );
    assert_eq!(
        mb.offline_info(b"tablet").count,
        0,
        "later device: only later messages"
    );
    let c = store(&mut mb, "c", vec![], 0);
    assert_eq!(mb.offline_info(b"tablet").count, 1);
    assert_eq!(
        mb.apply(
            2,
            &Effect::AckUpto {
                device: b"phone",
                upto: b
            }
        ),
        2
    );
    assert_eq!(mb.log.len(), 1);
    assert_eq!(
        mb.apply(
            2,
            &Effect::Ack {
                device: b"phone",
                seqs: smallvec::smallvec![c, a]
            }
        ),
        1
    );
    assert_eq!(mb.log.len(), 1, "the tablet still owes c");
    assert_eq!(mb.apply(3, &Effect::Forget { device: b"tablet" }), 1);
    assert_eq!(mb.log.len(), 0);
}

#[test]
fn unacked_message_waits_for_the_next_device() {
    let mut mb = Mailbox::new(100, 0);
    mb.apply(1, &Effect::Register { device: b"phone" });
    store(&mut mb, "a", vec![], 0);
    assert_eq!(mb.apply(2, &Effect::Forget { device: b"phone" }), 0);
    assert_eq!(mb.log.len(), 1);
    mb.apply(
        3,
        &Effect::Connect {
            device: b"new",
            node: b"n",
        },
    );
    assert_eq!(mb.offline_info(b"new").count, 1);
}

#[test]
fn volatile_is_dropped_not_kept() {
    let mut mb = Mailbox::new(100, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    mb.apply(1, &Effect::Register { device: b"laptop" });
    let s = store(&mut mb, "v", vec![b"phone"], log::VOLATILE);
    assert_eq!(mb.offline_info(b"laptop").count, 0);
    assert_eq!(mb.log.len(), 1);
    assert_eq!(mb.apply(2, &Effect::Disconnect { device: b"phone" }), 0);
    assert_eq!(mb.log.len(), 0);
    assert!(mb.log.get(s).is_none());
}

#[test]
fn reconnect_moves_pending_offline() {
    let mut mb = Mailbox::new(100, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    store(&mut mb, "a", vec![b"phone"], 0);
    assert_eq!(mb.pending_total(), 1);
    mb.apply(
        2,
        &Effect::Connect {
            device: b"phone",
            node: b"n2",
        },
    );
    assert_eq!(mb.pending_total(), 0);
    assert_eq!(mb.offline_info(b"phone").count, 1);
    assert_eq!(&*mb.devices[0].node, b"n2");
    let copy = roundtrip(&mb);
    assert_eq!(copy.offline_info(b"phone"), mb.offline_info(b"phone"));
}

#[test]
fn paging_many() {
    let mut mb = Mailbox::new(1, 0);
    mb.apply(1, &Effect::Register { device: b"d" });
    let ids: Vec<String> = (0..2500).map(|i| format!("m{i}")).collect();
    for id in &ids {
        store(&mut mb, id, vec![], 0);
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let (page, more) = mb.offline_page(b"d", after, 100);
        seen.extend(page.iter().map(|m| m.seq));
        if !more {
            break;
        }
        after = page.last().unwrap().seq;
    }
    assert_eq!(seen, (1..=2500).collect::<Vec<u64>>());
    let copy = roundtrip(&mb);
    assert_eq!(copy.log.len(), 2500);
    assert_eq!(copy.find_id(b"m1234"), Some(1235));
}

#[test]
fn drop_removes_for_everyone() {
    let mut mb = Mailbox::new(1, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"p",
            node: b"n",
        },
    );
    mb.apply(1, &Effect::Register { device: b"l" });
    let s = store(&mut mb, "a", vec![b"p"], 0);
    assert_eq!(mb.apply(2, &Effect::Drop { seq: s }), 1);
    assert_eq!(mb.pending_total(), 0);
    assert_eq!(mb.offline_info(b"l"), OfflineInfo::default());
    assert!(mb.log.is_empty());
}

#[test]
fn disconnect_moves_every_pending_message() {
    let mut mb = Mailbox::new(100, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    for id in ["a", "b", "c"] {
        store(&mut mb, id, vec![b"phone"], 0);
    }
    assert_eq!(mb.pending_total(), 3);
    for s in 100..103 {
        assert!(mb.log.get(s).is_some(), "{s}");
    }
    assert_eq!(mb.apply(2, &Effect::Disconnect { device: b"phone" }), 3);
    assert_eq!(mb.offline_info(b"phone").count, 3);
}

#[test]
fn disconnect_with_ids_in_stanza() {
    let base = 1_795_766_898_801_000u64;
    let mut mb = Mailbox::new(base, 0);
    mb.apply(
        1,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    let stanzas: Vec<String> = (0..3)
        .map(|i| format!("<message id='m{i}' type='chat'><body>x</body></message>"))
        .collect();
    for (i, s) in stanzas.iter().enumerate() {
        mb.apply(
            1_795_766_898_801 + i as i64 * 3,
            &Effect::Store {
                seq: base + i as u64,
                ts: 1_795_766_898_801 + i as i64 * 3,
                flags: 0,
                id: IdSpec::InStanza { off: 13, len: 2 },
                stanza: s.as_bytes(),
                pending: smallvec::smallvec![&b"phone"[..]],
            },
        );
    }
    for s in base..base + 3 {
        assert!(mb.log.get(s).is_some(), "{s}");
    }
    assert_eq!(mb.apply(2, &Effect::Disconnect { device: b"phone" }), 3);
}
