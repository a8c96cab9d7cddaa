//! What the timer owes a mailbox: when its next piece of work is due and,
//! at a given time, which resends, expiries, idle devices and expired
//! messages are due (SPEC §5, §6). Pure decisions; the sweep turns them
//! into effects. Times are Unix ms.

use super::{Effect, Mailbox};

/// The settings the timer's decisions depend on (SPEC §7), in ms.
#[derive(Clone, Copy, Debug)]
pub struct TimerSettings {
    /// `resend-interval`; 0: no resends.
    pub resend_interval: i64,
    /// `ack-timeout`.
    pub ack_timeout: i64,
    /// `device-idle`; 0: devices are never forgotten.
    pub device_idle: i64,
    /// `retention`; 0: messages are kept forever.
    pub retention: i64,
    /// `archive`: retention and `drop-oldest` hand messages to the archive
    /// queue instead of deleting them, and idle mailboxes are evicted.
    pub archive: bool,
    /// `mailbox-idle` (ms); 0: never. Eviction needs `archive`.
    pub mailbox_idle: i64,
}

/// The work due in one mailbox.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DueWork {
    /// Devices whose oldest pending delivery is older than the ack
    /// timeout: `(device index, that delivery's seq)`.
    pub expire: Vec<(usize, u64)>,
    /// Deliveries to send again, per device.
    pub resend: Vec<(usize, Vec<u64>)>,
    /// Offline devices not seen for `device_idle`.
    pub forget: Vec<usize>,
    /// Messages older than `retention`, to delete (`archive no`).
    pub drop: Vec<u64>,
    /// Messages older than `retention`, to queue for the archive
    /// (`archive yes`).
    pub queue: Vec<u64>,
    /// The mailbox was idle for `mailbox-idle` (with `archive yes`): it is
    /// evicted (and nothing else is done to it).
    pub evict: bool,
}

impl DueWork {
    /// Nothing is due.
    pub fn is_empty(&self) -> bool {
        self.expire.is_empty()
            && self.resend.is_empty()
            && self.forget.is_empty()
            && self.drop.is_empty()
            && self.queue.is_empty()
            && !self.evict
    }
}

fn min_opt(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Mailbox {
    /// True when applying `effects` cannot move the mailbox's next deadline
    /// (under the settings `s`) from the one the schedule holds for it, so
    /// that the schedule need not be touched: stores appended to a
    /// non-empty log, each pending only on devices that already wait for
    /// an older delivery. A new delivery goes behind those (its seq and
    /// time are the highest), so the oldest and least recently sent ones
    /// stay; the oldest message retention counts (one not queued for the
    /// archive: the log must hold one already) and every device's
    /// last-seen time stay as well. The eviction deadline follows the last
    /// change, so a store moves it: the schedule's deadline stays only
    /// while it is earlier than that one. False whenever the mailbox's
    /// schedule entry is not known.
    ///
    /// The answer must be exact, not merely safe: a replica applies the
    /// same effects with the same settings and keeps what its schedule
    /// holds, and an earlier deadline kept there would stay long past
    /// (the primary's timer moves its own on a visit that finds nothing
    /// to do, which replicates nothing) and show as the replica's lag.
    pub fn keeps_due(&self, effects: &[Effect<'_>], s: &TimerSettings) -> bool {
        let Some(held) = self.entry.get().due() else {
            return false;
        };
        self.eviction_due(s)
            .is_none_or(|at| held.is_some_and(|h| h < at))
            && self.log.len() > self.queued_count()
            && effects.iter().all(|e| match e {
                Effect::Store { message, pending } => {
                    let (seq, ts) = (&message.seq, &message.ts);
                    // Every last send is a store's time (at most the log's
                    // latest) or a resend's (at most the last change's time).
                    *seq >= self.next_seq
                        && *ts >= self.touched
                        && pending
                            .iter()
                            .all(|n| self.device(n).is_some_and(|d| !d.pending.is_empty()))
                }
                _ => false,
            })
    }

    /// When the next piece of timer work in this mailbox is due (ms), under
    /// the settings `s`; `None` when it has none.
    pub fn next_due(&self, s: &TimerSettings) -> Option<i64> {
        let mut due = None;
        for d in &self.devices {
            if let Some((since, _)) = d.pending.oldest() {
                due = min_opt(due, since.saturating_add(s.ack_timeout));
            }
            if s.resend_interval > 0 {
                if let Some((sent, _)) = d.pending.least_recently_sent() {
                    due = min_opt(due, sent.saturating_add(s.resend_interval));
                }
            }
            if s.device_idle > 0 && !d.online() {
                due = min_opt(due, d.last_seen().saturating_add(s.device_idle));
            }
        }
        if s.retention > 0 {
            if let Some(ts) = self.oldest_held_ts() {
                let from = ts.max(self.retention_floor());
                due = min_opt(due, from.saturating_add(s.retention));
            }
        }
        if let Some(at) = self.eviction_due(s) {
            due = min_opt(due, at);
        }
        due
    }

    /// When an idle mailbox is evicted (SPEC §6): `mailbox-idle` after it
    /// was last changed, with `archive yes`, while it holds messages or
    /// devices and is not evicted already.
    pub(super) fn eviction_due(&self, s: &TimerSettings) -> Option<i64> {
        let holds = !self.devices.is_empty() || self.log.len() > self.queued_count();
        (s.archive && s.mailbox_idle > 0 && holds && !self.is_evicted())
            .then(|| self.touched.saturating_add(s.mailbox_idle))
    }

    /// The work due at `now`, at most about `limit` items of it.
    pub fn due_work(&self, now: i64, s: &TimerSettings, limit: usize) -> DueWork {
        let mut w = DueWork::default();
        if self.eviction_due(s).is_some_and(|at| at <= now) {
            w.evict = true;
            return w;
        }
        let mut budget = limit.max(1);
        for (i, d) in self.devices.iter().enumerate() {
            if budget == 0 {
                break;
            }
            let expired = d
                .pending
                .oldest()
                .filter(|(since, _)| since.saturating_add(s.ack_timeout) <= now);
            if let Some((_, seq)) = expired {
                w.expire.push((i, seq));
                budget = budget.saturating_sub(d.pending.len());
            } else if s.resend_interval > 0 && !d.pending.is_empty() {
                let seqs = d.pending.sent_by(now - s.resend_interval, budget);
                if !seqs.is_empty() {
                    budget -= seqs.len();
                    w.resend.push((i, seqs));
                }
            }
            let offline_after = !d.online() || expired.is_some();
            if s.device_idle > 0
                && offline_after
                && d.last_seen().saturating_add(s.device_idle) <= now
            {
                w.forget.push(i);
            }
        }
        if s.retention > 0 {
            let floor = self.retention_floor();
            for m in self.held_from(0) {
                if budget == 0 || m.ts.max(floor).saturating_add(s.retention) > now {
                    break;
                }
                if s.archive {
                    w.queue.push(m.seq);
                } else {
                    w.drop.push(m.seq);
                }
                budget -= 1;
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::super::log::{IdSpec, Message};
    use super::super::Effect;
    use super::*;

    const S: TimerSettings = TimerSettings {
        resend_interval: 100,
        ack_timeout: 1000,
        device_idle: 10_000,
        retention: 100_000,
        archive: false,
        mailbox_idle: 0,
    };

    fn stored(now: i64) -> Mailbox {
        let mut mb = Mailbox::new(1, now);
        mb.apply(
            now,
            &Effect::Connect {
                device: b"p",
                node: b"n",
            },
        );
        for (i, id) in ["a", "b"].iter().enumerate() {
            let ts = now + i as i64 * 10;
            mb.apply(
                ts,
                &Effect::Store {
                    message: Message {
                        seq: mb.next_seq,
                        ts,
                        flags: 0,
                        id: IdSpec::Own(id.as_bytes()),
                        stanza: b"<message/>",
                    },
                    pending: smallvec::smallvec![&b"p"[..]],
                },
            );
        }
        mb
    }

    #[test]
    fn resend_then_expire() {
        let mut mb = stored(0);
        assert_eq!(mb.next_due(&S), Some(100));
        assert!(mb.due_work(99, &S, 100).is_empty());
        let w = mb.due_work(105, &S, 100);
        assert_eq!(w.resend, vec![(0, vec![1])]);
        mb.apply(
            105,
            &Effect::Resend {
                device: b"p",
                seqs: vec![1],
            },
        );
        assert_eq!(mb.next_due(&S), Some(110));
        assert_eq!(mb.devices[0].pending.get(1).unwrap().attempts, 2);
        let w = mb.due_work(1000, &S, 100);
        assert_eq!(w.expire, vec![(0, 1)]);
        assert!(w.resend.is_empty());
        assert_eq!(mb.apply(1000, &Effect::Expire { device: b"p" }), 2);
        assert!(!mb.devices[0].online());
        assert_eq!(mb.offline_info(b"p").count, 2);
        // Now offline: next is the idle deadline, from its last sighting.
        assert_eq!(mb.next_due(&S), Some(10_000));
        let w = mb.due_work(10_000, &S, 100);
        assert_eq!(w.forget, vec![0]);
    }

    #[test]
    fn retention_and_limits() {
        let mb = stored(0);
        let s = TimerSettings {
            resend_interval: 0,
            ack_timeout: 1_000_000,
            ..S
        };
        assert_eq!(mb.next_due(&s), Some(100_000));
        assert_eq!(mb.due_work(100_005, &s, 100).drop, vec![1]);
        assert_eq!(mb.due_work(200_000, &s, 1).drop, vec![1]);
        let keep = TimerSettings { archive: true, ..s };
        assert!(mb.due_work(200_000, &keep, 100).drop.is_empty());
    }

    /// A store to a mailbox whose earliest deadline is its eviction moves
    /// that deadline: `keeps_due` says so, and the schedule is told, on the
    /// primary and on a replica alike. Earlier deadlines stay put.
    #[test]
    fn a_store_moves_the_eviction_deadline() {
        let s = TimerSettings {
            archive: true,
            mailbox_idle: 1000,
            ..S
        };
        let mut mb = Mailbox::new(1, 0);
        mb.apply(0, &Effect::Register { device: b"p" });
        let store = |seq: u64, ts: i64| Effect::Store {
            message: Message {
                seq,
                ts,
                flags: 0,
                id: IdSpec::Own(b"x"),
                stanza: b"<message/>",
            },
            pending: Default::default(),
        };
        mb.apply(0, &store(1, 0));
        let hold = |mb: &Mailbox| {
            let due = mb.next_due(&s).unwrap();
            mb.entry.set(crate::schedule::Entry::At { due, id: 1 });
            due
        };
        assert_eq!(hold(&mb), 1000, "the eviction comes first");
        assert!(!mb.keeps_due(&[store(2, 500)], &s));
        mb.apply(500, &store(2, 500));
        assert_eq!(hold(&mb), 1500);
        // Without eviction the offline device's idle deadline comes first,
        // and a store leaves it.
        let no_evict = TimerSettings {
            mailbox_idle: 0,
            ..s
        };
        let due = mb.next_due(&no_evict).unwrap();
        mb.entry.set(crate::schedule::Entry::At { due, id: 1 });
        assert!(mb.keeps_due(&[store(3, 600)], &no_evict));
        mb.apply(600, &store(3, 600));
        assert_eq!(mb.next_due(&no_evict), Some(due));
    }
}
