//! Memory at scale (the `scale` phase): bytes per message for many users
//! with few messages each and for few users with many, in each layout,
//! and what a mailbox with no message costs per user and per device.
//!
//! A cell: an emptied server (`used_memory` then), the users' devices
//! registered where the layout has them in Redis (`used_memory` again),
//! then every user's messages, pipelined deeply over several connections
//! (`used_memory` once more). Each reading waits until the connections
//! that filled the server are gone and the keyspace's hash tables are not
//! halfway through a resize (the old table would count).

use crate::load::Plan;
use crate::results::thousands;
use crate::results::*;
use crate::workloads::Kind;
use crate::{conns_for, fail, log, Case, Setup, Suite};
use std::io;
use std::time::{Duration, Instant};

/// The layouts of the matrix, in the report's order.
const LAYOUTS: [Case; 7] = [
    Case {
        label: L_SC_IM,
        setup: Setup::Offline,
        kind: Kind::ImStore,
        online: false,
        devices: 1,
    },
    Case {
        label: L_SC_IM3,
        setup: Setup::Offline3,
        kind: Kind::ImStore,
        online: false,
        devices: 3,
    },
    Case {
        label: L_SC_IM_NONE,
        setup: Setup::Nothing,
        kind: Kind::ImStore,
        online: false,
        devices: 0,
    },
    Case {
        label: L_SEED_OFF,
        setup: Setup::Nothing,
        kind: Kind::SeedStore,
        online: false,
        devices: 1,
    },
    Case {
        label: L_XADD,
        setup: Setup::Nothing,
        kind: Kind::Xadd,
        online: true,
        devices: 1,
    },
    Case {
        label: L_SC_SIG1,
        setup: Setup::Nothing,
        kind: Kind::SignalFill,
        online: true,
        devices: 1,
    },
    Case {
        label: L_SC_SIG3,
        setup: Setup::Nothing,
        kind: Kind::SignalFill,
        online: true,
        devices: 3,
    },
];

/// Entries a layout stores per message: Signal-style keeps a copy per
/// device, the others one.
fn copies(c: &Case) -> u64 {
    match c.kind {
        Kind::SignalFill | Kind::SignalStore => c.devices as u64,
        _ => 1,
    }
}

/// Why a layout's cell is skipped, if it is: more entries than the run
/// allows (redis-im with 3 devices goes with the Signal-style layout with
/// 3, which it is measured against).
fn skip_reason(c: &Case, users: u64, per_user: u64, max: u64) -> Option<String> {
    let entries = users * per_user * copies(c);
    if entries > max {
        return Some(format!("{} entries", thousands(entries as f64)));
    }
    if c.label == L_SC_IM3 && users * per_user * 3 > max {
        return Some("measured beside the Signal-style layout with 3 devices only".into());
    }
    None
}

/// Whether a hash table of `size` bytes of overhead for `entries` entries
/// (`MEMORY STATS`: `entry` bytes per entry, 8 per bucket) has a number of
/// buckets that is not a power of two: both of its tables are allocated,
/// it is being resized. `None` when the sizes do not fit that form (a
/// server that counts otherwise).
fn resizing(size: i64, entries: i64, entry: i64) -> Option<bool> {
    let buckets = size - entries * entry;
    if buckets < 0 || buckets % 8 != 0 {
        return None;
    }
    let b = (buckets / 8) as u64;
    Some(b != 0 && !b.is_power_of_two())
}

impl Suite {
    /// `used_memory` once the server settled: the filling connections
    /// closed, and no keyspace table halfway through a resize (waiting at
    /// most 20 s for the server's cron to finish one).
    pub(crate) fn settled_memory(&mut self) -> io::Result<i64> {
        let t0 = Instant::now();
        while self.admin.info_i64("clients", "connected_clients")? > 1 {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(fail("the filling connections did not close"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let t0 = Instant::now();
        while self.keyspace_resizing()? && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if t0.elapsed() > Duration::from_millis(100) {
            log(format!(
                "scale: waited {:.1}s for the keyspace's tables to finish resizing",
                t0.elapsed().as_secs_f64()
            ));
        }
        self.admin.info_i64("memory", "used_memory")
    }

    /// The keyspace's tables (keys, expiry times) are being resized
    /// (`MEMORY STATS` of db 0: Redis 7.0 counts 40 bytes per key and 24
    /// per expiry time besides the buckets).
    fn keyspace_resizing(&mut self) -> io::Result<bool> {
        let ks = self.admin.info("keyspace")?;
        let Some(db0) = ks.get("db0") else {
            return Ok(false);
        };
        let field = |name: &str| -> i64 {
            db0.split(',')
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (keys, expires) = (field("keys="), field("expires="));
        let stats = self.admin.ok(&["MEMORY", "STATS"])?.pairs();
        let Some((_, db)) = stats.iter().find(|(k, _)| k == "db.0") else {
            return Ok(false);
        };
        let db = db.pairs();
        let get = |name: &str| {
            db.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.int())
        };
        let main = get("overhead.hashtable.main").and_then(|m| resizing(m, keys, 40));
        let exp = get("overhead.hashtable.expires").and_then(|m| resizing(m, expires, 24));
        Ok(main == Some(true) || exp == Some(true))
    }

    pub(crate) fn scale(&mut self) -> io::Result<()> {
        let t0 = Instant::now();
        // The server's cron resizes the keyspace's tables 1 ms per run:
        // ten times as many runs make the wait for it short.
        let hz = self
            .admin
            .ok(&["CONFIG", "GET", "hz"])?
            .pairs()
            .first()
            .and_then(|(_, v)| v.bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_else(|| "10".into());
        self.admin.ok(&["CONFIG", "SET", "hz", "100"])?;
        self.scale_warm_up()?;
        let mut res = ScaleRes {
            max_copies: self.p.scale_max_copies,
            ..Default::default()
        };
        for [users, per_user] in self.p.scale.clone() {
            for c in &LAYOUTS {
                if let Some(why) = skip_reason(c, users, per_user, self.p.scale_max_copies) {
                    res.skipped.push(ScaleSkip {
                        label: c.label.into(),
                        users,
                        per_user,
                        why,
                    });
                    continue;
                }
                let cell = self.scale_cell(c, users, per_user)?;
                log(format!(
                    "scale  {:>9} users × {:<3} {:<45} {:>6.1} B/message from empty, {:>6.1} after the users, {:>6.1} per user before; filled in {:.1}s",
                    users,
                    per_user,
                    c.label,
                    cell.bytes_from_empty(),
                    cell.bytes_after_users(),
                    cell.per_user_bytes(),
                    cell.fill_secs
                ));
                res.cells.push(cell);
            }
        }
        // The matrix writes the Signal-style keys directly; the insert
        // script itself fills the goals' cells of 100 and 1 message per
        // user again, which must come to the same memory.
        let goal_users = self.p.scale_goal_users.clone();
        for (users, per_user) in [(goal_users.get(2), 100), (goal_users.first(), 1)] {
            let Some(&users) = users else { continue };
            for c in LAYOUTS.iter().filter(|c| c.kind == Kind::SignalFill) {
                if skip_reason(c, users, per_user, self.p.scale_max_copies).is_some() {
                    continue;
                }
                let script = Case {
                    kind: Kind::SignalStore,
                    ..*c
                };
                let cell = self.scale_cell(&script, users, per_user)?;
                let direct = res
                    .cell(c.label, users, per_user)
                    .map_or(f64::NAN, |d| d.bytes_from_empty());
                log(format!(
                    "scale  {users:>9} users × {per_user:<3} {:<45} {:>6.1} B/message filled by the script ({direct:.1} written directly); filled in {:.1}s",
                    c.label,
                    cell.bytes_from_empty(),
                    cell.fill_secs
                ));
                res.script_checks.push(cell);
            }
        }
        res.devices = Some(self.device_costs(self.p.device_users)?);
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        self.admin.ok(&["CONFIG", "SET", "hz", &hz])?;
        res.secs = t0.elapsed().as_secs_f64();
        self.res.scale = Some(res);
        Ok(())
    }

    /// Every layout once on a few users, then an empty server: what the
    /// server and the module allocate once, at their first use, stays out
    /// of the first cell.
    fn scale_warm_up(&mut self) -> io::Result<()> {
        for c in &LAYOUTS {
            self.scale_cell(c, 1000, 2)?;
            if c.kind == Kind::SignalFill {
                let script = Case {
                    kind: Kind::SignalStore,
                    ..*c
                };
                self.scale_cell(&script, 1000, 2)?;
            }
        }
        self.register("user:", 1000, 0..3, false)?;
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        Ok(())
    }

    fn scale_cell(&mut self, c: &Case, users: u64, per_user: u64) -> io::Result<ScaleCell> {
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        let before = self.settled_memory()?;
        let users_only = if c.setup == Setup::Nothing {
            before
        } else {
            self.prepare(c.setup, "user:", users)?;
            self.settled_memory()?
        };
        let conns = conns_for(users, 8);
        let mut t = self.traffic_of(c, users / conns as u64, conns);
        // Each Signal-style operation writes each device's queue.
        let depth = if c.devices > 1 { 128 } else { 256 };
        let messages = users * per_user;
        let t1 = Instant::now();
        self.drive(&mut t, Plan::new(conns, depth, messages), c.label)?;
        let fill_secs = t1.elapsed().as_secs_f64();
        if c.kind == Kind::ImStore {
            let (m, mb) = (self.im("im_messages")?, self.im("im_mailboxes")?);
            if m != messages as i64 || mb != users as i64 {
                return Err(fail(format!(
                    "{}: {m} messages in {mb} mailboxes, expected {messages} in {users}",
                    c.label
                )));
            }
        }
        let after = self.settled_memory()?;
        Ok(ScaleCell {
            label: c.label.into(),
            users,
            per_user,
            copies: copies(c),
            before,
            users_only,
            after,
            fill_secs,
        })
    }

    /// `used_memory` with `users` empty mailboxes, each remembering 1, 2
    /// and 3 registered (offline) devices.
    fn device_costs(&mut self, users: u64) -> io::Result<DeviceCosts> {
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        let before = self.settled_memory()?;
        let mut with = Vec::new();
        for d in 0..3 {
            self.register("user:", users, d..d + 1, false)?;
            for u in [0, users - 1] {
                let who = crate::user("user:", u);
                let n = self
                    .admin
                    .ok(&["IM.DEVICES", &who])?
                    .arr()
                    .map_or(0, |a| a.len());
                if n != d + 1 {
                    return Err(fail(format!(
                        "{who}: {n} devices registered, expected {}",
                        d + 1
                    )));
                }
            }
            with.push(self.settled_memory()?);
        }
        let r = DeviceCosts {
            users,
            before,
            with,
        };
        log(format!(
            "scale  empty mailboxes of {users} users: {:.1} bytes per user with 1 device, {:.1} with 3; a device adds {:.1} (steps {:?})",
            r.per_user(1),
            r.per_user(3),
            r.per_device(),
            r.steps()
        ));
        Ok(r)
    }
}
