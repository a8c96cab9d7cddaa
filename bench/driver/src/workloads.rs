//! What is compared: redis-im's commands, the seed's key layout driven from
//! the client, the same layout as Lua scripts, a stream per user, and the
//! layout of Signal-Server's message cache (a queue per device, `SIGNAL_*`).
//! All use the same stanza (`STANZA_BYTES` bytes, its own unique id as the
//! `id` attribute), the same user names and the same devices.

use crate::load::Workload;
use crate::resp::{pad12, Conn, Val};

pub const STANZA_BYTES: usize = 190;
const PREFIX: &str = "<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' type='chat' id='";
const MID: &str = "'><body>";
const SUFFIX: &str = "</body></message>";
const TEXT: &str =
    "Are we still on for lunch tomorrow? I booked the table by the window at noon, see you there!";
/// Message ids: `x<12 digits>-<12 digits>`, the form redis-benchmark gives
/// `x__rand_int__-__rand_int__`.
pub const ID_LEN: usize = 26;
pub const DEVICE: &str = "phone";
/// A user's devices, when there are several (`DEVICE` first).
pub const DEVICES: [&str; 3] = [DEVICE, "laptop", "tablet"];

fn body_len() -> usize {
    STANZA_BYTES - PREFIX.len() - ID_LEN - MID.len() - SUFFIX.len()
}

/// The stanza with `id` (any length) as its id attribute, padded to
/// `STANZA_BYTES` when `id` is `ID_LEN` bytes long.
pub fn stanza(id: &str) -> String {
    let n = body_len();
    let mut body = String::new();
    while body.len() < n {
        body.push_str(TEXT);
        body.push(' ');
    }
    body.truncate(n);
    format!("{PREFIX}{id}{MID}{body}{SUFFIX}")
}

/// The Lua variant of the seed layout (the same keys as from the client).
pub const LUA_STORE: &str = "redis.call('SADD', KEYS[1], string.sub(KEYS[2], 5)) \
redis.call('HSET', KEYS[2], 'STANZA', ARGV[1], 'CREATIONDATE', ARGV[2]) return 1";
pub const LUA_STORE_OFFLINE: &str = "redis.call('ZADD', KEYS[1], ARGV[2], string.sub(KEYS[2], 11)) \
redis.call('HSET', KEYS[2], 'STANZA', ARGV[1], 'CREATIONDATE', ARGV[2], 'MESSAGESIZ', string.len(ARGV[1])) return 1";
/// The seed's receipt: the device is recorded as one of the user's
/// terminals (`URT:<user>`), the message as read by it (`RT:<terminal>`),
/// and the parked copy is removed.
pub const LUA_ACK: &str = "redis.call('SADD', KEYS[3], ARGV[1]) \
redis.call('SADD', KEYS[4], string.sub(KEYS[2], 5)) \
redis.call('SREM', KEYS[1], string.sub(KEYS[2], 5)) \
return redis.call('DEL', KEYS[2])";

/// Signal-Server's message cache, re-created: per device a queue (a sorted
/// set of the messages, scored by a number the device's metadata hash
/// counts up in its field `counter`) and that hash, which also maps each
/// message's guid to its number. Inserting is idempotent on the guid, both
/// keys get Signal's 46-day expiry on every insert, and a "new message"
/// event is published on the device's shard channel. KEYS: queue, metadata,
/// event channel; ARGV: message, guid, event payload. Answers the
/// message's number in the queue.
pub const SIGNAL_INSERT: &str = "\
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then \
  return tonumber(redis.call('HGET', KEYS[2], ARGV[2])) \
end \
local n = redis.call('HINCRBY', KEYS[2], 'counter', 1) \
redis.call('ZADD', KEYS[1], 'NX', n, ARGV[1]) \
redis.call('HSET', KEYS[2], ARGV[2], n) \
redis.call('EXPIRE', KEYS[1], 3974400) \
redis.call('EXPIRE', KEYS[2], 3974400) \
redis.call('SPUBLISH', KEYS[3], ARGV[3]) \
return n";
/// Removes messages by guid (ARGV) from a device's queue (KEYS: queue,
/// metadata), the queue and its hash (counter included) going when
/// nothing is left; answers the messages removed.
pub const SIGNAL_REMOVE: &str = "\
local gone = {} \
for _, guid in ipairs(ARGV) do \
  local n = redis.call('HGET', KEYS[2], guid) \
  if n then \
    local m = redis.call('ZRANGE', KEYS[1], n, n, 'BYSCORE', 'LIMIT', 0, 1) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], n, n) \
    redis.call('HDEL', KEYS[2], guid) \
    if m[1] then gone[#gone + 1] = m[1] end \
  end \
end \
if redis.call('ZCARD', KEYS[1]) == 0 then \
  redis.call('DEL', KEYS[1]) \
  redis.call('DEL', KEYS[2]) \
end \
return gone";
/// A page of a device's queue: up to ARGV[1] messages (with their numbers)
/// after number ARGV[2]; nothing while the queue's persist lock (KEYS[2])
/// is held.
pub const SIGNAL_PAGE: &str = "\
if redis.call('GET', KEYS[2]) then return {} end \
return redis.call('ZRANGE', KEYS[1], '(' .. ARGV[2], '+inf', 'BYSCORE', 'LIMIT', 0, ARGV[1], 'WITHSCORES')";
/// Signal's expiry of a queue and its metadata: 46 days (s).
const SIGNAL_TTL: &str = "3974400";
/// The event Signal publishes per insert: a protobuf of an empty "new
/// message available" (two bytes).
pub const SIGNAL_EVENT: &[u8] = b"\x0a\x00";

/// The Signal-style keys of `user`'s device number `dev` (1, 2, ...):
/// queue, metadata, event channel, persist lock.
pub fn signal_keys(user: &[u8], dev: usize) -> [Vec<u8>; 4] {
    let tag = |prefix: &str| {
        let mut k = prefix.as_bytes().to_vec();
        k.extend_from_slice(b"::{");
        k.extend_from_slice(user);
        k.extend_from_slice(b"::");
        k.extend_from_slice(dev.to_string().as_bytes());
        k.push(b'}');
        k
    };
    [
        tag("user_queue"),
        tag("user_queue_metadata"),
        tag("client_presence"),
        tag("user_queue_persisting"),
    ]
}

#[derive(Clone, Default)]
pub struct Shas {
    pub store: String,
    pub store_offline: String,
    pub ack: String,
    pub signal_insert: String,
    pub signal_remove: String,
    pub signal_page: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ping,
    /// `HSET OGM:<id> STANZA <xml> CREATIONDATE <ms>`: the ceiling.
    Hset,
    ImStore,
    /// SADD SOGU + HMSET OGM (online) or ZADD + HMSET OFOFFLINE (offline).
    SeedStore,
    LuaStore,
    Xadd,
    /// The Signal-style insert into each of the user's device queues.
    SignalStore,
    /// The keys the Signal-style insert writes, written directly (what the
    /// script stores, without running it: the memory matrix's quicker
    /// fill). Needs each connection's operations to be its users'
    /// messages in turn (`users_per_conn` users, operation k the
    /// (k / users_per_conn + 1)-th message of its user).
    SignalFill,
    /// IM.STORE, then IM.ACK by each of the user's devices.
    ImCycle,
    SeedCycle,
    LuaCycle,
    StreamCycle,
    /// The Signal-style insert into each device queue, then each device
    /// removes it by guid.
    SignalCycle,
    /// Registers each user's devices (`devices_from`.. `devices`):
    /// `IM.CONNECT`, and `IM.DISCONNECT` unless `online`. One operation
    /// per user.
    Register,
}

#[derive(Clone)]
pub struct Traffic {
    pub kind: Kind,
    /// Store for an online device (pending) rather than an offline one.
    pub online: bool,
    /// Users on each connection (connection c has users c*n .. c*n+n-1).
    pub users_per_conn: u64,
    pub user_prefix: String,
    /// Every operation goes to this user (loaders).
    pub fixed_user: Option<String>,
    /// Connections (for unique offline scores).
    pub conns: u64,
    /// CREATIONDATE / ts field.
    pub ts: String,
    /// First score of the seed's offline sorted set.
    pub score_base: u64,
    pub shas: Shas,
    /// Added to the operation's number in its message id (a second load
    /// into the same mailboxes must not repeat the ids of the first).
    pub id_base: u64,
    /// Keep the reply of operation `mark` on connection 0.
    pub mark: Option<u64>,
    pub marked: Option<Val>,
    /// The user's devices (`DEVICES[..devices]`, Signal's 1..=devices).
    pub devices: usize,
    /// `Register` registers devices `devices_from..devices`.
    pub devices_from: usize,
    user: Vec<u8>,
    id: Vec<u8>,
    xml: Vec<u8>,
    k1: Vec<u8>,
    k2: Vec<u8>,
    k3: Vec<u8>,
    k4: Vec<u8>,
}

fn expect_int(v: &Val, want: i64, what: &str) -> Result<(), String> {
    match v.int() {
        Some(i) if i == want => Ok(()),
        _ => Err(format!("{what}: expected {want}, got {}", v.show())),
    }
}

impl Traffic {
    pub fn new(kind: Kind, online: bool, users_per_conn: u64, conns: usize) -> Traffic {
        let xml = stanza(&"x".repeat(ID_LEN)).into_bytes();
        Traffic {
            kind,
            online,
            users_per_conn: users_per_conn.max(1),
            user_prefix: "user:".into(),
            fixed_user: None,
            conns: conns as u64,
            ts: crate::now_ms().to_string(),
            score_base: crate::now_ms() as u64,
            shas: Shas::default(),
            id_base: 0,
            mark: None,
            marked: None,
            devices: 1,
            devices_from: 0,
            user: Vec::new(),
            id: vec![0; ID_LEN],
            xml,
            k1: Vec::new(),
            k2: Vec::new(),
            k3: Vec::new(),
            k4: Vec::new(),
        }
    }

    /// Names the user, the id and the stanza of operation `k` on `c`.
    fn name(&mut self, c: usize, k: u64) {
        self.user.clear();
        match &self.fixed_user {
            Some(u) => self.user.extend_from_slice(u.as_bytes()),
            None => {
                self.user.extend_from_slice(self.user_prefix.as_bytes());
                let at = self.user.len();
                self.user.resize(at + 12, b'0');
                let u = c as u64 * self.users_per_conn + k % self.users_per_conn;
                pad12(&mut self.user[at..], u);
            }
        }
        self.id[0] = b'x';
        pad12(&mut self.id[1..13], c as u64);
        self.id[13] = b'-';
        pad12(&mut self.id[14..26], self.id_base + k);
        let at = PREFIX.len();
        self.xml[at..at + ID_LEN].copy_from_slice(&self.id);
    }

    fn key(buf: &mut Vec<u8>, prefix: &str, rest: &[u8]) {
        buf.clear();
        buf.extend_from_slice(prefix.as_bytes());
        buf.extend_from_slice(rest);
    }

    /// The seed's keys for a receipt of the current message by the
    /// user's device: k1 `SOGU:<user>`, k2 `OGM:<id>`, k3 `URT:<user>`,
    /// k4 `RT:<terminal>`, the terminal being `<user>/<device>`.
    fn receipt_keys(&mut self) {
        Self::key(&mut self.k1, "SOGU:", &self.user);
        Self::key(&mut self.k2, "OGM:", &self.id);
        Self::key(&mut self.k3, "URT:", &self.user);
        Self::key(&mut self.k4, "RT:", &self.user);
        self.k4.push(b'/');
        self.k4.extend_from_slice(DEVICE.as_bytes());
    }

    fn seed_store(&mut self, c: usize, k: u64, out: &mut Conn) -> usize {
        if self.online {
            Self::key(&mut self.k1, "SOGU:", &self.user);
            Self::key(&mut self.k2, "OGM:", &self.id);
            out.cmd(&[b"SADD", &self.k1, &self.id]);
            out.cmd(&[
                b"HMSET",
                &self.k2,
                b"STANZA",
                &self.xml,
                b"CREATIONDATE",
                self.ts.as_bytes(),
            ]);
        } else {
            Self::key(&mut self.k1, "OFOFFLINE:", &self.user);
            Self::key(&mut self.k2, "OFOFFLINE:", &self.id);
            let score = (self.score_base + k * self.conns + c as u64).to_string();
            let size = self.xml.len().to_string();
            out.cmd(&[b"ZADD", &self.k1, score.as_bytes(), &self.id]);
            out.cmd(&[
                b"HMSET",
                &self.k2,
                b"STANZA",
                &self.xml,
                b"CREATIONDATE",
                self.ts.as_bytes(),
                b"MESSAGESIZ",
                size.as_bytes(),
            ]);
        }
        2
    }

    fn lua_store(&mut self, out: &mut Conn) -> usize {
        let (set, msg, sha) = if self.online {
            ("SOGU:", "OGM:", &self.shas.store)
        } else {
            ("OFOFFLINE:", "OFOFFLINE:", &self.shas.store_offline)
        };
        Self::key(&mut self.k1, set, &self.user);
        Self::key(&mut self.k2, msg, &self.id);
        out.cmd(&[
            b"EVALSHA",
            sha.as_bytes(),
            b"2",
            &self.k1,
            &self.k2,
            &self.xml,
            self.ts.as_bytes(),
        ]);
        1
    }

    /// One Signal-style insert per device of the user.
    fn signal_store(&mut self, out: &mut Conn) -> usize {
        for dev in 1..=self.devices {
            let [queue, meta, channel, _] = signal_keys(&self.user, dev);
            out.cmd(&[
                b"EVALSHA",
                self.shas.signal_insert.as_bytes(),
                b"3",
                &queue,
                &meta,
                &channel,
                &self.xml,
                &self.id,
                SIGNAL_EVENT,
            ]);
        }
        self.devices
    }
}

impl Traffic {
    /// What `SIGNAL_INSERT` writes for the message (a new guid) in each
    /// of the user's device queues: the message under its number, the
    /// counter and the guid's number, and the expiry of both keys when
    /// they are new (the script renews it on every insert).
    fn signal_fill(&mut self, k: u64, out: &mut Conn) -> usize {
        let n = (k / self.users_per_conn + 1).to_string();
        let mut replies = 0;
        for dev in 1..=self.devices {
            let [queue, meta, _, _] = signal_keys(&self.user, dev);
            out.cmd(&[b"ZADD", &queue, b"NX", n.as_bytes(), &self.xml]);
            out.cmd(&[
                b"HSET",
                &meta,
                b"counter",
                n.as_bytes(),
                &self.id,
                n.as_bytes(),
            ]);
            replies += 2;
            if n == "1" {
                out.cmd(&[b"EXPIRE", &queue, SIGNAL_TTL.as_bytes()]);
                out.cmd(&[b"EXPIRE", &meta, SIGNAL_TTL.as_bytes()]);
                replies += 2;
            }
        }
        replies
    }
}

/// The stream key of a user.
pub fn stream_key(user: &[u8]) -> Vec<u8> {
    let mut k = b"im:s:".to_vec();
    k.extend_from_slice(user);
    k
}

impl Workload for Traffic {
    fn start(&mut self, c: usize, k: u64, out: &mut Conn) -> usize {
        self.name(c, k);
        match self.kind {
            Kind::Ping => {
                out.cmd(&[b"PING"]);
                1
            }
            Kind::Hset => {
                Self::key(&mut self.k2, "OGM:", &self.id);
                out.cmd(&[
                    b"HSET",
                    &self.k2,
                    b"STANZA",
                    &self.xml,
                    b"CREATIONDATE",
                    self.ts.as_bytes(),
                ]);
                1
            }
            Kind::ImStore | Kind::ImCycle => {
                out.cmd(&[b"IM.STORE", &self.user, &self.xml]);
                1
            }
            Kind::SignalStore | Kind::SignalCycle => self.signal_store(out),
            Kind::SignalFill => self.signal_fill(k, out),
            Kind::Register => {
                for d in &DEVICES[self.devices_from..self.devices] {
                    out.cmd(&[b"IM.CONNECT", &self.user, d.as_bytes()]);
                    if !self.online {
                        out.cmd(&[b"IM.DISCONNECT", &self.user, d.as_bytes()]);
                    }
                }
                (self.devices - self.devices_from) * if self.online { 1 } else { 2 }
            }
            Kind::SeedStore | Kind::SeedCycle => self.seed_store(c, k, out),
            Kind::LuaStore | Kind::LuaCycle => self.lua_store(out),
            Kind::Xadd | Kind::StreamCycle => {
                self.k1 = stream_key(&self.user);
                out.cmd(&[
                    b"XADD",
                    &self.k1,
                    b"*",
                    b"stanza",
                    &self.xml,
                    b"ts",
                    self.ts.as_bytes(),
                ]);
                if self.kind == Kind::StreamCycle {
                    out.cmd(&[
                        b"XREADGROUP",
                        b"GROUP",
                        DEVICE.as_bytes(),
                        DEVICE.as_bytes(),
                        b"COUNT",
                        b"1",
                        b"STREAMS",
                        &self.k1,
                        b">",
                    ]);
                    2
                } else {
                    1
                }
            }
        }
    }

    fn started(&mut self, c: usize, k: u64, r: &[Val]) -> Result<Option<Vec<u8>>, String> {
        if c == 0 && self.mark == Some(k) {
            self.marked = r.first().cloned();
        }
        match self.kind {
            Kind::Ping | Kind::Hset | Kind::Xadd => Ok(None),
            Kind::ImStore | Kind::ImCycle => {
                let pending = r[0]
                    .arr()
                    .filter(|a| a.len() == 3)
                    .and_then(|a| a[2].arr())
                    .ok_or_else(|| format!("IM.STORE answered {}", r[0].show()))?;
                let want = if self.online { self.devices } else { 0 };
                if pending.len() != want {
                    return Err(format!("IM.STORE pending on {}", r[0].show()));
                }
                Ok((self.kind == Kind::ImCycle).then(Vec::new))
            }
            Kind::SignalStore | Kind::SignalCycle => {
                for v in r {
                    if v.int().is_none_or(|n| n < 1) {
                        return Err(format!("Signal insert answered {}", v.show()));
                    }
                }
                Ok((self.kind == Kind::SignalCycle).then(Vec::new))
            }
            Kind::Register => Ok(None),
            Kind::SignalFill => {
                // Per device: ZADD added the message, HSET the guid (and
                // the counter with the first message), then the expiries
                // with the first message.
                let first = k < self.users_per_conn;
                for dev in r.chunks(if first { 4 } else { 2 }) {
                    expect_int(&dev[0], 1, "ZADD")?;
                    expect_int(&dev[1], if first { 2 } else { 1 }, "HSET")?;
                }
                Ok(None)
            }
            Kind::SeedStore | Kind::LuaStore => Ok(None),
            Kind::SeedCycle | Kind::LuaCycle => Ok(Some(Vec::new())),
            Kind::StreamCycle => {
                let id = r[0]
                    .bytes()
                    .ok_or_else(|| format!("XADD answered {}", r[0].show()))?;
                // [[stream, [[id, fields]]]]
                let got = r[1]
                    .arr()
                    .and_then(|s| s.first())
                    .and_then(|s| s.arr())
                    .and_then(|s| s.get(1))
                    .and_then(|e| e.arr())
                    .and_then(|e| e.first())
                    .and_then(|e| e.arr())
                    .and_then(|e| e.first())
                    .and_then(|e| e.bytes());
                if got != Some(id) {
                    return Err(format!(
                        "XREADGROUP read {} after XADD {}",
                        r[1].show(),
                        r[0].show()
                    ));
                }
                Ok(Some(id.to_vec()))
            }
        }
    }

    fn finish(&mut self, c: usize, k: u64, data: &[u8], out: &mut Conn) -> usize {
        self.name(c, k);
        match self.kind {
            Kind::ImCycle => {
                for d in &DEVICES[..self.devices] {
                    out.cmd(&[b"IM.ACK", &self.user, d.as_bytes(), &self.id]);
                }
                self.devices
            }
            Kind::SignalCycle => {
                for dev in 1..=self.devices {
                    let [queue, meta, _, _] = signal_keys(&self.user, dev);
                    out.cmd(&[
                        b"EVALSHA",
                        self.shas.signal_remove.as_bytes(),
                        b"2",
                        &queue,
                        &meta,
                        &self.id,
                    ]);
                }
                self.devices
            }
            Kind::SeedCycle => {
                self.receipt_keys();
                out.cmd(&[b"SADD", &self.k3, &self.k4[3..]]);
                out.cmd(&[b"SADD", &self.k4, &self.id]);
                out.cmd(&[b"SREM", &self.k1, &self.id]);
                out.cmd(&[b"DEL", &self.k2]);
                4
            }
            Kind::LuaCycle => {
                self.receipt_keys();
                out.cmd(&[
                    b"EVALSHA",
                    self.shas.ack.as_bytes(),
                    b"4",
                    &self.k1,
                    &self.k2,
                    &self.k3,
                    &self.k4,
                    &self.k4[3..],
                ]);
                1
            }
            Kind::StreamCycle => {
                self.k1 = stream_key(&self.user);
                out.cmd(&[b"XACK", &self.k1, DEVICE.as_bytes(), data]);
                1
            }
            _ => 0,
        }
    }

    fn finished(&mut self, c: usize, k: u64, r: &[Val]) -> Result<(), String> {
        match self.kind {
            Kind::ImCycle => r.iter().try_for_each(|v| expect_int(v, 1, "IM.ACK")),
            Kind::SignalCycle => {
                // Each device got back the message of this operation.
                self.name(c, k);
                r.iter().try_for_each(|v| match v.arr() {
                    Some([m]) if m.bytes() == Some(&self.xml[..]) => Ok(()),
                    _ => Err(format!("Signal remove answered {}", v.show())),
                })
            }
            Kind::SeedCycle => {
                expect_int(&r[1], 1, "SADD RT")?;
                expect_int(&r[2], 1, "SREM")?;
                expect_int(&r[3], 1, "DEL")
            }
            Kind::LuaCycle => expect_int(&r[0], 1, "EVALSHA ack"),
            Kind::StreamCycle => expect_int(&r[0], 1, "XACK"),
            _ => Ok(()),
        }
    }
}
