//! im-bench: the load driver and benchmark suite of redis-im.
//!
//! `im-bench suite [--quick] --module PATH [--floor PATH] --work DIR --json
//! FILE --md FILE --svg FILE` starts one redis-server with the module (and
//! the store's floor, `bench/floor`, beside it) and measures, side by side
//! on that server, redis-im against the seed's key layout (driven
//! from the client and as Lua scripts), streams, the layout of
//! Signal-Server's message cache, and plain HSET/PING as ceilings; then
//! writes the results as JSON, a Markdown report and an SVG plot.
//!
//! `im-bench render --json FILE [--md FILE] [--svg FILE]` writes the report
//! and the plot of results kept as JSON, running nothing.

mod catchup;
mod load;
mod markdown;
#[cfg(test)]
mod render_test;
mod resp;
mod results;
mod scale;
mod server;
mod svg;
mod workloads;

use load::{Plan, Stats};
use resp::{Conn, Val};
use results::*;
use serde::{Deserialize, Serialize};
use server::Server;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workloads::{Kind, Shas, Traffic, DEVICE, STANZA_BYTES};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One timed request (and the check of its reply).
type Probe<'a> = Box<dyn FnMut(&mut Conn) -> io::Result<()> + 'a>;

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench {:>7.1}s] {}", elapsed_total(), msg.as_ref());
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
fn elapsed_total() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn fail(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Sizes of the run (`--quick` makes everything smaller).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub quick: bool,
    /// Operations per throughput measurement.
    pub ops: u64,
    pub repeats: usize,
    pub conns: usize,
    pub depth: usize,
    /// Users in the throughput runs (redis-benchmark `-r`).
    pub users: u64,
    pub mem_msgs: u64,
    pub mem_users: u64,
    pub page_small: u64,
    pub page_big: u64,
    pub page_reps: usize,
    pub sweep_users: u64,
    pub sweep_due_per_user: u64,
    pub sweep_per_user: u64,
    pub budget_us: i64,
    pub stall_secs: f64,
    pub stall_rate: f64,
    /// Users in the second round of store throughput (many mailboxes).
    #[serde(default)]
    pub users_many: u64,
    /// The memory matrix: users and messages per user of each cell, in
    /// the order measured.
    #[serde(default)]
    pub scale: Vec<[u64; 2]>,
    /// A cell whose layout would store more entries than this (messages
    /// times the copies per message) is skipped.
    #[serde(default)]
    pub scale_max_copies: u64,
    /// The users of the memory goals' cells, for 1, 5 and 100 messages
    /// per user (`results::MEM_GOALS`).
    #[serde(default)]
    pub scale_goal_users: Vec<u64>,
    /// Users whose empty mailboxes measure what devices cost.
    #[serde(default)]
    pub device_users: u64,
}

impl Params {
    fn new(quick: bool) -> Params {
        Params {
            quick,
            ops: if quick { 20_000 } else { 200_000 },
            repeats: if quick { 1 } else { 5 },
            conns: 32,
            depth: 16,
            users: 1000,
            mem_msgs: if quick { 10_000 } else { 100_000 },
            mem_users: if quick { 100 } else { 1000 },
            page_small: 1000,
            page_big: if quick { 100_000 } else { 1_000_000 },
            page_reps: if quick { 200 } else { 1000 },
            sweep_users: if quick { 100 } else { 1000 },
            sweep_due_per_user: 10,
            sweep_per_user: 1000,
            budget_us: 1000,
            stall_secs: if quick { 2.0 } else { 5.0 },
            stall_rate: 20_000.0,
            users_many: if quick { 10_000 } else { 100_000 },
            scale: scale_cells(quick),
            scale_max_copies: if quick { 60_000 } else { 3_000_000 },
            scale_goal_users: if quick {
                vec![10_000, 2_000, 100]
            } else {
                vec![100_000, 20_000, 1_000]
            },
            device_users: if quick { 10_000 } else { 100_000 },
        }
    }
}

/// The memory matrix's cells: 1,000, 100,000 and 1,000,000 users with 1,
/// 5 and 100 messages each, and 20,000 users with 5 (a goal's cell);
/// `--quick` a tenth of the users.
fn scale_cells(quick: bool) -> Vec<[u64; 2]> {
    let users: [u64; 4] = [1_000, 20_000, 100_000, 1_000_000];
    let mut cells = Vec::new();
    for u in users {
        let per: &[u64] = if u == 20_000 { &[5] } else { &[1, 5, 100] };
        for &m in per {
            cells.push([if quick { u / 10 } else { u }, m]);
        }
    }
    cells
}

fn user(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:012}")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Nothing,
    /// Every user has device `phone` online.
    Online,
    /// Every user has devices `phone`, `laptop` and `tablet` online.
    Online3,
    /// Every user has device `phone` registered and offline.
    Offline,
    /// Every user has devices `phone`, `laptop` and `tablet` registered
    /// and offline.
    Offline3,
    /// Every user's stream has a consumer group `phone`.
    Groups,
    /// Every user's key holds an empty `floor-box` (`FLOOR.INIT`).
    Floor,
}

/// A measure's variant: its label, what the server holds before, the
/// traffic, and the devices per user.
#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    setup: Setup,
    kind: Kind,
    online: bool,
    devices: usize,
}

const fn case(label: &'static str, setup: Setup, kind: Kind, online: bool) -> Case {
    Case {
        label,
        setup,
        kind,
        online,
        devices: 1,
    }
}

const fn case3(label: &'static str, setup: Setup, kind: Kind) -> Case {
    Case {
        label,
        setup,
        kind,
        online: true,
        devices: 3,
    }
}

/// The commands a workload sends itself (the server counts the commands a
/// script calls under their own names too), in `INFO commandstats`' names.
fn top_commands(kind: Kind, online: bool) -> &'static [&'static str] {
    match kind {
        Kind::Ping => &["ping"],
        Kind::Hset => &["hset"],
        Kind::ImStore => &["im.store"],
        Kind::SeedStore if online => &["sadd", "hmset"],
        Kind::SeedStore => &["zadd", "hmset"],
        Kind::LuaStore | Kind::LuaCycle | Kind::SignalStore | Kind::SignalCycle => &["evalsha"],
        Kind::SignalFill => &["zadd", "hset"],
        Kind::Xadd => &["xadd"],
        Kind::ImCycle => &["im.store", "im.ack"],
        Kind::SeedCycle => &["sadd", "hmset", "srem", "del"],
        Kind::StreamCycle => &["xadd", "xreadgroup", "xack"],
        Kind::Register => &["im.connect", "im.disconnect"],
    }
}

/// Connections that share `users` evenly (a user's operations stay on
/// one connection).
pub fn conns_for(users: u64, most: usize) -> usize {
    (1..=most)
        .rev()
        .find(|c| users.is_multiple_of(*c as u64))
        .unwrap_or(1)
}

struct Suite {
    p: Params,
    server: Server,
    admin: Conn,
    shas: Shas,
    res: Results,
}

impl Suite {
    fn port(&self) -> u16 {
        self.server.port
    }

    /// Empties the server and prepares `users` users (`user:<12 digits>`).
    fn reset(&mut self, setup: Setup, prefix: &str, users: u64) -> io::Result<()> {
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        self.prepare(setup, prefix, users)
    }

    fn prepare(&mut self, setup: Setup, prefix: &str, users: u64) -> io::Result<()> {
        match setup {
            Setup::Nothing => Ok(()),
            Setup::Online => self.register(prefix, users, 0..1, true),
            Setup::Online3 => self.register(prefix, users, 0..3, true),
            Setup::Offline => self.register(prefix, users, 0..1, false),
            Setup::Offline3 => self.register(prefix, users, 0..3, false),
            Setup::Groups => self.stream_groups(prefix, users),
            Setup::Floor => self.floor_boxes(prefix, users),
        }
    }

    /// An empty `floor-box` at every user's key (`FLOOR.INIT`).
    fn floor_boxes(&mut self, prefix: &str, users: u64) -> io::Result<()> {
        let a = &mut self.admin;
        for i in 0..users {
            a.cmd_str(&["FLOOR.INIT", &user(prefix, i)]);
            if (i + 1) % 1000 == 0 {
                a.drain(1000)?;
            }
        }
        a.drain((users % 1000) as usize)
    }

    /// A consumer group `phone` on every user's stream.
    fn stream_groups(&mut self, prefix: &str, users: u64) -> io::Result<()> {
        let a = &mut self.admin;
        for i in 0..users {
            let k = format!("im:s:{}", user(prefix, i));
            a.cmd_str(&["XGROUP", "CREATE", &k, DEVICE, "$", "MKSTREAM"]);
            if (i + 1) % 1000 == 0 {
                a.drain(1000)?;
            }
        }
        a.drain((users % 1000) as usize)
    }

    /// Registers devices `DEVICES[devs]` of users `<prefix>0..users`
    /// (online, or connected and disconnected), pipelined over several
    /// connections.
    fn register(
        &mut self,
        prefix: &str,
        users: u64,
        devs: std::ops::Range<usize>,
        online: bool,
    ) -> io::Result<()> {
        let conns = conns_for(users, 8);
        let mut t = self.traffic(Kind::Register, online, users / conns as u64, conns);
        t.user_prefix = prefix.into();
        t.devices_from = devs.start;
        t.devices = devs.end;
        let plan = Plan::new(conns, 128, users);
        self.drive(&mut t, plan, "registering devices")?;
        Ok(())
    }

    fn traffic(&self, kind: Kind, online: bool, users_per_conn: u64, conns: usize) -> Traffic {
        let mut t = Traffic::new(kind, online, users_per_conn, conns);
        t.shas = self.shas.clone();
        t
    }

    /// The operations of a measurement of `c`: a third for the
    /// Signal-style variants (a script per device to store, another to
    /// remove, each several times the work of a command), so that they
    /// take about as long as the others.
    fn ops_of(&self, c: &Case, ops: u64) -> u64 {
        match c.kind {
            Kind::SignalStore | Kind::SignalCycle => ops / 3,
            _ => ops,
        }
    }

    fn traffic_of(&self, c: &Case, users_per_conn: u64, conns: usize) -> Traffic {
        let mut t = self.traffic(c.kind, c.online, users_per_conn, conns);
        t.devices = c.devices;
        t
    }

    /// The server's time per operation (µs) since the last `CONFIG
    /// RESETSTAT`: the time of `commands` (as `INFO commandstats` names
    /// them) over `ops` operations.
    fn server_us(&mut self, commands: &[&str], ops: u64) -> io::Result<f64> {
        let stats = self.admin.info("commandstats")?;
        let mut usec = 0.0;
        for c in commands {
            let v = stats
                .get(&format!("cmdstat_{c}"))
                .ok_or_else(|| fail(format!("INFO commandstats has no {c}")))?;
            usec += v
                .split(',')
                .find_map(|f| f.strip_prefix("usec="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        Ok(usec / ops.max(1) as f64)
    }

    fn reset_stats(&mut self) -> io::Result<()> {
        self.admin.ok(&["CONFIG", "RESETSTAT"])?;
        Ok(())
    }

    fn drive(&self, t: &mut Traffic, plan: Plan, what: &str) -> io::Result<Stats> {
        let st = load::run(self.port(), plan, t)?;
        st.clean(what)?;
        Ok(st)
    }

    fn errors_total(&mut self) -> io::Result<i64> {
        self.admin.info_i64("stats", "total_error_replies")
    }

    /// One redis-benchmark run over `users` users (`-r`); answers requests
    /// per second.
    fn redis_benchmark(&mut self, users: u64, args: &[String]) -> io::Result<f64> {
        let before = self.errors_total()?;
        let out = std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args([
                "-n",
                &self.p.ops.to_string(),
                "-c",
                &self.p.conns.to_string(),
            ])
            .args([
                "-P",
                &self.p.depth.to_string(),
                "-r",
                &users.to_string(),
                "--csv",
            ])
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.split("\",\"").nth(1))
            .and_then(|v| v.trim_matches('"').parse::<f64>().ok());
        let errors = self.errors_total()? - before;
        match rps {
            Some(r) if out.status.success() && errors == 0 => Ok(r),
            _ => Err(fail(format!(
                "redis-benchmark {} failed ({}, {errors} error replies): {} {}",
                args.first().map_or("", |s| s.as_str()),
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    fn config_set(&mut self, name: &str, value: impl ToString) -> io::Result<()> {
        self.admin
            .ok(&["CONFIG", "SET", name, &value.to_string()])?;
        Ok(())
    }

    fn im(&mut self, field: &str) -> io::Result<i64> {
        self.admin.info_i64("im", field)
    }

    // ---------------------------------------------------------------- stores

    fn stores(&mut self) -> io::Result<()> {
        for r in 0..self.p.repeats {
            self.store_round(Section::Store, self.p.users, r)?;
        }
        if self.p.users_many > 0 {
            for r in 0..self.p.repeats {
                self.store_round(Section::StoreMany, self.p.users_many, r)?;
            }
        }
        Ok(())
    }

    /// One run of every single-store variant over `users` users, with
    /// redis-benchmark and with the driver, each beside the server's own
    /// time per operation.
    fn store_round(&mut self, section: Section, users: u64, r: usize) -> io::Result<()> {
        let ts = now_ms().to_string();
        let xml = workloads::stanza("x__rand_int__-__rand_int__");
        assert_eq!(xml.len(), STANZA_BYTES);
        let msg_key = "x__rand_int__-__rand_int__-__rand_int__";
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        let mut rb_cases: Vec<(&str, Setup, Vec<String>)> = vec![
            (L_PING, Setup::Nothing, s(&["PING"])),
            (
                L_HSET,
                Setup::Nothing,
                s(&[
                    "HSET",
                    &format!("OGM:{msg_key}"),
                    "STANZA",
                    &xml,
                    "CREATIONDATE",
                    &ts,
                ]),
            ),
            (L_TYPE, Setup::Online, s(&["TYPE", "user:__rand_int__"])),
            (
                L_IM_ON,
                Setup::Online,
                s(&["IM.STORE", "user:__rand_int__", &xml]),
            ),
            (
                L_IM_OFF,
                Setup::Offline,
                s(&["IM.STORE", "user:__rand_int__", &xml]),
            ),
            (
                L_LUA_ON,
                Setup::Nothing,
                s(&[
                    "EVALSHA",
                    &self.shas.store,
                    "2",
                    "SOGU:user:__rand_int__",
                    &format!("OGM:{msg_key}"),
                    &xml,
                    &ts,
                ]),
            ),
            (
                L_LUA_OFF,
                Setup::Nothing,
                s(&[
                    "EVALSHA",
                    &self.shas.store_offline,
                    "2",
                    "OFOFFLINE:user:__rand_int__",
                    &format!("OFOFFLINE:{msg_key}"),
                    &xml,
                    &ts,
                ]),
            ),
            (L_API_ONE, Setup::Nothing, s(&["IM.DEVICES", "nobody"])),
            (L_API_MANY, Setup::Nothing, s(&["IM.INFO", "nobody"])),
            (
                L_XADD,
                Setup::Nothing,
                s(&[
                    "XADD",
                    "im:s:user:__rand_int__",
                    "*",
                    "stanza",
                    &xml,
                    "ts",
                    &ts,
                ]),
            ),
        ];
        if self.server.floor.is_some() {
            rb_cases.push((
                L_FLOOR,
                Setup::Floor,
                s(&["FLOOR.STORE", "user:__rand_int__", &xml]),
            ));
        }
        if section == Section::StoreMany {
            // What the module API costs does not depend on the users.
            rb_cases.retain(|c| c.0 != L_API_ONE && c.0 != L_API_MANY);
        }
        let drv_cases = [
            case(L_PING, Setup::Nothing, Kind::Ping, true),
            case(L_HSET, Setup::Nothing, Kind::Hset, true),
            case(L_IM_ON, Setup::Online, Kind::ImStore, true),
            case(L_IM_OFF, Setup::Offline, Kind::ImStore, false),
            case(L_SEED_ON, Setup::Nothing, Kind::SeedStore, true),
            case(L_SEED_OFF, Setup::Nothing, Kind::SeedStore, false),
            case(L_LUA_ON, Setup::Nothing, Kind::LuaStore, true),
            case(L_LUA_OFF, Setup::Nothing, Kind::LuaStore, false),
            case(L_XADD, Setup::Nothing, Kind::Xadd, true),
            case(L_SIG1_STORE, Setup::Nothing, Kind::SignalStore, true),
            Case {
                devices: 3,
                ..case(L_SIG3_STORE, Setup::Nothing, Kind::SignalStore, true)
            },
        ];
        let upc = users / self.p.conns as u64;
        let tag = if section == Section::StoreMany {
            format!("{} users", count_name(users))
        } else {
            "store".into()
        };
        for (label, setup, args) in &rb_cases {
            self.reset(*setup, "user:", users)?;
            self.reset_stats()?;
            let rate = self.redis_benchmark(users, args)?;
            let server = self.server_us(&[&args[0].to_lowercase()], self.p.ops)?;
            if args[0] == "IM.STORE" {
                let stored = self.im("im_messages")?;
                if (stored as f64) < 0.98 * self.p.ops as f64 {
                    return Err(fail(format!("{label}: only {stored} messages stored")));
                }
            }
            log(format!(
                "{tag:<6} redis-benchmark  {label:<50} {rate:>10.0} ops/s  {server:>6.2} µs/op (run {})",
                r + 1
            ));
            self.res
                .measure(section, label, Tool::RedisBenchmark, rate, server);
        }
        for c in &drv_cases {
            self.reset(c.setup, "user:", users)?;
            let mut t = self.traffic_of(c, upc, self.p.conns);
            let plan = Plan::new(self.p.conns, self.p.depth, self.ops_of(c, self.p.ops));
            self.reset_stats()?;
            let st = self.drive(&mut t, plan, c.label)?;
            let server = self.server_us(top_commands(c.kind, c.online), st.ops)?;
            log(format!(
                "{tag:<6} driver           {:<50} {:>10.0} ops/s  {server:>6.2} µs/op (run {})",
                c.label,
                st.rate(),
                r + 1
            ));
            self.res
                .measure(section, c.label, Tool::Driver, st.rate(), server);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- cycles

    fn cycles(&mut self) -> io::Result<()> {
        let cases = [
            case(L_CYCLE_IM, Setup::Online, Kind::ImCycle, true),
            case(L_CYCLE_SEED, Setup::Nothing, Kind::SeedCycle, true),
            case(L_CYCLE_LUA, Setup::Nothing, Kind::LuaCycle, true),
            case(L_CYCLE_STREAM, Setup::Groups, Kind::StreamCycle, true),
            case3(L_CYCLE_IM3, Setup::Online3, Kind::ImCycle),
            case(L_CYCLE_SIG1, Setup::Nothing, Kind::SignalCycle, true),
            case3(L_CYCLE_SIG3, Setup::Nothing, Kind::SignalCycle),
        ];
        let users = self.p.users;
        let upc = users / self.p.conns as u64;
        for r in 0..self.p.repeats {
            for c in &cases {
                self.reset(c.setup, "user:", users)?;
                let mut t = self.traffic_of(c, upc, self.p.conns);
                let plan = Plan::new(self.p.conns, self.p.depth, self.ops_of(c, self.p.ops));
                self.reset_stats()?;
                let st = self.drive(&mut t, plan, c.label)?;
                let server = self.server_us(top_commands(c.kind, c.online), st.ops)?;
                self.left_behind(c)?;
                log(format!(
                    "cycle  driver           {:<50} {:>10.0} ops/s  {server:>6.2} µs/op (run {})",
                    c.label,
                    st.rate(),
                    r + 1
                ));
                self.res
                    .measure(Section::Cycle, c.label, Tool::Driver, st.rate(), server);
            }
            // The same without pipelining: a thread per connection, each
            // command waiting for its reply (the seed's blocking client).
            for c in &cases {
                self.reset(c.setup, "user:", users)?;
                let t = self.traffic_of(c, upc, self.p.conns);
                let plan = Plan::new(self.p.conns, 1, self.ops_of(c, self.p.ops / 4));
                self.reset_stats()?;
                let st = load::run_threads(self.port(), plan, || t.clone())?;
                st.clean(c.label)?;
                let server = self.server_us(top_commands(c.kind, c.online), st.ops)?;
                self.left_behind(c)?;
                log(format!(
                    "cycle  unpipelined      {:<50} {:>10.0} ops/s  {server:>6.2} µs/op (run {})",
                    c.label,
                    st.rate(),
                    r + 1
                ));
                self.res
                    .measure(Section::CycleSync, c.label, Tool::Driver, st.rate(), server);
            }
        }
        Ok(())
    }

    /// Everything was acked: nothing may be left behind.
    fn left_behind(&mut self, c: &Case) -> io::Result<()> {
        let label = c.label;
        match c.kind {
            Kind::ImCycle => {
                let (m, p) = (self.im("im_messages")?, self.im("im_pending")?);
                if m != 0 || p != 0 {
                    return Err(fail(format!(
                        "{label}: {m} messages, {p} pending left after acking all"
                    )));
                }
            }
            Kind::SeedCycle | Kind::LuaCycle => {
                // Only the receipts stay (URT:<user>, RT:<terminal>).
                for pattern in ["SOGU:*", "OGM:*"] {
                    let left = self.admin.ok(&["KEYS", pattern])?;
                    let n = left.arr().map_or(-1, |a| a.len() as i64);
                    if n != 0 {
                        return Err(fail(format!(
                            "{label}: {n} {pattern} keys left after acking all"
                        )));
                    }
                }
            }
            Kind::SignalCycle => {
                // Each emptied queue goes with its metadata.
                let n = self.admin.ok(&["DBSIZE"])?.int().unwrap_or(-1);
                if n != 0 {
                    return Err(fail(format!("{label}: {n} keys left after removing all")));
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---------------------------------------------------------------- memory

    /// `used_memory` once the connections that filled the server are
    /// gone (`scale.rs`).
    fn used_memory(&mut self) -> io::Result<i64> {
        self.settled_memory()
    }

    fn memory(&mut self) -> io::Result<()> {
        let cases: Vec<(&str, Setup, Kind, bool)> = vec![
            (L_MEM_IM_OFF, Setup::Offline, Kind::ImStore, false),
            (L_MEM_IM_ON, Setup::Online, Kind::ImStore, true),
            (L_SEED_OFF, Setup::Nothing, Kind::SeedStore, false),
            (L_SEED_ON, Setup::Nothing, Kind::SeedStore, true),
            (L_LUA_OFF, Setup::Nothing, Kind::LuaStore, false),
            (L_XADD, Setup::Nothing, Kind::Xadd, true),
        ];
        let conns = if self.p.mem_users.is_multiple_of(8) {
            8
        } else {
            4
        };
        let upc = self.p.mem_users / conns as u64;
        for (label, setup, kind, online) in cases {
            self.admin.ok(&["FLUSHALL", "SYNC"])?;
            let before = self.used_memory()?;
            self.prepare(setup, "user:", self.p.mem_users)?;
            let users_only = if setup == Setup::Nothing {
                before
            } else {
                self.used_memory()?
            };
            let mut t = self.traffic(kind, online, upc, conns);
            let plan = Plan::new(conns, 64, self.p.mem_msgs);
            self.drive(&mut t, plan, label)?;
            let after = self.used_memory()?;
            let per = (after - before) as f64 / self.p.mem_msgs as f64;
            log(format!("memory {label:<60} {per:>8.1} bytes/message"));
            self.res.memory.push(MemRow {
                label: label.to_string(),
                bytes_per_msg: per,
                per_user: (users_only - before) as f64 / self.p.mem_users as f64,
                per_msg_after_users: (after - users_only) as f64 / self.p.mem_msgs as f64,
            });
        }
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        Ok(())
    }

    // ---------------------------------------------------------------- paging

    /// Loads `n` messages into one user's mailbox/keys; answers the reply
    /// of the middle store.
    fn load_one(&mut self, kind: Kind, who: &str, n: u64) -> io::Result<Option<Val>> {
        let mut t = self.traffic(kind, false, 1, 1);
        t.fixed_user = Some(who.to_string());
        t.mark = Some(n / 2);
        let plan = Plan::new(1, 512, n);
        self.drive(&mut t, plan, &format!("loading {who}"))?;
        Ok(t.marked)
    }

    /// Median and p99 (µs) of `reps` timings of each probe after a warm-up,
    /// and the server's own time per request (`INFO commandstats`). The
    /// probes take turns in blocks of 50 requests, so that whatever else
    /// the machine does in the meantime falls on all of them alike.
    fn time_interleaved(
        &mut self,
        reps: usize,
        probes: &mut [Probe<'_>],
    ) -> io::Result<Vec<Timing>> {
        const BLOCK: usize = 50;
        let mut c = Conn::connect(self.port())?;
        for p in probes.iter_mut() {
            for _ in 0..20 {
                p(&mut c)?;
            }
        }
        let mut us: Vec<Vec<f64>> = probes.iter().map(|_| Vec::with_capacity(reps)).collect();
        let mut server = vec![0.0; probes.len()];
        let mut done = 0;
        while done < reps {
            let n = BLOCK.min(reps - done);
            for (i, p) in probes.iter_mut().enumerate() {
                self.admin.ok(&["CONFIG", "RESETSTAT"])?;
                for _ in 0..n {
                    let t = Instant::now();
                    p(&mut c)?;
                    us[i].push(t.elapsed().as_secs_f64() * 1e6);
                }
                server[i] += self.server_usec()?;
            }
            done += n;
        }
        Ok(us
            .iter()
            .zip(server)
            .map(|(us, server)| Timing {
                median: percentile(us, 50.0),
                p99: percentile(us, 99.0),
                server: server / reps as f64,
            })
            .collect())
    }

    /// usec of every command but INFO and CONFIG since the last RESETSTAT.
    fn server_usec(&mut self) -> io::Result<f64> {
        let stats = self.admin.info("commandstats")?;
        Ok(stats
            .iter()
            .filter(|(k, _)| !k.starts_with("cmdstat_info") && !k.starts_with("cmdstat_config"))
            .filter_map(|(_, v)| v.split(',').find_map(|f| f.strip_prefix("usec=")))
            .filter_map(|v| v.parse::<f64>().ok())
            .sum())
    }

    /// Records the timings of a layout's two mailboxes (1k, 1M).
    fn page_row(&mut self, label: &str, probes: &mut [Probe<'_>]) -> io::Result<()> {
        let t = self.time_interleaved(self.p.page_reps, probes)?;
        let mut row = PageRow {
            label: label.into(),
            ..Default::default()
        };
        for (i, timing) in t.into_iter().enumerate() {
            row.set(i, timing);
        }
        log(format!("paging {row:?}"));
        self.res.paging.push(row);
        Ok(())
    }

    /// One layout's paging row: an empty server, a mailbox of each size
    /// loaded by `load`, then `probe`'s request timed on each.
    fn page_layout<T>(
        &mut self,
        label: &str,
        mut load: impl FnMut(&mut Self, u64) -> io::Result<T>,
        probe: impl for<'t> Fn(&'t T) -> Probe<'t>,
    ) -> io::Result<()> {
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        let mut targets = Vec::new();
        for n in [self.p.page_small, self.p.page_big] {
            let t0 = Instant::now();
            targets.push(load(self, n)?);
            log(format!(
                "paging load {label}: {n} messages in {:.1}s",
                t0.elapsed().as_secs_f64()
            ));
        }
        let mut probes: Vec<Probe<'_>> = targets.iter().map(&probe).collect();
        self.page_row(label, &mut probes)
    }

    fn paging(&mut self) -> io::Result<()> {
        // redis-im: one offline device, page 100 after the middle seq.
        self.page_layout(
            L_PAGE_IM,
            |b, n| {
                let who = format!("page:{n}");
                b.admin.ok(&["IM.CONNECT", &who, DEVICE])?;
                b.admin.ok(&["IM.DISCONNECT", &who, DEVICE])?;
                let mid = b.load_one(Kind::ImStore, &who, n)?;
                let seq = mid
                    .as_ref()
                    .and_then(|v| v.arr())
                    .and_then(|a| a.first())
                    .and_then(|s| s.int())
                    .ok_or_else(|| fail(format!("no seq in the middle store's reply {mid:?}")))?
                    .to_string();
                let info = b.admin.ok(&["IM.OFFLINE.INFO", &who, DEVICE])?.pairs();
                let count = info
                    .iter()
                    .find(|(k, _)| k == "count")
                    .and_then(|(_, v)| v.int());
                if count != Some(n as i64) {
                    return Err(fail(format!(
                        "{who}: IM.OFFLINE.INFO count {count:?}, expected {n}"
                    )));
                }
                Ok((who, seq))
            },
            |(who, seq)| {
                Box::new(move |c: &mut Conn| {
                    let v = c.call_str(&[
                        "IM.OFFLINE.PAGE",
                        who,
                        DEVICE,
                        "AFTER",
                        seq,
                        "COUNT",
                        "100",
                    ])?;
                    let items = v
                        .arr()
                        .and_then(|a| a.get(1))
                        .and_then(|p| p.arr())
                        .map_or(0, |p| p.len());
                    if items != 100 {
                        return Err(fail(format!(
                            "IM.OFFLINE.PAGE gave {items} messages: {}",
                            v.show()
                        )));
                    }
                    Ok(())
                })
            },
        )?;

        // The seed layout: ZRANGEBYSCORE for the ids, then HGETALL each.
        self.page_layout(
            L_PAGE_SEED,
            |b, n| {
                let who = format!("page:{n}");
                let mut t = b.traffic(Kind::SeedStore, false, 1, 1);
                t.fixed_user = Some(who.clone());
                let base = t.score_base;
                b.drive(&mut t, Plan::new(1, 512, n), "loading seed layout")?;
                Ok((format!("OFOFFLINE:{who}"), format!("({}", base + n / 2)))
            },
            |(key, min)| {
                Box::new(move |c: &mut Conn| {
                    let v =
                        c.call_str(&["ZRANGEBYSCORE", key, min, "+inf", "LIMIT", "0", "100"])?;
                    let ids = v
                        .arr()
                        .ok_or_else(|| fail(format!("ZRANGEBYSCORE: {}", v.show())))?;
                    if ids.len() != 100 {
                        return Err(fail(format!("ZRANGEBYSCORE gave {} ids", ids.len())));
                    }
                    for id in ids {
                        let mut k = b"OFOFFLINE:".to_vec();
                        k.extend_from_slice(id.bytes().unwrap_or_default());
                        c.cmd(&[b"HGETALL", &k]);
                    }
                    c.flush()?;
                    for _ in 0..100 {
                        let h = c.read()?;
                        if h.arr().map_or(0, |a| a.len()) != 6 {
                            return Err(fail(format!("HGETALL: {}", h.show())));
                        }
                    }
                    Ok(())
                })
            },
        )?;

        // Signal-style: the device's queue, a page after the middle
        // message's number (the queue numbers its messages from 1).
        self.page_layout(
            L_PAGE_SIGNAL,
            |b, n| {
                let who = format!("page:{n}");
                // What the insert script writes, written directly (as the
                // memory matrix does): the page is read by the script.
                let mut t = b.traffic(Kind::SignalFill, false, 1, 1);
                t.fixed_user = Some(who.clone());
                b.drive(&mut t, Plan::new(1, 512, n), "loading Signal-style queue")?;
                let [queue, _, _, lock] = workloads::signal_keys(who.as_bytes(), 1);
                Ok((queue, lock, (n / 2).to_string(), b.shas.signal_page.clone()))
            },
            |(queue, lock, after, sha)| {
                Box::new(move |c: &mut Conn| {
                    c.cmd(&[
                        b"EVALSHA",
                        sha.as_bytes(),
                        b"2",
                        queue,
                        lock,
                        b"100",
                        after.as_bytes(),
                    ]);
                    c.flush()?;
                    let v = c.read()?;
                    // Messages and their numbers.
                    if v.arr().map_or(0, |a| a.len()) != 200 {
                        return Err(fail(format!("Signal page: {}", v.show())));
                    }
                    Ok(())
                })
            },
        )?;

        // A stream per user: XRANGE after the middle entry.
        self.page_layout(
            L_PAGE_STREAM,
            |b, n| {
                let who = format!("page:{n}");
                let mid = b.load_one(Kind::Xadd, &who, n)?;
                let id = mid
                    .as_ref()
                    .and_then(|v| v.bytes())
                    .map(|b| format!("({}", String::from_utf8_lossy(b)))
                    .ok_or_else(|| fail("no id in the middle XADD's reply"))?;
                let key =
                    String::from_utf8_lossy(&workloads::stream_key(who.as_bytes())).into_owned();
                Ok((key, id))
            },
            |(key, id)| {
                Box::new(move |c: &mut Conn| {
                    let v = c.call_str(&["XRANGE", key, id, "+", "COUNT", "100"])?;
                    if v.arr().map_or(0, |a| a.len()) != 100 {
                        return Err(fail(format!("XRANGE: {}", v.show())));
                    }
                    Ok(())
                })
            },
        )?;
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        Ok(())
    }

    // ----------------------------------------------------------------- timer

    fn sweep_now(&mut self, due: i64) -> io::Result<(i64, f64)> {
        let t = Instant::now();
        let v = self.admin.ok(&["IM.SWEEP"])?;
        let rtt = t.elapsed().as_secs_f64() * 1e6;
        let resent = v
            .pairs()
            .iter()
            .find(|(k, _)| k == "resent")
            .and_then(|(_, v)| v.int());
        if resent != Some(due) {
            return Err(fail(format!(
                "IM.SWEEP resent {resent:?}, expected {due}: {}",
                v.show()
            )));
        }
        Ok((self.im("im_sweep_last_us")?, rtt))
    }

    fn timer(&mut self) -> io::Result<()> {
        let users = self.p.sweep_users;
        let conns = if users.is_multiple_of(8) { 8 } else { 4 };
        let upc = users / conns as u64;
        let due = (users * self.p.sweep_due_per_user) as i64;
        let total = (users * self.p.sweep_per_user) as i64;
        let gap: i64 = 1500;
        self.reset(Setup::Online, "user:", users)?;
        self.config_set("im.sweep-interval", 0)?;
        self.config_set("im.sweep-budget", self.p.budget_us)?;
        self.config_set("im.max-pending", 1_000_000_000)?;
        self.config_set("im.ack-timeout", 86_400_000)?;
        self.config_set("im.resend-interval", 86_400_000)?;

        // A: the deliveries that will be due.
        let mut t = self.traffic(Kind::ImStore, true, upc, conns);
        let plan = Plan::new(conns, 64, due as u64);
        self.drive(&mut t, plan, "timer: first batch")?;
        let end_a = now_ms();
        std::thread::sleep(Duration::from_millis(gap as u64));
        // Only A is pending: all of it due.
        self.config_set("im.resend-interval", now_ms() - end_a - gap / 2)?;
        let (alone_us, _) = self.sweep_now(due)?;
        let t1 = now_ms();
        log(format!(
            "timer: IM.SWEEP with {due} pending, all due: {alone_us} µs"
        ));
        std::thread::sleep(Duration::from_millis(gap as u64));

        // B: the rest, not due, stored quickly.
        let t0 = Instant::now();
        let mut t = self.traffic(Kind::ImStore, true, upc, conns);
        t.id_base = 1_000_000_000;
        let plan = Plan::new(conns, 64, (total - due) as u64);
        let st = self.drive(&mut t, plan, "timer: second batch")?;
        log(format!(
            "timer: stored {} more pending in {:.1}s ({:.0}/s)",
            total - due,
            t0.elapsed().as_secs_f64(),
            st.rate()
        ));
        let pending = self.im("im_pending")?;
        if pending != total {
            return Err(fail(format!(
                "{pending} pending deliveries, expected {total}"
            )));
        }
        // A (last sent at t1) is due again, B (stored after t1 + gap) not.
        self.config_set("im.resend-interval", now_ms() - t1 - gap / 2)?;
        let (mixed_us, rtt) = self.sweep_now(due)?;
        log(format!("timer: IM.SWEEP with {total} pending, {due} due: {mixed_us} µs (round trip {rtt:.0} µs)"));
        self.res.sweep = SweepRes {
            pending: total,
            due,
            alone_us,
            mixed_us,
            budget_us: self.p.budget_us,
            ..Default::default()
        };

        // Now B falls due over the next seconds: the timer has a backlog.
        // Stall test: a load runs while the timer works every 100 ms.
        let load_conns = 4usize;
        let load_upc = 25u64;
        self.prepare(Setup::Online, "load:", load_conns as u64 * load_upc)?;
        let plan = Plan {
            deadline: Some(Duration::from_secs_f64(self.p.stall_secs)),
            rate: Some(self.p.stall_rate),
            ..Plan::new(load_conns, 4, u64::MAX)
        };
        self.config_set("latency-monitor-threshold", 1)?;
        self.config_set("slowlog-log-slower-than", 1000)?;
        self.config_set("slowlog-max-len", 1000)?;
        self.admin.ok(&["SLOWLOG", "RESET"])?;
        self.admin.ok(&["LATENCY", "RESET"])?;
        let base = self.stall_run(plan, load_upc)?;
        let base_events = self.latency_events()?;
        log(format!(
            "stall: timer off: probe max {:.2} ms, events {base_events:?}, slowlog {:?}",
            base.probe_max_ms, base.slowest
        ));

        // The timer alone, nothing else running but the INFO poller.
        self.config_set("im.sweep-interval", 100)?;
        let quiet = self.stall_run(Plan { ops: 0, ..plan }, load_upc)?;
        log(format!(
            "stall: timer, no load: runs seen {}: p50 {} p99 {} max {} µs, {:.1} runs/s, {} runs within 20 ms of the previous",
            quiet.runs_seen, quiet.run_p50_us, quiet.run_p99_us, quiet.run_max_us, quiet.runs_per_sec, quiet.close_runs
        ));
        self.config_set("im.sweep-interval", 0)?;
        self.admin.ok(&["SLOWLOG", "RESET"])?;
        self.admin.ok(&["LATENCY", "RESET"])?;
        let (runs0, resent0) = (self.im("im_sweep_runs")?, self.im("im_resent")?);
        self.config_set("im.sweep-interval", 100)?;
        let on = self.stall_run(plan, load_upc)?;
        self.config_set("im.sweep-interval", 0)?;
        let events = self.latency_events()?;
        let runs = self.im("im_sweep_runs")? - runs0;
        let resent = self.im("im_resent")? - resent0;
        let longest_us = self.im("im_sweep_longest_us")?;
        let backlog = self.admin.ok(&["IM.SWEEP", "LIMIT", "0"])?;
        let next = backlog
            .pairs()
            .iter()
            .find(|(k, _)| k == "next")
            .and_then(|(_, v)| v.int());
        log(format!(
            "stall: timer on: {runs} runs, {resent} resent, runs seen {} of {runs}: p50 {} p99 {} max {} µs, probe max {:.2} ms, events {events:?}, slowlog {:?}, next due {next:?}",
            on.runs_seen, on.run_p50_us, on.run_p99_us, on.run_max_us, on.probe_max_ms, on.slowest
        ));
        self.res.sweep.timer_runs = runs;
        self.res.sweep.timer_resent = resent;
        self.res.sweep.timer_max_us = on.run_max_us;
        self.res.sweep.timer_max_cpu_us = on.run_max_cpu_us;
        self.res.sweep.timer_p50_us = on.run_p50_us;
        self.res.sweep.timer_p99_us = on.run_p99_us;
        self.res.sweep.runs_per_sec = on.runs_per_sec;
        self.res.sweep.close_runs = on.close_runs;
        self.res.sweep.quiet = QuietRuns {
            p50_us: quiet.run_p50_us,
            p99_us: quiet.run_p99_us,
            max_us: quiet.run_max_us,
            runs_seen: quiet.runs_seen,
        };
        self.res.sweep.quiet_runs_per_sec = quiet.runs_per_sec;
        self.res.sweep.quiet_close_runs = quiet.close_runs;
        self.res.sweep.timer_runs_seen = on.runs_seen;
        self.res.sweep.backlog_left = next == Some(0);
        self.res.stall = StallRes {
            secs: self.p.stall_secs,
            load_rate_off: base.load_rate,
            load_rate_on: on.load_rate,
            events,
            base_events,
            longest_us,
            probe_max_off_ms: base.probe_max_ms,
            probe_p99_off_ms: base.probe_p99_ms,
            probe_max_on_ms: on.probe_max_ms,
            probe_p99_on_ms: on.probe_p99_ms,
            slow_off: base.slowest,
            slow_on: on.slowest,
        };
        self.config_set("slowlog-log-slower-than", 10000)?;
        Ok(())
    }

    fn latency_events(&mut self) -> io::Result<Vec<LatencyEvent>> {
        let v = self.admin.ok(&["LATENCY", "LATEST"])?;
        let mut out = Vec::new();
        for e in v.arr().unwrap_or_default() {
            let Some(a) = e.arr() else { continue };
            let name =
                String::from_utf8_lossy(a.first().and_then(|x| x.bytes()).unwrap_or_default())
                    .into_owned();
            let max = a.get(3).and_then(|x| x.int()).unwrap_or(0);
            let hist = self.admin.ok(&["LATENCY", "HISTORY", &name])?;
            let hmax = hist
                .arr()
                .unwrap_or_default()
                .iter()
                .filter_map(|h| h.arr().and_then(|h| h.get(1)).and_then(|x| x.int()))
                .max()
                .unwrap_or(0);
            let n = hist.arr().map_or(0, |h| h.len());
            out.push(LatencyEvent {
                name,
                max_ms: max.max(hmax),
                samples: n,
            });
        }
        Ok(out)
    }

    /// Runs the load with a PING probe and an `INFO im` poller beside it.
    fn stall_run(&mut self, plan: Plan, upc: u64) -> io::Result<StallSample> {
        let stop = Arc::new(AtomicBool::new(false));
        let port = self.port();
        let probe = {
            let stop = stop.clone();
            std::thread::spawn(move || -> io::Result<Vec<f64>> {
                let mut c = Conn::connect(port)?;
                let mut rtts = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    c.call_str(&["PING"])?;
                    rtts.push(t.elapsed().as_secs_f64() * 1e3);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(rtts)
            })
        };
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || -> io::Result<(Vec<f64>, Vec<f64>, Vec<Instant>)> {
                let mut c = Conn::connect(port)?;
                let mut prev = c.info_i64("im", "im_sweep_runs")?;
                let mut seen = Vec::new();
                let mut seen_cpu = Vec::new();
                let mut when = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    let m = c.info("im")?;
                    let get = |k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                    let runs = get("im_sweep_runs");
                    if runs == prev + 1 {
                        seen.push(get("im_sweep_last_us") as f64);
                        seen_cpu.push(get("im_sweep_last_cpu_us") as f64);
                    }
                    for _ in prev..runs {
                        when.push(Instant::now());
                    }
                    prev = runs;
                }
                Ok((seen, seen_cpu, when))
            })
        };
        let mut t = self.traffic(Kind::ImCycle, true, upc, plan.conns);
        t.user_prefix = "load:".into();
        let st = if plan.ops == 0 {
            std::thread::sleep(plan.deadline.unwrap_or_default());
            Ok(Stats::default())
        } else {
            self.drive(&mut t, plan, "stall load")
        };
        stop.store(true, Ordering::Relaxed);
        let rtts = probe.join().map_err(|_| fail("probe panicked"))??;
        let (runs, runs_cpu, when) = poller.join().map_err(|_| fail("poller panicked"))??;
        let st = st?;
        let close_runs = when
            .windows(2)
            .filter(|w| w[1].duration_since(w[0]) < Duration::from_millis(20))
            .count() as u64;
        let runs_per_sec = match (when.first(), when.last()) {
            (Some(a), Some(b)) if when.len() > 1 => {
                (when.len() - 1) as f64 / b.duration_since(*a).as_secs_f64()
            }
            _ => 0.0,
        };
        let slow = self.admin.ok(&["SLOWLOG", "GET", "1000"])?;
        self.admin.ok(&["SLOWLOG", "RESET"])?;
        let mut slowest: Vec<SlowCommand> = Vec::new();
        for e in slow.arr().unwrap_or_default() {
            let Some(e) = e.arr() else { continue };
            let us = e.get(2).and_then(|v| v.int()).unwrap_or(0);
            let name = e
                .get(3)
                .and_then(|a| a.arr())
                .and_then(|a| a.first())
                .and_then(|n| n.bytes())
                .map(|n| String::from_utf8_lossy(n).to_uppercase())
                .unwrap_or_default();
            match slowest.iter_mut().find(|c| c.name == name) {
                Some(c) => c.max_us = c.max_us.max(us),
                None => slowest.push(SlowCommand { name, max_us: us }),
            }
        }
        slowest.sort_by_key(|c| -c.max_us);
        Ok(StallSample {
            load_rate: st.rate(),
            probe_max_ms: rtts.iter().cloned().fold(0.0, f64::max),
            probe_p99_ms: percentile(&rtts, 99.0),
            run_max_us: runs.iter().cloned().fold(0.0, f64::max) as i64,
            run_max_cpu_us: runs_cpu.iter().cloned().fold(0.0, f64::max) as i64,
            run_p50_us: percentile(&runs, 50.0) as i64,
            run_p99_us: percentile(&runs, 99.0) as i64,
            runs_seen: runs.len() as u64,
            runs_per_sec,
            close_runs,
            slowest,
        })
    }

    // ------------------------------------------------------------------- RDB

    fn rdb(&mut self) -> io::Result<()> {
        let messages = self.im("im_messages")?;
        let pending = self.im("im_pending")?;
        let keys = self.admin.ok(&["DBSIZE"])?.int().unwrap_or(0);
        let file = self.server.dir.join("bench.rdb");
        self.config_set("rdbcompression", "no")?;
        let t = Instant::now();
        self.admin.ok(&["SAVE"])?;
        let plain_secs = t.elapsed().as_secs_f64();
        let plain_size = std::fs::metadata(&file)?.len();
        self.config_set("rdbcompression", "yes")?;
        let t = Instant::now();
        self.admin.ok(&["SAVE"])?;
        let save_secs = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&file)?.len();
        log(format!(
            "rdb: SAVE of {messages} messages in {keys} keys: {save_secs:.2}s, {size} bytes (rdbcompression no: {plain_secs:.2}s, {plain_size} bytes)"
        ));
        self.server.stop();
        let up = self.server.start()?;
        self.admin = Conn::connect(self.port())?;
        let loaded = self.server.loaded_seconds();
        let (m2, p2) = (self.im("im_messages")?, self.im("im_pending")?);
        if m2 != messages || p2 != pending {
            return Err(fail(format!(
                "after restart {m2} messages / {p2} pending, before {messages} / {pending}"
            )));
        }
        log(format!(
            "rdb: restart answered PING after {:.2}s, log says loaded in {loaded:?}s",
            up.as_secs_f64()
        ));
        self.res.rdb = RdbRes {
            messages,
            keys,
            save_secs,
            bytes: size,
            plain_secs,
            plain_bytes: plain_size,
            load_secs: loaded,
            startup_secs: up.as_secs_f64(),
        };
        Ok(())
    }

    fn load_scripts(&mut self) -> io::Result<()> {
        let mut load = |s: &str| -> io::Result<String> {
            let v = self.admin.ok(&["SCRIPT", "LOAD", s])?;
            Ok(String::from_utf8_lossy(v.bytes().unwrap_or_default()).into_owned())
        };
        let shas = Shas {
            store: load(workloads::LUA_STORE)?,
            store_offline: load(workloads::LUA_STORE_OFFLINE)?,
            ack: load(workloads::LUA_ACK)?,
            signal_insert: load(workloads::SIGNAL_INSERT)?,
            signal_remove: load(workloads::SIGNAL_REMOVE)?,
            signal_page: load(workloads::SIGNAL_PAGE)?,
        };
        self.shas = shas;
        self.check_signal_scripts()
    }

    /// The Signal-style scripts do what Signal's do: an insert numbers the
    /// device's messages from 1 and a retried guid stores nothing, a page
    /// starts after its cursor and is empty while the queue's persist lock
    /// is held, a removal by guid answers the message, and the queue goes
    /// (its counter too) with its last message.
    fn check_signal_scripts(&mut self) -> io::Result<()> {
        let [queue, meta, channel, lock] = workloads::signal_keys(b"check:000000000000", 1);
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (queue, meta, channel, lock) = (s(&queue), s(&meta), s(&channel), s(&lock));
        let sh = self.shas.clone();
        let a = &mut self.admin;
        let mut got = Vec::new();
        for (msg, guid) in [("m-a", "a"), ("m-a", "a"), ("m-b", "b")] {
            let v = a.ok(&[
                "EVALSHA",
                &sh.signal_insert,
                "3",
                &queue,
                &meta,
                &channel,
                msg,
                guid,
                "e",
            ])?;
            got.push(v.int().unwrap_or(0));
        }
        let page = |a: &mut Conn, after: &str| -> io::Result<String> {
            let v = a.ok(&["EVALSHA", &sh.signal_page, "2", &queue, &lock, "10", after])?;
            Ok(v.show())
        };
        let pages = [page(a, "0")?, page(a, "1")?];
        a.ok(&["SET", &lock, "1"])?;
        let locked = page(a, "0")?;
        a.ok(&["DEL", &lock])?;
        let mut removed = Vec::new();
        for guid in ["a", "a", "b"] {
            let v = a.ok(&["EVALSHA", &sh.signal_remove, "2", &queue, &meta, guid])?;
            removed.push(v.show());
        }
        let left = a.ok(&["EXISTS", &queue, &meta])?.int();
        let want_pages = [
            r#"["m-a", "1", "m-b", "2"]"#.to_string(),
            r#"["m-b", "2"]"#.to_string(),
        ];
        if got != [1, 1, 2]
            || pages != want_pages
            || locked != "[]"
            || removed != [r#"["m-a"]"#, "[]", r#"["m-b"]"#]
            || left != Some(0)
        {
            return Err(fail(format!(
                "the Signal-style scripts: inserts {got:?}, pages {pages:?}, locked {locked}, removals {removed:?}, keys left {left:?}"
            )));
        }
        Ok(())
    }
}

struct StallSample {
    load_rate: f64,
    probe_max_ms: f64,
    probe_p99_ms: f64,
    run_max_us: i64,
    /// The longest run seen in the CPU time it used (`im_sweep_last_cpu_us`).
    run_max_cpu_us: i64,
    run_p50_us: i64,
    run_p99_us: i64,
    runs_seen: u64,
    runs_per_sec: f64,
    /// Runs that came less than 20 ms after the one before.
    close_runs: u64,
    /// SLOWLOG (> 1 ms) during the run: command and its longest µs.
    slowest: Vec<SlowCommand>,
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The CPU's data caches as the kernel gives them for CPU 0
/// (`/sys/devices/system/cpu/cpu0/cache`), e.g. `L1d 48K, L2 2048K, L3
/// 491520K`: whether 100,000 mailboxes fit in the last level decides much of
/// the store's time, so runs on machines with other caches differ.
fn caches() -> String {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| {
            let kind = read(e.path().join("type"));
            let name = match kind.as_str() {
                "Instruction" => return None,
                "Data" => format!("L{}d", read(e.path().join("level"))),
                _ => format!("L{}", read(e.path().join("level"))),
            };
            Some((name, read(e.path().join("size"))))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return "unknown".into();
    }
    out.iter()
        .map(|(n, s)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn machine(module: &std::path::Path, appendonly: bool) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let repo = module
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let commit = cmd_out("git", &["-C", &repo, "rev-parse", "--short", "HEAD"]);
    let dirty = !cmd_out(
        "git",
        &[
            "-C",
            &repo,
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ],
    )
    .is_empty();
    vec![
        (
            "date (UTC)".into(),
            cmd_out("date", &["-u", "+%Y-%m-%d %H:%M"]),
        ),
        ("nproc".into(), nproc.to_string()),
        ("CPU".into(), model),
        ("caches (CPU 0)".into(), caches()),
        (
            "memory".into(),
            format!("{:.1} GiB", mem_kb / 1024.0 / 1024.0),
        ),
        ("kernel".into(), kernel.trim().to_string()),
        (
            "load average at start (1, 5, 15 min)".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "redis-server".into(),
            cmd_out("redis-server", &["--version"]),
        ),
        (
            "persistence".into(),
            if appendonly {
                "appendonly yes, appendfsync everysec (`--appendonly`)".into()
            } else {
                "none (no AOF, no save points, no replica)".into()
            },
        ),
        (
            "module".into(),
            format!(
                "redis-im {commit}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
    ]
}

fn usage() -> ! {
    eprintln!(
        "usage: im-bench suite [--quick] --module PATH [--floor PATH] [--work DIR] [--json FILE] [--md FILE] [--svg FILE]\n\
         \x20                    [--ops N] [--repeats R] [--conns C] [--depth D] [--scale-max ENTRIES]\n\
         \x20                    [--appendonly]\n\
         \x20                    [--only stores,cycles,memory,scale,paging,timer,rdb,catchup]\n\
         \x20      im-bench render --json FILE [--md FILE] [--svg FILE]"
    );
    std::process::exit(2);
}

fn main() {
    elapsed_total();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = match args.first().map(|s| s.as_str()) {
        Some("suite") => suite(&suite_args(&args[1..])),
        Some("render") => render_cmd(&args[1..]),
        _ => usage(),
    };
    if let Err(e) = done {
        eprintln!("im-bench: {e}");
        std::process::exit(1);
    }
}

/// What `suite` is to do: the sizes, the phases, where things go.
struct SuiteArgs {
    p: Params,
    phases: Vec<String>,
    module: PathBuf,
    work: PathBuf,
    out: Outputs,
    appendonly: bool,
    /// The store's floor module (`--floor`), loaded beside redis-im.
    floor: Option<PathBuf>,
}

/// Where a run's results go: the JSON, the report and the plot.
struct Outputs {
    json: PathBuf,
    md: PathBuf,
    svg: PathBuf,
}

fn suite_args(args: &[String]) -> SuiteArgs {
    let mut quick = false;
    let mut appendonly = false;
    let mut module = None;
    let mut floor = None;
    let mut work = PathBuf::from("run-data/bench");
    let (mut json, mut md, mut svg) = (None, None, None);
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => quick = true,
            "--appendonly" => appendonly = true,
            "--module" => module = Some(PathBuf::from(val())),
            "--floor" => floor = Some(PathBuf::from(val())),
            "--work" => work = PathBuf::from(val()),
            "--json" => json = Some(PathBuf::from(val())),
            "--md" => md = Some(PathBuf::from(val())),
            "--svg" => svg = Some(PathBuf::from(val())),
            "--only" => only = Some(val()),
            "--ops" | "--repeats" | "--conns" | "--depth" | "--scale-max" => {
                overrides.push((a.clone(), val()))
            }
            _ => usage(),
        }
    }
    let Some(module) = module else { usage() };
    let out = Outputs {
        json: json.unwrap_or_else(|| work.join("bench.json")),
        md: md.unwrap_or_else(|| work.join("bench.md")),
        svg: svg.unwrap_or_else(|| work.join("bench.svg")),
    };
    SuiteArgs {
        p: params(quick, overrides),
        phases: phases(only),
        module,
        work,
        out,
        appendonly,
        floor,
    }
}

/// The run's sizes: `--quick`'s or the full ones, and the options given.
fn params(quick: bool, overrides: Vec<(String, String)>) -> Params {
    let mut p = Params::new(quick);
    for (k, v) in overrides {
        let n: u64 = v.parse().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--ops" => p.ops = n,
            "--repeats" => p.repeats = n.max(1) as usize,
            "--conns" => p.conns = n.max(1) as usize,
            "--depth" => p.depth = n.max(1) as usize,
            "--scale-max" => p.scale_max_copies = n,
            _ => {}
        }
    }
    p
}

/// The phases `--only` names (all of them without it).
fn phases(only: Option<String>) -> Vec<String> {
    let phases: Vec<String> = only
        .map(|o| o.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_else(|| PHASES.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
        eprintln!(
            "im-bench: unknown phase {bad}; phases are {}",
            PHASES.join(",")
        );
        std::process::exit(2);
    }
    phases
}

/// `render`: the report and the plot of results a suite wrote, by default
/// beside them (`bench.json` gives `bench.md` and `bench.svg`).
fn render_cmd(args: &[String]) -> io::Result<()> {
    let (mut json, mut md, mut svg) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().map(PathBuf::from).unwrap_or_else(|| usage());
        match a.as_str() {
            "--json" => json = Some(val()),
            "--md" => md = Some(val()),
            "--svg" => svg = Some(val()),
            _ => usage(),
        }
    }
    let Some(json) = json else { usage() };
    let text =
        std::fs::read_to_string(&json).map_err(|e| fail(format!("{}: {e}", json.display())))?;
    let r = Results::from_json(&text).map_err(|e| fail(format!("{}: {e}", json.display())))?;
    let md = md.unwrap_or_else(|| json.with_extension("md"));
    let svg = svg.unwrap_or_else(|| json.with_extension("svg"));
    write_files(&[(&md, markdown::markdown(&r)), (&svg, svg::svg(&r))])?;
    println!("{}", targets_text(&r));
    Ok(())
}

/// Writes each file, making its directory first.
fn write_files(files: &[(&std::path::Path, String)]) -> io::Result<()> {
    for (path, text) in files {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, text)?;
    }
    let names: Vec<String> = files.iter().map(|f| f.0.display().to_string()).collect();
    log(format!("wrote {}", names.join(", ")));
    Ok(())
}

/// In the order they run: `rdb` saves what `timer` left, `catchup`
/// empties the server.
const PHASES: &[&str] = &[
    "stores", "cycles", "memory", "scale", "paging", "timer", "rdb", "catchup",
];

fn suite(a: &SuiteArgs) -> io::Result<()> {
    std::fs::create_dir_all(&a.work)?;
    let _ = std::fs::remove_file(a.work.join("bench.rdb"));
    let _ = std::fs::remove_file(a.work.join("redis.log"));
    let module = std::fs::canonicalize(&a.module)?;
    let work = std::fs::canonicalize(&a.work)?;
    let _ = std::fs::remove_dir_all(work.join("appendonlydir"));
    let mut server = Server::new(&module, &work, server::free_port()?);
    server.appendonly = a.appendonly;
    server.floor = a.floor.as_ref().map(std::fs::canonicalize).transpose()?;
    server.start()?;
    let admin = Conn::connect(server.port)?;
    let mut s = Suite {
        res: Results::new(machine(&module, a.appendonly), a.p.clone()),
        p: a.p.clone(),
        server,
        admin,
        shas: Shas::default(),
    };
    log(format!(
        "redis-server on port {} with {}",
        s.port(),
        module.display()
    ));
    s.config_set("im.max-pending", 1_000_000_000)?;
    s.load_scripts()?;
    let on = |name: &str| a.phases.iter().any(|p| p == name);
    if on("stores") {
        s.stores()?;
    }
    if on("cycles") {
        s.cycles()?;
    }
    if on("memory") {
        s.memory()?;
    }
    if on("scale") {
        s.scale()?;
    }
    if on("paging") {
        s.paging()?;
    }
    if on("timer") {
        s.timer()?;
    }
    if on("rdb") {
        s.rdb()?;
    }
    if on("catchup") {
        s.catchup()?;
    }
    s.server.stop();
    s.res.total_secs = elapsed_total();
    s.res.evaluate();
    let (r, out) = (&s.res, &a.out);
    write_files(&[
        (&out.json, r.to_json()?),
        (&out.md, markdown::markdown(r)),
        (&out.svg, svg::svg(r)),
    ])?;
    println!("{}", targets_text(r));
    Ok(())
}
