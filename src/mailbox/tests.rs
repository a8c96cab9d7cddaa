use super::log::IdSpec;
use super::*;

fn store<'a>(mb: &mut Mailbox, id: &'a str, pending: Vec<&'a [u8]>, flags: u8) -> u64 {
    store_at(mb, id, pending, flags, 1000)
}

/// An empty mailbox whose one device, `phone` on node `n`, registered and
/// went offline at time 0: what it is given is kept offline.
fn offline_phone() -> Mailbox {
    let mut mb = Mailbox::new(1, 0);
    mb.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    mb.apply(0, &Effect::Disconnect { device: b"phone" });
    mb
}

/// Stores a message with time `ts` (Unix ms).
fn store_at<'a>(mb: &mut Mailbox, id: &'a str, pending: Vec<&'a [u8]>, flags: u8, ts: i64) -> u64 {
    let seq = mb.next_seq;
    let stanza = format!("<message id='{id}'><body>hello</body></message>");
    mb.apply(
        seq as i64,
        &Effect::Store {
            message: Message {
                seq,
                ts,
                flags,
                id: IdSpec::Own(id.as_bytes()),
                stanza: stanza.as_bytes(),
            },
            pending: pending.into(),
        },
    );
    seq
}

fn online(mb: &Mailbox) -> Vec<&[u8]> {
    mb.devices
        .iter()
        .filter(|d| d.online())
        .map(|d| d.name())
        .collect()
}

fn roundtrip(mb: &Mailbox) -> Mailbox {
    let (mut copy, n) = Mailbox::decode_header(&mb.encode_header()).unwrap();
    mb.encode_messages(100, |b| {
        copy.load_messages(b, &mut ids::Maybe::default()).unwrap();
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
    assert_eq!(mb.devices[0].node(), b"n2");
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
                message: Message {
                    seq: base + i as u64,
                    ts: 1_795_766_898_801 + i as i64 * 3,
                    flags: 0,
                    id: IdSpec::InStanza { off: 13, len: 2 },
                    stanza: s.as_bytes(),
                },
                pending: smallvec::smallvec![&b"phone"[..]],
            },
        );
    }
    for s in base..base + 3 {
        assert!(mb.log.get(s).is_some(), "{s}");
    }
    assert_eq!(mb.apply(2, &Effect::Disconnect { device: b"phone" }), 3);
}

use crate::test_rng::Rng;

/// `keeps_due` says a change cannot move the mailbox's next deadline; for
/// every change it says so of, recomputing the deadline after the change
/// must give the one before. Random mailboxes (devices online or not, with
/// deliveries pending since various times, resent or not), random settings
/// and random stores, as the command makes them (the next seq, a time no
/// earlier than the mailbox's latest, pending on chosen devices).
#[test]
fn keeps_due_agrees_with_recomputing_the_deadline() {
    use super::due::TimerSettings;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let mut kept = 0;
    let mut kept_evictable = 0;
    for case in 0..5_000 {
        let s = TimerSettings {
            resend_interval: [0, 50, 500][rng.below(3) as usize],
            ack_timeout: [100, 1000, 10_000][rng.below(3) as usize],
            device_idle: [0, 200, 5000][rng.below(3) as usize],
            retention: [0, 300, 100_000][rng.below(3) as usize],
            archive: rng.below(4) == 0,
            mailbox_idle: [0, 0, 400][rng.below(3) as usize],
        };
        let mut now = 1000 + rng.below(1000) as i64;
        let mut mb = Mailbox::new(1, now);
        // A history of connects, stores, resends, disconnects and acks.
        for _ in 0..rng.below(12) {
            now += rng.below(300) as i64;
            let d = names[rng.below(4) as usize];
            match rng.below(6) {
                0 | 1 => {
                    mb.apply(
                        now,
                        &Effect::Connect {
                            device: d,
                            node: b"n",
                        },
                    );
                }
                2 | 3 => {
                    let owned: Vec<Vec<u8>> = mb
                        .devices
                        .iter()
                        .filter(|x| x.online())
                        .map(|x| x.name().to_vec())
                        .collect();
                    let pending: Vec<&[u8]> = owned
                        .iter()
                        .filter(|_| rng.below(3) != 0)
                        .map(|x| &x[..])
                        .collect();
                    let seq = mb.next_seq;
                    let ts = mb.log.max_ts().max(now);
                    mb.apply(
                        now,
                        &Effect::Store {
                            message: Message {
                                seq,
                                ts,
                                flags: 0,
                                id: IdSpec::Own(format!("h{seq}").as_bytes()),
                                stanza: b"<message/>",
                            },
                            pending: pending.into(),
                        },
                    );
                }
                4 => {
                    let seqs: Vec<u64> = mb
                        .device(d)
                        .map(|x| x.pending.iter().map(|(q, _)| q).collect())
                        .unwrap_or_default();
                    mb.apply(now, &Effect::Resend { device: d, seqs });
                }
                5 if s.archive && rng.below(2) == 0 => {
                    // Every message handed to the archive queue, as
                    // retention with `archive yes` does.
                    let seqs: Vec<u64> = mb.log.iter_from(0).map(|m| m.seq).collect();
                    if !seqs.is_empty() {
                        mb.apply(now, &Effect::Queue { seqs });
                    }
                }
                _ => {
                    mb.apply(now, &Effect::Disconnect { device: d });
                }
            }
        }
        // As the schedule holds it.
        let before = mb.next_due(&s);
        mb.entry.set(match before {
            Some(due) => crate::schedule::Entry::At { due, id: 1 },
            None => crate::schedule::Entry::Idle,
        });
        // One or two stores, as IM.STORE makes them.
        now += rng.below(300) as i64;
        let mut stores = Vec::new();
        let first = mb.next_seq;
        for (seq, k) in (first..).zip(0..1 + rng.below(2)) {
            let pending: Vec<&[u8]> = names
                .iter()
                .copied()
                .filter(|_| rng.below(2) == 0)
                .collect();
            stores.push((seq, mb.log.max_ts().max(now) + k as i64, pending));
        }
        let ids: Vec<String> = stores.iter().map(|(q, _, _)| format!("n{q}")).collect();
        let effects: Vec<Effect<'_>> = stores
            .iter()
            .zip(&ids)
            .map(|((seq, ts, pending), id)| Effect::Store {
                message: Message {
                    seq: *seq,
                    ts: *ts,
                    flags: 0,
                    id: IdSpec::Own(id.as_bytes()),
                    stanza: b"<message/>",
                },
                pending: pending.clone().into(),
            })
            .collect();
        if mb.keeps_due(&effects, &s) {
            kept += 1;
            if mb.eviction_due(&s).is_some() {
                kept_evictable += 1;
            }
            for e in &effects {
                mb.apply(now, e);
            }
            // Exactly the same deadline, the eviction one included (a
            // replica keeps what its schedule holds: an earlier deadline
            // left there would show as its lag).
            assert_eq!(
                mb.next_due(&s),
                before,
                "case {case}: keeps_due said the deadline stays ({s:?})"
            );
        }
    }
    // The property is not vacuous: many changes were said to keep it,
    // some in mailboxes with an eviction deadline.
    assert!(kept > 200, "only {kept} cases kept the deadline");
    assert!(
        kept_evictable > 10,
        "only {kept_evictable} cases with an eviction deadline kept it"
    );
}

/// The id index keeps 32-bit offsets from a base seq: a message imported
/// below the base, or a seq more than 2^32 above it, rebuilds the index
/// around a new base, and every id is still found.
#[test]
fn the_id_index_rebases_and_finds_every_id() {
    let mut mb = Mailbox::new(1_000_000, 0);
    mb.apply(
        0,
        &Effect::Connect {
            device: b"p",
            node: b"n",
        },
    );
    let mut seqs = Vec::new();
    for (i, seq) in [1_000_000u64, 1_000_001, 999_990, 1_000_000 + (1 << 33), 5]
        .into_iter()
        .enumerate()
    {
        let id = format!("m{i}");
        let stanza = format!("<message id='{id}'/>");
        mb.apply(
            0,
            &Effect::Store {
                message: Message {
                    seq,
                    ts: 0,
                    flags: 0,
                    id: IdSpec::Own(id.as_bytes()),
                    stanza: stanza.as_bytes(),
                },
                pending: Default::default(),
            },
        );
        seqs.push((id, seq));
        for (id, seq) in &seqs {
            assert_eq!(mb.find_id(id.as_bytes()), Some(*seq), "{id} after {i}");
        }
    }
    assert_eq!(mb.find_id(b"nope"), None);
    // Removing one keeps the others.
    mb.apply(0, &Effect::Drop { seq: 999_990 });
    assert_eq!(mb.find_id(b"m2"), None);
    assert_eq!(mb.find_id(b"m3"), Some(1_000_000 + (1 << 33)));
}

/// The decoder refuses bytes that do not make a mailbox: every cut of a
/// real encoding, and every single-byte change that breaks it, answers
/// `None` or a mailbox that encodes again to the same bytes — never a
/// panic, never a mailbox that says something else.
#[test]
fn the_decoder_refuses_corrupt_bytes() {
    let mut mb = Mailbox::new(10, 0);
    mb.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n1",
        },
    );
    mb.apply(
        0,
        &Effect::Connect {
            device: b"laptop",
            node: b"n2",
        },
    );
    mb.apply(0, &Effect::Disconnect { device: b"laptop" });
    for i in 0..5 {
        store(&mut mb, &format!("m{i}"), vec![b"phone"], 0);
    }
    let head = mb.encode_header();
    let mut msgs = Vec::new();
    mb.encode_messages(1 << 20, |b| msgs.extend_from_slice(b));
    assert!(Mailbox::decode_header(&head).is_some());
    for cut in 0..head.len() {
        assert!(
            Mailbox::decode_header(&head[..cut]).is_none(),
            "header cut at {cut}"
        );
    }
    for cut in 0..msgs.len() {
        let (mut copy, _) = Mailbox::decode_header(&head).unwrap();
        if let Some(n) = copy.load_messages(&msgs[..cut], &mut ids::Maybe::default()) {
            assert!(n < 5, "a cut at {cut} loaded every message");
        }
    }
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let mut h = head.clone();
        let mut m = msgs.clone();
        if rng.below(2) == 0 {
            let i = rng.below(h.len() as u64) as usize;
            h[i] = rng.next() as u8;
        } else {
            let i = rng.below(m.len() as u64) as usize;
            m[i] = rng.next() as u8;
        }
        let Some((mut copy, n)) = Mailbox::decode_header(&h) else {
            continue;
        };
        if copy.load_messages(&m, &mut ids::Maybe::default()) == Some(n) {
            // Whatever was accepted is a consistent mailbox: it encodes
            // again to what its own decoding gives.
            let again = roundtrip(&copy);
            assert_eq!(again.encode_header(), copy.encode_header());
        }
    }
}

/// The archive queue (SPEC §6): queued messages leave the devices but not
/// the log; acked ones leave; unqueued ones come back, owed to every
/// device; an eviction queues everything and forgets the devices; the
/// state survives the encoding and a decoder refuses a queue that
/// contradicts the rest.
#[test]
fn archive_queue_lifecycle_and_encoding() {
    let mut mb = Mailbox::new(1, 0);
    mb.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    mb.apply(
        0,
        &Effect::Connect {
            device: b"laptop",
            node: b"n",
        },
    );
    mb.apply(0, &Effect::Disconnect { device: b"laptop" });
    let seqs: Vec<u64> = (0..4)
        .map(|i| store(&mut mb, &format!("m{i}"), vec![b"phone"], 0))
        .collect();
    assert_eq!(
        mb.apply(
            5,
            &Effect::Queue {
                seqs: seqs[..2].to_vec()
            }
        ),
        2
    );
    assert_eq!(mb.queued_count(), 2);
    assert_eq!(mb.log.len(), 4);
    assert_eq!(mb.offline_info(b"laptop").count, 2);
    assert_eq!(mb.devices[0].pending.len(), 2);
    let a = mb.archive.as_ref().unwrap();
    assert_eq!(a.owed_by(seqs[0]), vec![&b"phone"[..], &b"laptop"[..]]);
    assert_eq!(mb.oldest_held().map(|m| m.seq), Some(seqs[2]));
    assert_eq!(mb.oldest_held_ts(), mb.oldest_held().map(|m| m.ts));
    // The encoding carries the queue; a copy equals the original.
    let copy = roundtrip(&mb);
    assert_eq!(copy.queued_count(), 2);
    assert!(copy.archive_consistent());
    // Ack one, bring the other back.
    assert_eq!(
        mb.apply(
            6,
            &Effect::ArchiveAck {
                seqs: vec![seqs[0], seqs[2]]
            }
        ),
        1
    );
    assert_eq!(mb.log.len(), 3);
    assert_eq!(
        mb.apply(
            7,
            &Effect::Unqueue {
                seqs: vec![seqs[1]]
            }
        ),
        1
    );
    assert_eq!(mb.offline_info(b"laptop").count, 3);
    assert_eq!(mb.offline_info(b"phone").count, 1);
    assert_eq!(mb.retention_floor(), 7);
    // Eviction: everything queued, devices forgotten; acks are counted
    // for the tombstone; a device coming back gets what is still queued.
    let held = mb.log.len();
    assert_eq!(mb.apply(8, &Effect::Evict), held);
    assert!(mb.devices.is_empty() && mb.is_evicted());
    let first = mb.log.first().unwrap().seq;
    mb.apply(9, &Effect::ArchiveAck { seqs: vec![first] });
    assert_eq!(mb.archived(), 1);
    assert_eq!(mb.apply(10, &Effect::ComeBack), held - 1);
    assert!(!mb.is_evicted() && mb.queued_count() == 0);
    mb.apply(
        10,
        &Effect::Connect {
            device: b"tablet",
            node: b"n",
        },
    );
    assert_eq!(mb.offline_info(b"tablet").count, held - 1);
    assert_eq!(mb.archived(), 1);
    mb.apply(11, &Effect::Imported);
    assert_eq!(mb.archived(), 0);
    // A tombstone: nothing held, but what the archive took is remembered.
    let mut tomb = Mailbox::new(100, 0);
    store(&mut tomb, "t", vec![], 0);
    tomb.apply(1, &Effect::Evict);
    let s = tomb.log.first().unwrap().seq;
    tomb.apply(2, &Effect::ArchiveAck { seqs: vec![s] });
    assert!(tomb.log.is_empty() && !tomb.is_empty());
    assert_eq!(roundtrip(&tomb).archived(), 1);
}

#[test]
fn the_decoder_refuses_a_queue_that_contradicts_the_mailbox() {
    let mut mb = offline_phone();
    let a = store(&mut mb, "a", vec![], 0);
    let b = store(&mut mb, "b", vec![], 0);
    mb.apply(1, &Effect::Queue { seqs: vec![a] });
    // A queued seq the log does not hold.
    let mut other = Mailbox::new(1, 0);
    other.archive = Some(Box::default());
    other.archive.as_mut().unwrap().queued.insert(b + 100);
    let head = other.encode_header();
    let (loaded, _) = Mailbox::decode_header(&head).unwrap();
    assert!(!loaded.archive_consistent());
    // A queued seq a device still owes.
    let mut owing = Mailbox::new(1, 0);
    owing.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    owing.apply(0, &Effect::Disconnect { device: b"phone" });
    let c = store(&mut owing, "c", vec![], 0);
    owing.archive = Some(Box::default());
    owing.archive.as_mut().unwrap().queued.insert(c);
    let head = owing.encode_header();
    let (mut loaded, n) = Mailbox::decode_header(&head).unwrap();
    owing.encode_messages(1 << 20, |m| {
        loaded.load_messages(m, &mut ids::Maybe::default()).unwrap();
    });
    assert_eq!(loaded.log.len(), n);
    assert!(!loaded.archive_consistent());
    assert!(roundtrip(&mb).archive_consistent());
}

/// A payload naming an offline range of 10^11 seqs over a log of one
/// message (a forged `RESTORE`) decodes, but is refused as inconsistent
/// before any command or the timer sees it.
#[test]
fn a_mailbox_whose_ranges_claim_more_than_its_log_is_refused() {
    let mut mb = offline_phone();
    store(&mut mb, "m", vec![], 0);
    assert_eq!(mb.consistent(), Ok(()));
    assert_eq!(roundtrip(&mb).consistent(), Ok(()));
    let mut forged = Mailbox::new(1, 0);
    forged.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n",
        },
    );
    forged.apply(0, &Effect::Disconnect { device: b"phone" });
    store(&mut forged, "m", vec![], 0);
    let seq = forged.log.first().unwrap().seq;
    let d = &mut forged.devices[0];
    d.offline = offline::Offline::from_parts(
        [(seq, seq + 100_000_000_000)],
        d.offline_count(),
        d.offline_bytes(),
    )
    .unwrap();
    let head = forged.encode_header();
    let (mut loaded, n) = Mailbox::decode_header(&head).unwrap();
    forged.encode_messages(1 << 20, |b| {
        loaded.load_messages(b, &mut ids::Maybe::default()).unwrap();
    });
    assert_eq!(loaded.log.len(), n);
    assert!(loaded.consistent().is_err());
    // A node name with a NUL.
    let mut bad = Mailbox::new(1, 0);
    bad.apply(
        0,
        &Effect::Connect {
            device: b"phone",
            node: b"n\x00",
        },
    );
    assert!(bad.consistent().is_err());
    // Forgetting such a device anyway costs what the log holds, not the span.
    forged.apply(1, &Effect::Forget { device: b"phone" });
}

/// A restored mailbox whose counter is past the seqs a RESP integer
/// carries is refused: its next store could only answer a seq no client
/// can read back (the counter may reach one past `MAX_SEQ`, no further).
#[test]
fn a_mailbox_whose_counter_is_past_the_last_seq_is_refused() {
    let mb = Mailbox::new(crate::mailbox::MAX_SEQ + 1, 0);
    assert_eq!(roundtrip(&mb).consistent(), Ok(()));
    let forged = Mailbox::new(crate::mailbox::MAX_SEQ + 2, 0);
    assert!(roundtrip(&forged).consistent().is_err());
}

/// Seq 0 is no message (a page starts `AFTER 0`; `first` 0 means none): a
/// restored mailbox holding one is refused.
#[test]
fn a_mailbox_holding_seq_0_is_refused() {
    let mut mb = Mailbox::new(0, 0);
    store(&mut mb, "m", vec![], 0);
    assert_eq!(mb.log.first().map(|m| m.seq), Some(0));
    assert!(roundtrip(&mb).consistent().is_err());
    let mut fine = Mailbox::new(1, 0);
    store(&mut fine, "m", vec![], 0);
    assert_eq!(roundtrip(&fine).consistent(), Ok(()));
}

/// The sizes the memory goals rest on (docs/DESIGN.md, "Memory layout of a
/// mailbox"): a device (at most 40 bytes: a mailbox's second and third
/// devices then add 48 bytes on average with jemalloc's classes), its
/// offline summary and its empty pending queues; a short label's one
/// allocation, and none more for one offline message.
#[test]
fn a_device_stays_small() {
    assert!(std::mem::size_of::<Device>() <= 40);
    assert_eq!(std::mem::size_of::<offline::Offline>(), 16);
    assert_eq!(std::mem::size_of::<Deliveries>(), 8);
    let d = Device::new(b"phone", DEFAULT_NODE, false, 0);
    assert_eq!(d.heap_bytes(), 5, "the default node costs nothing");
    assert_eq!((d.name(), d.node()), (&b"phone"[..], DEFAULT_NODE));
    let mut d = Device::new(b"tablet", b"n1", true, 7);
    assert_eq!((d.name(), d.node()), (&b"tablet"[..], &b"n1"[..]));
    assert_eq!((d.heap_bytes(), d.online(), d.last_seen()), (8, true, 7));
    d.offline.insert(10, 190);
    assert_eq!(
        (d.offline_count(), d.offline_bytes(), d.heap_bytes()),
        (1, 190, 8)
    );
    d.set_node(DEFAULT_NODE);
    d.set_online(false);
    d.set_last_seen(9);
    assert_eq!(
        (
            d.name(),
            d.node(),
            d.heap_bytes(),
            d.online(),
            d.last_seen()
        ),
        (&b"tablet"[..], DEFAULT_NODE, 6, false, 9)
    );
}

/// Retention counts from the oldest message the mailbox holds for its
/// devices: the log's first while nothing is queued, the first not queued
/// once the archive queue holds the front.
#[test]
fn retention_counts_from_the_oldest_held_message() {
    use super::due::TimerSettings;
    let mut mb = offline_phone();
    for (i, ts) in [1000i64, 2000, 3000].into_iter().enumerate() {
        store_at(&mut mb, &format!("m{i}"), Vec::new(), 0, ts);
    }
    let s = TimerSettings {
        resend_interval: 0,
        ack_timeout: 1,
        device_idle: 0,
        retention: 10,
        archive: false,
        mailbox_idle: 0,
    };
    assert_eq!(mb.oldest_held_ts(), Some(1000));
    assert_eq!(mb.next_due(&s), Some(1010));
    mb.apply(5000, &Effect::Queue { seqs: vec![1] });
    assert_eq!(mb.oldest_held_ts(), Some(2000));
    assert_eq!(mb.oldest_held_ts(), mb.oldest_held().map(|m| m.ts));
    assert_eq!(mb.next_due(&s), Some(2010));
}

/// Devices' offline summaries and labels under random changes: after every
/// change the mailbox is consistent (each device's offline count and bytes
/// agree with its ranges and the log) and encodes back to itself. Stores
/// pending on some devices and volatile ones leave gaps in the others'
/// runs, acks and drops cut them anywhere, so the summaries move between
/// their inline run and the boxed spread; some times and a node are too
/// large for a label's word.
#[test]
fn offline_summaries_and_labels_stay_consistent() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let names: [&[u8]; 3] = [
        b"phone",
        b"tablet",
        b"a-device-name-longer-than-eight-bytes",
    ];
    let long_node = vec![b'n'; 256];
    let nodes: [&[u8]; 4] = [b"n1", DEFAULT_NODE, b"node-2", &long_node];
    for case in 0..200 {
        let mut mb = Mailbox::new(1, 0);
        for step in 0..200 {
            let now = match rng.below(50) {
                0 => i64::MAX,
                1 => -(1 << 50),
                _ => 1_732_690_028_123 + step,
            };
            let d = names[rng.below(3) as usize];
            let held: Vec<u64> = mb.log.iter_from(0).map(|m| m.seq).collect();
            let some_seq = if held.is_empty() {
                mb.next_seq
            } else {
                held[rng.below(held.len() as u64) as usize]
            };
            match rng.below(10) {
                0..=3 => {
                    let on: Vec<&[u8]> = mb
                        .devices
                        .iter()
                        .filter(|x| x.online() && rng.below(2) == 0)
                        .map(|x| x.name())
                        .collect();
                    let flags = if rng.below(4) == 0 {
                        super::log::VOLATILE
                    } else {
                        0
                    };
                    let id = format!("m{case}-{step}");
                    let stanza =
                        format!("<message id='{id}'>{}</message>", "x".repeat(step as usize));
                    let seq = mb.next_seq;
                    let on: Vec<Vec<u8>> = on.into_iter().map(<[u8]>::to_vec).collect();
                    mb.apply(
                        now,
                        &Effect::Store {
                            message: Message {
                                seq,
                                ts: now,
                                flags,
                                id: IdSpec::Own(id.as_bytes()),
                                stanza: stanza.as_bytes(),
                            },
                            pending: on.iter().map(Vec::as_slice).collect(),
                        },
                    );
                }
                4 => {
                    let node = nodes[rng.below(4) as usize];
                    mb.apply(now, &Effect::Connect { device: d, node });
                }
                5 => {
                    mb.apply(now, &Effect::Disconnect { device: d });
                }
                6 => {
                    let seqs = smallvec::smallvec![some_seq];
                    mb.apply(now, &Effect::Ack { device: d, seqs });
                }
                7 => {
                    mb.apply(now, &Effect::Drop { seq: some_seq });
                }
                8 => {
                    let upto = some_seq.saturating_sub(rng.below(3));
                    mb.apply(now, &Effect::AckUpto { device: d, upto });
                }
                _ => {
                    if rng.below(8) == 0 {
                        mb.apply(now, &Effect::Forget { device: d });
                    } else {
                        mb.apply(now, &Effect::Register { device: d });
                    }
                }
            }
            assert_eq!(mb.consistent(), Ok(()), "case {case}, step {step}");
            if step % 20 == 0 {
                let copy = roundtrip(&mb);
                // The encoding is the same (`roundtrip`); so are the reads.
                // (A range set past sixteen ranges stays a tree when it
                // shrinks, so shapes may differ.)
                let reads = |m: &Mailbox| -> Vec<_> {
                    m.devices
                        .iter()
                        .map(|x| {
                            let ranges: Vec<(u64, u64)> = x.offline.ranges().collect();
                            let summary = (x.offline_count(), x.offline_bytes(), ranges);
                            let label = (x.name().to_vec(), x.node().to_vec(), x.online());
                            (label, x.last_seen(), summary, x.pending.len())
                        })
                        .collect()
                };
                assert_eq!(reads(&copy), reads(&mb), "case {case}, step {step}");
            }
        }
    }
}

/// A mailbox with its first device inline stays in jemalloc's 224-byte
/// class (docs/DESIGN.md, "Memory layout of a mailbox"), and that device
/// costs no more room than a vector's element would.
#[test]
fn a_mailbox_with_its_first_device_fits_its_size_class() {
    assert!(
        std::mem::size_of::<Mailbox>() <= 224,
        "{}",
        std::mem::size_of::<Mailbox>()
    );
    assert_eq!(
        std::mem::size_of::<Option<Device>>(),
        std::mem::size_of::<Device>()
    );
}

/// A mailbox whose messages repeat an id (no command stores one; a crafted
/// `RESTORE` payload may hold one) loads with every message kept, and the
/// load counts each repeat, whether the id is found by reading the log (a
/// few messages) or in the id table, and across batches; then an id finds
/// its messages in seq order, the next once the one before has gone.
#[test]
fn a_repeated_id_is_counted_on_load_and_every_message_is_kept() {
    for n in [2u64, 3, 8, 9, 10, 12, 15, 16, 17, 30, 100, 1000, 5000] {
        let mut mb = offline_phone();
        let mut repeats = vec![0, n / 2, n - 1];
        repeats.dedup();
        let ids: Vec<String> = (0..n)
            .map(|i| match repeats.contains(&i) {
                true => "dup".to_string(),
                false => format!("m{i}"),
            })
            .collect();
        let seqs: Vec<u64> = ids.iter().map(|id| store(&mut mb, id, vec![], 0)).collect();
        for batch in [100, 1 << 20] {
            let (mut copy, count) = Mailbox::decode_header(&mb.encode_header()).unwrap();
            let mut maybe = ids::Maybe::default();
            mb.encode_messages(batch, |b| {
                copy.load_messages(b, &mut maybe).unwrap();
            });
            let repeated = copy.repeated_ids(&mut maybe);
            assert_eq!(copy.log.len(), count);
            assert_eq!(repeated, repeats.len() as u64 - 1, "{n} messages");
            assert_eq!(copy.consistent(), Ok(()));
            for (id, &seq) in ids.iter().zip(&seqs) {
                if id != "dup" {
                    assert_eq!(copy.find_id(id.as_bytes()), Some(seq), "{n} messages");
                }
            }
            for &i in &repeats {
                let seq = seqs[i as usize];
                assert_eq!(copy.find_id(b"dup"), Some(seq), "{n} messages");
                let ack = Effect::Ack {
                    device: b"phone",
                    seqs: smallvec::smallvec![seq],
                };
                assert_eq!(copy.apply(1, &ack), 1);
            }
            assert_eq!(copy.find_id(b"dup"), None);
            assert_eq!(copy.log.len(), n - repeats.len() as u64);
        }
    }
    // Without a repeat, none is counted.
    let mut mb = Mailbox::new(1, 0);
    for i in 0..100 {
        store(&mut mb, &format!("m{i}"), vec![], 0);
    }
    let (mut copy, _) = Mailbox::decode_header(&mb.encode_header()).unwrap();
    let mut maybe = ids::Maybe::default();
    mb.encode_messages(100, |b| {
        copy.load_messages(b, &mut maybe).unwrap();
    });
    assert_eq!(copy.repeated_ids(&mut maybe), 0);
}

/// `MEMORY USAGE` counts a mailbox's archive state: a queued message adds
/// the state, and a queue scattered over many ranges adds more.
#[test]
fn the_archive_queue_counts_in_memory_usage() {
    let mut mb = offline_phone();
    let seqs: Vec<u64> = (0..40)
        .map(|i| store(&mut mb, &format!("m{i}"), vec![], 0))
        .collect();
    let before = mb.mem_usage();
    mb.apply(
        1,
        &Effect::Queue {
            seqs: vec![seqs[0]],
        },
    );
    let one = mb.mem_usage();
    assert!(
        one >= before + std::mem::size_of::<super::archive::Archive>(),
        "{before} {one}"
    );
    // Every other message: 20 ranges.
    let scattered: Vec<u64> = seqs.iter().copied().skip(2).step_by(2).collect();
    mb.apply(1, &Effect::Queue { seqs: scattered });
    assert!(mb.mem_usage() >= one + 19 * 40, "{one} {}", mb.mem_usage());
}
