#![warn(missing_docs)]
//! The domain core: one user's mailbox, its devices and what each device is
//! owed. Plain Rust, no server: every change is an [`Effect`], applied the
//! same way on the primary, on a replica and when the AOF is replayed.

pub mod archive;
mod chunks;
pub mod devices;
pub mod due;
pub mod effect;
pub mod ids;
mod label;
pub mod log;
pub mod offline;
pub mod pending;
pub mod persist;
pub mod rangeset;
pub mod store;

use label::Label;
use log::{IdSpec, Log, Msg, NewMsg, ACKED, VOLATILE};
use offline::Offline;
pub use pending::{Deliveries, Pending};

pub use effect::Effect;
use ids::IdIndex;
pub use log::Message;
pub use store::room_for;

/// Most bytes of a message id (SPEC §3).
pub const MAX_ID: usize = 1024;

/// The highest seq a message may have: seqs are RESP integers in every
/// reply and event (SPEC §3), so at most `i64::MAX`. A mailbox's counter
/// (`next_seq`) is at most one more; a store that would pass it is refused
/// ([`store::Refusal::SeqExhausted`]) rather than given a seq no reply can
/// carry.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Most devices a mailbox registers (a message records how many owe it
/// in 11 bits of its header).
pub const MAX_DEVICES: usize = 2000;

/// Device and node names are at most this many bytes (SPEC §8).
pub const MAX_NAME: usize = 256;

/// The node name kept for the module's channel of push hints, after the
/// event prefix (SPEC §5): one for the deployment, since an offline device
/// has no node.
pub const PUSH_NODE: &[u8] = b"push";

/// The node name kept for the module's channel of restore requests, after
/// the event prefix (SPEC §6).
pub const ARCHIVE_NODE: &[u8] = b"archive";

/// Why a node name is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BadNode {
    /// Empty, longer than [`MAX_NAME`], or holding a byte outside
    /// `A-Z a-z 0-9 . _ : -` (the name becomes part of a Pub/Sub channel's).
    Bytes,
    /// [`PUSH_NODE`] or [`ARCHIVE_NODE`]: a device's events (a resend
    /// carries its stanza) would land where push services or archivers
    /// listen.
    Reserved,
}

/// Whether `node` may name the node of a device's session (SPEC §2, §8):
/// the one rule of `IM.CONNECT ... NODE` and of loading a mailbox.
pub fn check_node(node: &[u8]) -> Result<(), BadNode> {
    let bytes_ok = !node.is_empty()
        && node.len() <= MAX_NAME
        && node
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if !bytes_ok {
        Err(BadNode::Bytes)
    } else if node == PUSH_NODE || node == ARCHIVE_NODE {
        Err(BadNode::Reserved)
    } else {
        Ok(())
    }
}

/// One client installation of the user (SPEC §1: an XMPP resource or a
/// device id), registered in the mailbox by `IM.CONNECT`, an ack or a store
/// that names it. 40 bytes, and no allocation beyond its label's names
/// while it owes nothing or one run of offline messages; one pending
/// delivery adds one 64-byte allocation (docs/DESIGN.md, "Memory layout of
/// a mailbox").
#[derive(Debug, PartialEq, Eq)]
pub struct Device {
    /// Its name ([`Device::name`]), its node's name ([`Device::node`];
    /// empty for [`DEFAULT_NODE`]), whether it is online
    /// ([`Device::online`]) and when it was last seen
    /// ([`Device::last_seen`]): 16 bytes and one allocation of the names,
    /// the allocator's smallest (8 bytes) for a name and node of 8 bytes.
    label: Label,
    /// The messages pending on its session, waiting for its ack.
    pub pending: Deliveries,
    /// Its offline messages: their seqs, how many and their bytes (SPEC
    /// §1, §4).
    pub offline: Offline,
}

/// The node of a device whose `IM.CONNECT` named none (SPEC §2).
pub const DEFAULT_NODE: &[u8] = b"default";

impl Device {
    /// A device named `name` (1 to 256 bytes, checked by the commands and
    /// by loading; SPEC §8), of `node`, registered at `now` (Unix ms),
    /// owing nothing.
    pub fn new(name: &[u8], node: &[u8], online: bool, now: i64) -> Device {
        Device {
            label: Label::new(name, Self::stored_node(node), online, now),
            pending: Deliveries::default(),
            offline: Offline::default(),
        }
    }

    /// What the label keeps of `node`: nothing for [`DEFAULT_NODE`].
    fn stored_node(node: &[u8]) -> &[u8] {
        if node == DEFAULT_NODE {
            &[]
        } else {
            node
        }
    }

    /// Its name: any bytes (1 to 256; SPEC §8).
    #[inline]
    pub fn name(&self) -> &[u8] {
        self.label.name()
    }

    /// The node that holds, or last held, its session: its events go to
    /// `<event-prefix><node>` (SPEC §5); [`DEFAULT_NODE`] until a connect
    /// names one.
    pub fn node(&self) -> &[u8] {
        match self.label.node() {
            [] => DEFAULT_NODE,
            node => node,
        }
    }

    /// Records the node of its session (`IM.CONNECT ... NODE`, SPEC §2).
    pub fn set_node(&mut self, node: &[u8]) {
        if self.node() != node {
            self.label = self.label.with_node(Self::stored_node(node));
        }
    }

    /// A live session holds it: from `IM.CONNECT` until `IM.DISCONNECT`,
    /// an expiry or a kick (SPEC §2, §5).
    #[inline]
    pub fn online(&self) -> bool {
        self.label.online()
    }

    /// Marks it online (a connect) or not (a disconnect, an expiry, a
    /// kick).
    pub fn set_online(&mut self, online: bool) {
        self.label.set_online(online);
    }

    /// When it was last registered, connected, disconnected or acked (Unix
    /// ms); `device-idle` counts from here (SPEC §5).
    pub fn last_seen(&self) -> i64 {
        self.label.last_seen()
    }

    /// Records when it was last seen (Unix ms).
    pub fn set_last_seen(&mut self, now: i64) {
        self.label.set_last_seen(now);
    }

    /// How many offline messages it has (SPEC §4).
    pub fn offline_count(&self) -> u64 {
        self.offline.count()
    }

    /// The sum of its offline messages' stanzas' sizes (bytes; SPEC §4).
    pub fn offline_bytes(&self) -> u64 {
        self.offline.bytes()
    }

    /// Heap bytes held (for `MEMORY USAGE`), beside the device itself.
    pub fn heap_bytes(&self) -> usize {
        self.label.heap_bytes() + self.pending.heap_bytes() + self.offline.heap_bytes()
    }

    /// Every seq this device still owes (pending, then offline), as the
    /// log holds them: linear in the messages, whatever span a range
    /// claims.
    fn owed(&self, log: &Log) -> Vec<u64> {
        let mut v: Vec<u64> = self.pending.iter().map(|(s, _)| s).collect();
        for (s, e) in self.offline.ranges() {
            v.extend(log.range(s, e).map(|m| m.seq));
        }
        v
    }
}

/// A device's offline summary (`IM.OFFLINE.INFO`, SPEC §4).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OfflineInfo {
    /// How many messages.
    pub count: u64,
    /// The sum of their stanzas' sizes (bytes).
    pub bytes: u64,
    /// The lowest seq; 0 when none.
    pub first: u64,
    /// The highest seq; 0 when none.
    pub last: u64,
}

/// One user's mailbox.
pub struct Mailbox {
    /// The seq the next stored message gets.
    pub next_seq: u64,
    /// Last time a command or the timer changed the mailbox (Unix ms).
    pub touched: i64,
    /// Its entry in the timer's schedule (kept in memory only).
    pub entry: std::cell::Cell<crate::schedule::Entry>,
    /// The registered devices, in the order they registered (at most
    /// [`MAX_DEVICES`]).
    pub devices: devices::Devices,
    /// The messages it holds, by seq.
    pub log: Log,
    /// Messages by id, for duplicate detection and acks by id.
    ids: IdIndex,
    /// Its archive queue and eviction state (SPEC §6); `None` while it has
    /// none.
    pub archive: Option<Box<archive::Archive>>,
}

impl Mailbox {
    /// An empty mailbox whose seq counter starts at `next_seq`, touched at
    /// `now` (Unix ms).
    pub fn new(next_seq: u64, now: i64) -> Mailbox {
        Mailbox {
            next_seq,
            touched: now,
            entry: Default::default(),
            devices: Default::default(),
            log: Log::default(),
            ids: IdIndex::default(),
            archive: None,
        }
    }

    /// Nothing left to keep: the key can go. An evicted mailbox whose
    /// messages the archive holds stays as a tombstone (SPEC §6).
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.devices.is_empty() && self.archived() == 0
    }

    /// Where the device named `name` sits in `devices`; `None` when it is
    /// not registered.
    pub fn device_index(&self, name: &[u8]) -> Option<usize> {
        self.devices.iter().position(|d| d.name() == name)
    }

    /// The device named `name`; `None` when it is not registered.
    pub fn device(&self, name: &[u8]) -> Option<&Device> {
        self.devices.iter().find(|d| d.name() == name)
    }

    /// Asks the CPU to start fetching the mailbox itself (a few cache
    /// lines; a hint: nothing is read). A store asks as soon as it has the
    /// mailbox's address and reads the lines only after the first part of
    /// its stanza's parse ([`Mailbox::prefetch_links`]), so that their
    /// fetch from memory (most mailboxes are cold among many) overlaps
    /// work that does not need them.
    pub fn prefetch_lines(&self) {
        let p = (self as *const Mailbox).cast::<u8>();
        for at in (0..std::mem::size_of::<Mailbox>()).step_by(64) {
            crate::prefetch::prefetch_address(p.wrapping_add(at));
        }
    }

    /// After [`Mailbox::prefetch_lines`]: asks the CPU to start fetching
    /// what the addresses in the mailbox point to: the first device's
    /// label and pending deliveries (that device is inline), the other
    /// devices, the log's last chunk and the id table's header. Reading
    /// the addresses waits for the mailbox's lines, but nothing after it
    /// waits for the fetches it asks for.
    pub fn prefetch_links(&self, incoming: usize) {
        if let Some(d) = self.devices.first() {
            d.label.prefetch();
            d.pending.prefetch();
        }
        self.devices.prefetch_rest();
        self.log.prefetch_last_chunk(incoming);
        self.ids.prefetch();
    }

    /// After [`Mailbox::prefetch_links`]: asks the CPU to start fetching
    /// what storing one more message reads and writes: the names of the
    /// devices past the first (matched against `DEVICES`, named in push
    /// hints), the online devices' pending tails and the log's tail.
    pub fn prefetch_for_store(&self, incoming: usize) {
        for (i, d) in self.devices.iter().enumerate() {
            // The first device's label was asked for by `prefetch_links`.
            if i > 0 {
                d.label.prefetch();
            }
            if d.online() {
                d.pending.prefetch_back();
            }
        }
        self.log.prefetch_tail(incoming);
    }

    /// The seq of the live message with this id; `None` when the mailbox
    /// holds none.
    pub fn find_id(&self, id: &[u8]) -> Option<u64> {
        self.ids.find(&self.log, id)
    }

    /// Pending deliveries over all devices, a message counted once per
    /// device it is pending on (`IM.INFO`'s `pending`).
    pub fn pending_total(&self) -> u64 {
        self.devices.iter().map(|d| d.pending.len() as u64).sum()
    }

    /// Devices on which message `seq` is pending.
    pub fn pending_on(&self, seq: u64) -> Vec<&[u8]> {
        self.devices
            .iter()
            .filter(|d| d.pending.contains(seq))
            .map(|d| d.name())
            .collect()
    }

    /// Heap bytes held by the mailbox (for `MEMORY USAGE`).
    pub fn mem_usage(&self) -> usize {
        let devices: usize =
            self.devices.heap_bytes() + self.devices.iter().map(Device::heap_bytes).sum::<usize>();
        let archive = self
            .archive
            .as_deref()
            .map_or(0, archive::Archive::heap_bytes);
        std::mem::size_of::<Mailbox>()
            + self.log.mem_usage()
            + self.ids.heap_bytes()
            + devices
            + archive
    }

    // ---- reads -------------------------------------------------------

    /// What `device` has not received, or would be owed if it connected now.
    pub fn offline_info(&self, device: &[u8]) -> OfflineInfo {
        match self.device(device) {
            Some(d) => OfflineInfo {
                count: d.offline_count(),
                bytes: d.offline_bytes(),
                first: d.offline.first().unwrap_or(0),
                last: d.offline.last().unwrap_or(0),
            },
            None if self.devices.is_empty() => OfflineInfo {
                count: self.log.len() - self.queued_count(),
                bytes: self.log.bytes() - self.queued_bytes(),
                first: self.oldest_held().map_or(0, |m| m.seq),
                last: self.newest_held().map_or(0, |m| m.seq),
            },
            None => OfflineInfo::default(),
        }
    }

    /// The device's offline messages with `seq > after`, in order, at most
    /// `limit`; the flag says whether more follow.
    pub fn offline_page<'a>(
        &'a self,
        device: &[u8],
        after: u64,
        limit: usize,
    ) -> (Vec<Msg<'a>>, bool) {
        let from = after.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let mut push = |m: Msg<'a>| -> bool {
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(m);
            true
        };
        match self.device(device) {
            Some(d) => {
                'outer: for (s, e) in d.offline.ranges_from(from) {
                    for m in self.log.range(s, e) {
                        if !push(m) {
                            break 'outer;
                        }
                    }
                }
            }
            None if self.devices.is_empty() => {
                for m in self.held_from(from) {
                    if !push(m) {
                        break;
                    }
                }
            }
            None => {}
        }
        (out, more)
    }

    // ---- changes -----------------------------------------------------

    /// Registers `name` if new. The first device of a mailbox is owed
    /// everything the mailbox holds; a later one only what comes next.
    fn register(&mut self, name: &[u8], now: i64) -> usize {
        if let Some(i) = self.device_index(name) {
            return i;
        }
        let mut d = Device::new(name, DEFAULT_NODE, false, now);
        if self.devices.is_empty() {
            let owed: Vec<(u64, usize, u8, u16)> = self
                .held_from(0)
                .filter(|m| m.flags & VOLATILE == 0)
                .map(|m| (m.seq, m.stanza.len(), m.flags, m.owers))
                .collect();
            for (seq, size, flags, owers) in owed {
                d.offline.insert(seq, size);
                self.log.set_header(seq, flags, owers.saturating_add(1));
            }
        }
        // Devices are few: grow one at a time rather than by doubling.
        self.devices.reserve_exact(1);
        self.devices.push(d);
        self.devices.len() - 1
    }

    /// Registers each of `names` (distinct) as [`Self::register`] does,
    /// looking names up in a map built once: for a store that names many
    /// devices of a mailbox that has many.
    fn register_all(&mut self, names: &[&[u8]], now: i64) -> smallvec::SmallVec<[usize; 4]> {
        let mut index: hashbrown::HashMap<Box<[u8]>, usize> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (Box::<[u8]>::from(d.name()), i))
            .collect();
        names
            .iter()
            .map(|n| match index.get(*n) {
                Some(&i) => i,
                None => {
                    let i = self.register(n, now);
                    index.insert((*n).into(), i);
                    i
                }
            })
            .collect()
    }

    /// One device no longer owes `seq`: the message goes once nobody owes
    /// it and someone acked it (or the policy forbids keeping it).
    fn unowe(&mut self, seq: u64, acked: bool) -> bool {
        let Some(m) = self.log.get(seq) else {
            return false;
        };
        let flags = if acked { m.flags | ACKED } else { m.flags };
        let owers = m.owers.saturating_sub(1);
        if owers == 0 && flags & (ACKED | VOLATILE) != 0 {
            self.ids.remove(&self.log, seq, m.id);
            self.log.remove(seq);
            true
        } else {
            self.log.set_header(seq, flags, owers);
            false
        }
    }

    /// Puts a message in the log and the id index; the counter moves past it.
    fn add_message(&mut self, m: &NewMsg<'_>) {
        self.add_loaded_message(m, None);
    }

    /// As [`Mailbox::add_message`]; with `maybe`, for a message loaded from
    /// bytes no command checked, notes there the messages whose id may be
    /// its own (SPEC §1). It is kept and indexed either way.
    fn add_loaded_message(&mut self, m: &NewMsg<'_>, maybe: Option<&mut ids::Maybe>) {
        self.log.insert(m);
        let id = Self::id_of(m);
        match maybe {
            Some(notes) => self.ids.insert_noting(&self.log, m.seq, id, notes),
            None => self.ids.insert(&self.log, m.seq, id),
        }
        self.next_seq = self.next_seq.max(m.seq.saturating_add(1));
    }

    /// The id's bytes of a message about to be added.
    fn id_of<'m>(m: &NewMsg<'m>) -> &'m [u8] {
        match m.id {
            IdSpec::Own(b) => b,
            IdSpec::InStanza { off, len } => m.stanza.get(off..off + len).unwrap_or_default(),
        }
    }

    fn delete_message(&mut self, seq: u64) {
        if let Some(m) = self.log.get(seq) {
            self.ids.remove(&self.log, seq, m.id);
            self.log.remove(seq);
        }
    }

    fn stanza_size(&self, seq: u64) -> usize {
        self.log.get(seq).map_or(0, |m| m.stanza.len())
    }

    /// The device's pending messages leave its session: kept messages go
    /// offline, those the policy forbids keeping are dropped for it.
    /// Answers how many went offline.
    fn pending_to_offline(&mut self, di: usize) -> u64 {
        let pending = self.devices[di].pending.take();
        let mut moved = 0;
        for seq in pending {
            let Some(m) = self.log.get(seq) else { continue };
            if m.flags & VOLATILE != 0 {
                self.unowe(seq, false);
            } else {
                let size = m.stanza.len();
                self.devices[di].offline.insert(seq, size);
                moved += 1;
            }
        }
        moved
    }

    fn ack_one(&mut self, di: usize, seq: u64) -> bool {
        // A pending delivery needs no look into the log; an offline one
        // needs the stanza's size for the device's byte count.
        let owed = self.devices[di].pending.remove(seq).is_some()
            || (self.devices[di].offline.contains(seq) && {
                let size = self.stanza_size(seq);
                self.devices[di].offline.remove(seq, size)
            });
        if owed {
            self.unowe(seq, true);
        }
        owed
    }

    /// Applies one effect at time `now`; answers the count the command
    /// reports (messages moved, deleted or acked).
    pub fn apply(&mut self, now: i64, effect: &Effect<'_>) -> u64 {
        self.touched = now;
        match *effect {
            Effect::Create { .. } => 0,
            Effect::Register { device } => {
                let i = self.register(device, now);
                self.devices[i].set_last_seen(now);
                0
            }
            Effect::Connect { device, node } => {
                let i = self.register(device, now);
                let moved = if self.devices[i].online() {
                    self.pending_to_offline(i)
                } else {
                    0
                };
                let d = &mut self.devices[i];
                d.set_online(true);
                d.set_node(node);
                d.set_last_seen(now);
                moved
            }
            Effect::Disconnect { device } => {
                let Some(i) = self.device_index(device) else {
                    return 0;
                };
                let moved = self.pending_to_offline(i);
                let d = &mut self.devices[i];
                d.set_online(false);
                d.set_last_seen(now);
                moved
            }
            Effect::Forget { device } => {
                let Some(i) = self.device_index(device) else {
                    return 0;
                };
                let d = self.devices.remove(i);
                let before = self.log.len();
                for seq in d.owed(&self.log) {
                    self.unowe(seq, false);
                }
                before - self.log.len()
            }
            Effect::Store {
                message,
                ref pending,
            } => {
                let Message {
                    seq,
                    ts,
                    flags,
                    stanza,
                    ..
                } = message;
                if self.log.contains(seq) {
                    return 0;
                }
                let on: smallvec::SmallVec<[usize; 4]> = if pending.len() > 8 {
                    self.register_all(pending, now)
                } else {
                    pending.iter().map(|n| self.register(n, now)).collect()
                };
                // Which devices it is pending on, by index: linear in the
                // devices however many it names.
                let mut is_on: smallvec::SmallVec<[bool; 8]> =
                    smallvec::smallvec![false; self.devices.len()];
                for &i in &on {
                    is_on[i] = true;
                }
                let volatile = flags & VOLATILE != 0;
                let mut owers: u16 = 0;
                for (i, d) in self.devices.iter_mut().enumerate() {
                    if is_on[i] {
                        d.pending.insert(
                            seq,
                            Pending {
                                since: ts,
                                last_send: ts,
                                attempts: 1,
                            },
                        );
                    } else if volatile {
                        continue;
                    } else {
                        d.offline.insert(seq, stanza.len());
                    }
                    owers = owers.saturating_add(1);
                }
                self.add_message(&NewMsg { message, owers });
                1
            }
            Effect::Ack { device, ref seqs } => {
                let i = self.register(device, now);
                self.devices[i].set_last_seen(now);
                seqs.iter().filter(|&&s| self.ack_one(i, s)).count() as u64
            }
            Effect::AckUpto { device, upto } => {
                let i = self.register(device, now);
                self.devices[i].set_last_seen(now);
                let d = &self.devices[i];
                let mut seqs: Vec<u64> = d.pending.seqs_upto(upto).collect();
                for (s, e) in d.offline.ranges() {
                    if s > upto {
                        break;
                    }
                    seqs.extend(s..=e.min(upto));
                }
                seqs.into_iter().filter(|&s| self.ack_one(i, s)).count() as u64
            }
            Effect::Drop { seq } => {
                let size = self.stanza_size(seq);
                for d in &mut self.devices {
                    if d.pending.remove(seq).is_none() {
                        d.offline.remove(seq, size);
                    }
                }
                let had = self.log.get(seq).is_some();
                self.delete_message(seq);
                u64::from(had)
            }
            Effect::Resend { device, ref seqs } => {
                let Some(i) = self.device_index(device) else {
                    return 0;
                };
                let d = &mut self.devices[i];
                seqs.iter()
                    .filter(|&&s| d.pending.resent(s, now).is_some())
                    .count() as u64
            }
            Effect::Expire { device } => {
                let Some(i) = self.device_index(device) else {
                    return 0;
                };
                let expired = self.devices[i].pending.len() as u64;
                self.pending_to_offline(i);
                self.devices[i].set_online(false);
                expired
            }
            Effect::Queue { ref seqs } => seqs.iter().filter(|&&s| self.queue(s)).count() as u64,
            Effect::ArchiveAck { ref seqs } => {
                seqs.iter().filter(|&&s| self.archive_ack(s)).count() as u64
            }
            Effect::Unqueue { ref seqs } => {
                let n = seqs.iter().filter(|&&s| self.unqueue(s)).count() as u64;
                for _ in 0..n {
                    self.imported(now);
                }
                n
            }
            Effect::Evict => self.evict(),
            Effect::ComeBack => self.come_back(now),
            Effect::Imported => {
                self.imported(now);
                1
            }
        }
    }
}

#[cfg(test)]
mod tests;
