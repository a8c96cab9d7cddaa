//! Which mailboxes this node's timer may act on in a cluster (SPEC §5,
//! §8): those whose hash slot this node owns.
//!
//! In a legacy slot migration (`CLUSTER SETSLOT`, `MIGRATE`) a key is in
//! one place at a time: the node that holds it acts on it, the target of a
//! slot it is importing included. Valkey 9's atomic slot migration
//! (`CLUSTER MIGRATESLOTS`) copies a slot's keys to the target before the
//! target owns the slot, while the source still serves and changes them;
//! there the target must leave them alone until the slot is its own, and
//! the source must leave them alone once it is not. A mailbox skipped here
//! stays scheduled and is looked at again [`NOT_OWNED_RETRY_MS`] later.
//!
//! Ownership comes from the myself line of `CLUSTER NODES`, read again at
//! most every [`REFRESH_MS`] and at once after a slot migration event, a
//! role change, a pause of writes (the handover of an atomic migration
//! pauses the source's writes) or a mailbox arriving by `RESTORE` (a
//! legacy migration's `MIGRATE`: the slot is this node's, or being
//! imported, when its keys arrive). The slots an atomic migration is
//! importing come from its server events.

use crate::server;
use redis_module::{raw, Context, RedisValue};
use std::sync::Mutex;

/// Valkey's module option `VALKEYMODULE_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION`
/// (valkeymodule.h, Valkey 9.0+): without it `CLUSTER MIGRATESLOTS`
/// refuses to run while the module is loaded. The same bit means
/// something else, or nothing, on Redis: it is set only on Valkey 9+.
pub const HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;
/// Valkey's server event `VALKEYMODULE_EVENT_ATOMIC_SLOT_MIGRATION` and its
/// subevents (Valkey 9.0+; Redis numbers its events otherwise).
pub const EVENT_ATOMIC_SLOT_MIGRATION: u64 = 19;
pub const SUBEVENT_IMPORT_STARTED: u64 = 0;
pub const SUBEVENT_IMPORT_ABORTED: u64 = 2;
pub const SUBEVENT_IMPORT_COMPLETED: u64 = 4;

/// The event's data (`ValkeyModuleAtomicSlotMigrationInfoV1`).
#[repr(C)]
pub struct SlotMigrationInfo {
    pub version: u64,
    pub job_name: [std::os::raw::c_char; 41],
    pub slot_ranges: *const SlotRange,
    pub num_slot_ranges: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SlotRange {
    pub start: std::os::raw::c_int,
    pub end: std::os::raw::c_int,
}

/// The major version of Valkey (`valkey_version` in `INFO server`), or
/// `None` on Redis.
pub fn valkey_major(ctx: &Context) -> Option<u32> {
    let info = call_text(ctx, "INFO", "server")?;
    info.lines()
        .find_map(|l| l.strip_prefix("valkey_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// Whether the server has atomic slot migration (Valkey 9+): then the
/// module declares that it handles it and listens to its events.
pub fn has_atomic_slot_migration(ctx: &Context) -> bool {
    valkey_major(ctx).is_some_and(|v| v >= 9)
}

/// A skipped mailbox is looked at again this much later (ms).
pub const NOT_OWNED_RETRY_MS: i64 = 200;
/// The owned slots are read again at least this often (ms).
const REFRESH_MS: i64 = 1000;
/// While the cluster is down, its state is read again this often (ms).
const DOWN_REFRESH_MS: i64 = 100;
/// How long what was read is trusted to tell a move from a deletion (ms).
const TRUST_MS: i64 = 50;
const SLOTS: usize = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag
/// (the bytes between the first `{` and the next `}`, when not empty),
/// modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) & (SLOTS as u16 - 1)
}

/// CRC16-CCITT (XMODEM), the checksum the Redis Cluster specification
/// hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    const XMODEM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);
    XMODEM.checksum(bytes)
}

type Bits = Box<[u64; SLOTS / 64]>;

struct State {
    /// Slots this node owns, or imports by a legacy migration.
    owned: Bits,
    /// Slots a legacy migration moves away from this node (`[slot->-id]`).
    migrating: Bits,
    /// When `owned` was read (ms); 0: to be read.
    read_at: i64,
    /// Whether `CLUSTER INFO` said `cluster_state:fail` when `owned` was
    /// read: the server then refuses clients' key commands
    /// (`CLUSTERDOWN`), and a primary that restarts keeps it so for its
    /// first 2 s (the cluster's `CLUSTER_WRITABLE_DELAY`) while the
    /// cluster tells it whether a replica took its place.
    down: bool,
    /// Slot ranges an atomic slot migration is importing here.
    importing: Vec<(u16, u16)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let s = guard.get_or_insert_with(|| State {
        owned: Box::new([0; SLOTS / 64]),
        migrating: Box::new([0; SLOTS / 64]),
        read_at: 0,
        down: false,
        importing: Vec::new(),
    });
    f(s)
}

/// Ownership is to be read again before its next use.
pub fn invalidate() {
    with_state(|s| s.read_at = 0);
}

fn set_range(bits: &mut [u64; SLOTS / 64], first: usize, last: usize) {
    for slot in first..=last.min(SLOTS - 1) {
        bits[slot / 64] |= 1 << (slot % 64);
    }
}

/// The slots the myself line of `CLUSTER NODES` gives this node: its
/// ranges and the slots it imports by a legacy migration (`[slot-<-id]`);
/// and apart, the slots it is migrating away (`[slot->-id]`). `None` when
/// no line says `myself`.
pub fn parse_myself(nodes: &str) -> Option<(Bits, Bits)> {
    let line = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    let mut bits = Box::new([0u64; SLOTS / 64]);
    let mut migrating = Box::new([0u64; SLOTS / 64]);
    for field in line.split(' ').skip(8) {
        if let Some(inner) = field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
            if let Some((slot, _)) = inner.split_once("-<-") {
                if let Ok(slot) = slot.parse::<usize>() {
                    set_range(&mut bits, slot, slot);
                }
            } else if let Some((slot, _)) = inner.split_once("->-") {
                if let Ok(slot) = slot.parse::<usize>() {
                    set_range(&mut migrating, slot, slot);
                }
            }
            continue;
        }
        let (first, last) = field.split_once('-').unwrap_or((field, field));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            set_range(&mut bits, first, last);
        }
    }
    Some((bits, migrating))
}

/// The text a server command answers (`INFO server`, `CLUSTER NODES`).
fn call_text(ctx: &Context, command: &str, arg: &str) -> Option<String> {
    match ctx.call(command, &[arg]).ok()? {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s),
        RedisValue::StringBuffer(b) | RedisValue::VerbatimString((_, b)) => {
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        RedisValue::BulkRedisString(s) => Some(String::from_utf8_lossy(s.as_slice()).into_owned()),
        _ => None,
    }
}

fn read_owned(ctx: &Context) -> Option<(Bits, Bits)> {
    parse_myself(&call_text(ctx, "CLUSTER", "NODES")?)
}

/// Whether this node's timer may act on mailbox `key`: always outside a
/// cluster; in one, while the cluster is not [`down`], when this node owns
/// the key's slot (or imports it by a legacy migration) and no atomic
/// migration is importing it. When ownership cannot be read, the node acts
/// on what it holds.
pub fn owns(ctx: &Context, key: &[u8]) -> bool {
    if server::flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return true;
    }
    let slot = key_slot(key);
    refresh_if_stale(ctx);
    with_state(|s| {
        let importing = s.importing.iter().any(|&(a, b)| (a..=b).contains(&slot));
        !s.down && !importing && has(&s.owned, slot as usize)
    })
}

/// Whether this node is in a cluster whose state it reads as down
/// (`cluster_state:fail` in `CLUSTER INFO`, read again at most every
/// [`REFRESH_MS`], every [`DOWN_REFRESH_MS`] while down). The timer then
/// does nothing, as the server serves no client key command then: no
/// device could ack what would expire, and a primary that restarts after
/// its replica took its place (SIGKILL, a crash) is down until the
/// cluster makes it a replica, so it never expires again what its heir
/// expired already (SPEC §5, §8; docs/DESIGN.md, "Cluster down"). When
/// the state cannot be read, the node counts as up.
pub fn down(ctx: &Context) -> bool {
    if server::flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return false;
    }
    refresh_if_stale(ctx);
    with_state(|s| s.down)
}

fn refresh_if_stale(ctx: &Context) {
    let now = server::now_ms();
    let stale = with_state(|s| {
        let every = if s.down { DOWN_REFRESH_MS } else { REFRESH_MS };
        s.read_at == 0 || now.saturating_sub(s.read_at) >= every
    });
    if stale {
        refresh(ctx, now);
    }
}

/// Whether `CLUSTER INFO`'s text says the cluster is down: a
/// `cluster_state` line other than `ok`. `false` without one.
fn says_down(info: &str) -> bool {
    info.lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .is_some_and(|v| v.trim() != "ok")
}

fn refresh(ctx: &Context, now: i64) {
    let read = read_owned(ctx);
    let down = call_text(ctx, "CLUSTER", "INFO").is_some_and(|info| says_down(&info));
    with_state(|s| {
        s.down = down;
        match read {
            Some((owned, migrating)) => {
                s.owned = owned;
                s.migrating = migrating;
            }
            // Not known: act on what is held, as outside a cluster.
            None => {
                s.owned.fill(u64::MAX);
                s.migrating.fill(0);
            }
        }
        s.read_at = now.max(1);
    });
}

fn has(bits: &[u64; SLOTS / 64], slot: usize) -> bool {
    bits[slot / 64] & (1 << (slot % 64)) != 0
}

/// Whether mailbox `key`, just deleted here, left because its slot moves
/// away (a legacy migration's `MIGRATE`, the removal that follows an
/// atomic migration on its source, an aborted import on its target): in
/// a cluster, its slot is one this node migrates away or does not own.
/// Ownership is read again unless it was read in the last [`TRUST_MS`]
/// and said so.
pub fn moving_away(ctx: &Context, key: &[u8]) -> bool {
    if server::flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return false;
    }
    let slot = key_slot(key);
    let leaving = |s: &mut State| {
        s.read_at != 0
            && (has(&s.migrating, slot as usize)
                || !has(&s.owned, slot as usize)
                || s.importing.iter().any(|&(a, b)| (a..=b).contains(&slot)))
    };
    // What was read in the last few ms is trusted (the keys of one slot
    // leave together); anything else is read again.
    let now = server::now_ms();
    if with_state(|s| now.saturating_sub(s.read_at) < TRUST_MS && leaving(s)) {
        return true;
    }
    refresh(ctx, now);
    with_state(leaving)
}

/// An atomic slot migration started importing `ranges` here.
pub fn import_started(ranges: &[(u16, u16)]) {
    with_state(|s| {
        s.importing.extend_from_slice(ranges);
        s.read_at = 0;
    });
}

/// An atomic slot migration of `ranges` into this node ended (completed:
/// the slots are this node's now; aborted: their keys are removed).
pub fn import_ended(ranges: &[(u16, u16)]) {
    with_state(|s| {
        s.importing.retain(|r| !ranges.contains(r));
        s.read_at = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_spec() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn myself_line_gives_ranges_and_legacy_imports() {
        let nodes = "\
a1 127.0.0.1:7001@17001 master - 0 1 1 connected 0-5460 [7000->-b2]
b2 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 5461-10922 12000 [7000-<-a1] [8000->-c3]
c3 127.0.0.1:7003@17003 master - 0 1 3 connected 10923-16383
";
        let (bits, migrating) = parse_myself(nodes).unwrap();
        assert!(!has(&bits, 0) && !has(&bits, 5460));
        assert!(has(&bits, 5461) && has(&bits, 10922) && has(&bits, 8000));
        assert!(has(&bits, 12000) && !has(&bits, 12001) && !has(&bits, 10923));
        assert!(has(&bits, 7000), "a slot imported by a legacy migration");
        assert!(has(&migrating, 8000) && !has(&migrating, 7000) && !has(&migrating, 5461));
        assert!(parse_myself("x 1:1@2 master - 0 0 1 connected 0-16383").is_none());
    }

    #[test]
    fn cluster_info_says_down_unless_its_state_is_ok() {
        assert!(says_down(
            "cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:16384\r\n"
        ));
        assert!(!says_down(
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n"
        ));
        assert!(
            !says_down("cluster_slots_assigned:16384\r\n"),
            "no state line: up"
        );
        assert!(!says_down(""));
    }
}
