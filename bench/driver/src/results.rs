//! The results of a run, as the suite records them and as JSON keeps them,
//! and the targets they are held to; the helpers of numbers' text shared by
//! the renderings (`markdown.rs`, `svg.rs`).

use crate::workloads::STANZA_BYTES;
use crate::{percentile, Params};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt::Write;
use std::io;

/// The version of the results' JSON (its `format`); a change that older
/// files do not fit takes a new one.
pub const FORMAT: u32 = 1;

pub const L_PING: &str = "PING";
pub const L_HSET: &str = "HSET OGM:<id> STANZA … CREATIONDATE …";
pub const L_IM_ON: &str = "IM.STORE, device online (pending)";
pub const L_IM_OFF: &str = "IM.STORE, device offline";
pub const L_SEED_ON: &str = "seed layout: SADD SOGU + HMSET OGM";
pub const L_SEED_OFF: &str = "seed layout offline: ZADD + HMSET OFOFFLINE";
pub const L_LUA_ON: &str = "Lua EVALSHA: SADD SOGU + HSET OGM";
pub const L_LUA_OFF: &str = "Lua EVALSHA offline: ZADD + HSET OFOFFLINE";
pub const L_XADD: &str = "XADD to a stream per user";
/// The server finding a user's existing key and nothing more: the part of
/// every store to an existing mailbox (or per-user key) that the module
/// cannot shorten, where `HSET` of a new key mostly finds an empty slot.
pub const L_TYPE: &str = "TYPE user:<id> (the server finds the user's key, nothing more)";
/// The floor of a module's store (`bench/floor`): open the user's existing
/// key, append the stanza, reply as `IM.STORE` does for one pending device;
/// no parse, index, deliveries or schedule.
pub const L_FLOOR: &str =
    "FLOOR.STORE (a module's least store: open the key, append, IM.STORE's reply)";
/// A module command on a missing key answering with one reply call, and
/// the same with 17: what the server's module API itself costs.
pub const L_API_ONE: &str = "IM.DEVICES on a missing key (1 reply call)";
pub const L_API_MANY: &str = "IM.INFO on a missing key (17 reply calls)";
pub const L_CYCLE_IM: &str = "redis-im: IM.STORE, IM.ACK";
pub const L_CYCLE_SEED: &str = "seed layout: SADD+HMSET, SADD URT+SADD RT+SREM+DEL";
pub const L_CYCLE_LUA: &str = "Lua: EVALSHA store, EVALSHA ack";
pub const L_CYCLE_STREAM: &str = "streams: XADD+XREADGROUP, XACK";
pub const L_CYCLE_IM3: &str = "redis-im, 3 devices: IM.STORE, IM.ACK by each";
pub const L_CYCLE_SIG1: &str = "Signal-style, 1 device: insert, remove by guid";
pub const L_CYCLE_SIG3: &str = "Signal-style, 3 devices: insert ×3, remove ×3";
pub const L_SIG1_STORE: &str = "Signal-style EVALSHA insert, 1 device";
pub const L_SIG3_STORE: &str = "Signal-style EVALSHA insert ×3, 3 devices";
pub const L_MEM_IM_OFF: &str = "redis-im, offline device";
pub const L_MEM_IM_ON: &str = "redis-im, online device (pending)";
pub const L_PAGE_IM: &str = "redis-im: IM.OFFLINE.PAGE AFTER <seq> COUNT 100";
pub const L_PAGE_SEED: &str = "seed layout: ZRANGEBYSCORE LIMIT 100 + 100 HGETALL";
pub const L_PAGE_STREAM: &str = "stream: XRANGE (<id> + COUNT 100";
pub const L_PAGE_SIGNAL: &str = "Signal-style: EVALSHA page (ZRANGE BYSCORE (<n> +inf LIMIT 0 100)";
pub const L_SC_IM: &str = "redis-im, 1 device registered (offline)";
pub const L_SC_IM3: &str = "redis-im, 3 devices registered (offline)";
pub const L_SC_IM_NONE: &str = "redis-im, no registered device";
pub const L_SC_SIG1: &str = "Signal-style, 1 device";
pub const L_SC_SIG3: &str = "Signal-style, 3 devices (3 copies)";

/// The memory goals: redis-im's bytes per message after the users exist,
/// as a multiple of the stanza, for 1, 5 and 100 messages per user (at
/// `Params::scale_goal_users`).
pub const MEM_GOALS: [(u64, f64); 3] = [(1, 1.5), (5, 1.3), (100, 1.15)];
/// The most a registered device may add to its mailbox (bytes).
pub const DEVICE_GOAL: f64 = 48.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Store,
    /// Single stores over `Params::users_many` users.
    StoreMany,
    Cycle,
    /// Cycles without pipelining.
    CycleSync,
}

/// What timed a measure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    RedisBenchmark,
    /// The driver's load loop (`load.rs`).
    Driver,
}

/// One figure (operations or cycles per second), once per repeat, and
/// the server's own time per operation in each run (µs, `INFO
/// commandstats` of the commands the client sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub section: Section,
    pub label: String,
    pub tool: Tool,
    pub runs: Vec<f64>,
    #[serde(default)]
    pub server_us: Vec<f64>,
}

impl Measure {
    pub fn median(&self) -> f64 {
        percentile(&self.runs, 50.0)
    }

    /// The median server time per operation (µs); NaN when not measured.
    pub fn server(&self) -> f64 {
        if self.server_us.is_empty() {
            f64::NAN
        } else {
            percentile(&self.server_us, 50.0)
        }
    }
}

/// One cell of the memory matrix: a layout, its users and their messages,
/// and `used_memory` at each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleCell {
    pub label: String,
    pub users: u64,
    pub per_user: u64,
    /// Entries stored per message (the Signal-style layout keeps a copy
    /// per device).
    pub copies: u64,
    /// `used_memory`: the empty server, after the users registered their
    /// devices (the same when the layout keeps none in Redis), after the
    /// messages.
    pub before: i64,
    pub users_only: i64,
    pub after: i64,
    /// How long storing the messages took (s).
    pub fill_secs: f64,
}

impl ScaleCell {
    pub fn messages(&self) -> u64 {
        self.users * self.per_user
    }
    /// Bytes per message counted from an empty server, the users' keys
    /// included.
    pub fn bytes_from_empty(&self) -> f64 {
        (self.after - self.before) as f64 / self.messages().max(1) as f64
    }
    /// Bytes per message after the users exist.
    pub fn bytes_after_users(&self) -> f64 {
        (self.after - self.users_only) as f64 / self.messages().max(1) as f64
    }
    /// Bytes per user before any message.
    pub fn per_user_bytes(&self) -> f64 {
        (self.users_only - self.before) as f64 / self.users.max(1) as f64
    }
}

/// A cell of the matrix left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSkip {
    pub label: String,
    pub users: u64,
    pub per_user: u64,
    pub why: String,
}

/// `used_memory` of empty mailboxes, remembering 1, 2, then 3 registered
/// (offline) devices.
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCosts {
    pub users: u64,
    pub before: i64,
    /// With 1, 2 and 3 devices.
    pub with: Vec<i64>,
}

impl DeviceCosts {
    /// Bytes per user with `n` devices (1 to 3).
    pub fn per_user(&self, n: usize) -> f64 {
        self.with.get(n.wrapping_sub(1)).map_or(f64::NAN, |m| {
            (m - self.before) as f64 / self.users.max(1) as f64
        })
    }
    /// What each device after the first added, per mailbox (bytes).
    pub fn steps(&self) -> Vec<f64> {
        self.with
            .windows(2)
            .map(|w| ((w[1] - w[0]) as f64 / self.users.max(1) as f64 * 10.0).round() / 10.0)
            .collect()
    }
    /// What one more device adds to a mailbox: the mean of the second and
    /// third device (bytes).
    pub fn per_device(&self) -> f64 {
        (self.per_user(3) - self.per_user(1)) / 2.0
    }
}

/// The memory matrix and the devices' costs (the `scale` phase).
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRes {
    pub cells: Vec<ScaleCell>,
    pub skipped: Vec<ScaleSkip>,
    /// Signal-style cells filled again by the insert script itself (the
    /// matrix writes the keys directly).
    pub script_checks: Vec<ScaleCell>,
    pub max_copies: u64,
    pub devices: Option<DeviceCosts>,
    /// The phase's duration (s).
    pub secs: f64,
}

impl ScaleRes {
    pub fn cell(&self, label: &str, users: u64, per_user: u64) -> Option<&ScaleCell> {
        self.cells
            .iter()
            .find(|c| c.label == label && c.users == users && c.per_user == per_user)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemRow {
    pub label: String,
    pub bytes_per_msg: f64,
    /// Users and devices alone, before any message (per user).
    pub per_user: f64,
    /// The messages alone, after the users were there (per message).
    pub per_msg_after_users: f64,
}

/// Round-trip median and p99, and the server's own time, per request (µs).
#[derive(Default, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub median: f64,
    pub p99: f64,
    pub server: f64,
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRow {
    pub label: String,
    pub small: Timing,
    pub big: Timing,
}

impl PageRow {
    pub fn set(&mut self, i: usize, t: Timing) {
        if i == 0 {
            self.small = t;
        } else {
            self.big = t;
        }
    }
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRes {
    pub pending: i64,
    pub due: i64,
    /// IM.SWEEP with only the due deliveries pending.
    pub alone_us: i64,
    /// IM.SWEEP with all of them pending.
    pub mixed_us: i64,
    pub budget_us: i64,
    pub timer_runs: i64,
    pub timer_runs_seen: u64,
    pub timer_resent: i64,
    pub timer_max_us: i64,
    /// The longest run seen in the CPU time it used (0 in results from
    /// before the module reported it: the budget is then judged on wall
    /// time).
    #[serde(default)]
    pub timer_max_cpu_us: i64,
    pub timer_p50_us: i64,
    pub timer_p99_us: i64,
    #[serde(deserialize_with = "nan_if_null")]
    pub runs_per_sec: f64,
    pub close_runs: u64,
    /// The timer with no load.
    pub quiet: QuietRuns,
    #[serde(deserialize_with = "nan_if_null")]
    pub quiet_runs_per_sec: f64,
    pub quiet_close_runs: u64,
    /// Work was still due when the load stopped (every run was a full one).
    pub backlog_left: bool,
}

/// The timer's runs with no load at all.
#[derive(Default, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuietRuns {
    pub p50_us: i64,
    pub p99_us: i64,
    pub max_us: i64,
    pub runs_seen: u64,
}

/// An event of `LATENCY LATEST` and its `LATENCY HISTORY`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyEvent {
    pub name: String,
    pub max_ms: i64,
    pub samples: usize,
}

/// A command of `SLOWLOG` and its longest time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowCommand {
    pub name: String,
    pub max_us: i64,
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallRes {
    pub secs: f64,
    pub load_rate_off: f64,
    pub load_rate_on: f64,
    /// Timer on.
    pub events: Vec<LatencyEvent>,
    /// Timer off.
    pub base_events: Vec<LatencyEvent>,
    pub longest_us: i64,
    pub probe_max_off_ms: f64,
    pub probe_p99_off_ms: f64,
    pub probe_max_on_ms: f64,
    pub probe_p99_on_ms: f64,
    pub slow_off: Vec<SlowCommand>,
    pub slow_on: Vec<SlowCommand>,
}

impl StallRes {
    pub fn events_max_ms(&self) -> i64 {
        self.events.iter().map(|e| e.max_ms).max().unwrap_or(0)
    }
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdbRes {
    pub messages: i64,
    pub keys: i64,
    pub save_secs: f64,
    pub bytes: u64,
    pub plain_secs: f64,
    pub plain_bytes: u64,
    pub load_secs: Option<f64>,
    pub startup_secs: f64,
}

/// The kind of a flow of expiries (the `catchup` phase).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// Every delivery on a fresh user and device: one kick per delivery.
    KickEach,
    /// Bursts of deliveries to a few thousand devices that come back:
    /// one kick expires a whole burst.
    ManyPerDevice,
}

/// Round-trip times of one client's requests (ms).
#[derive(Default, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub requests: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One flow of deliveries falling due at a steady rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRes {
    pub kind: FlowKind,
    /// Deliveries per second the producer was asked for.
    pub rate: f64,
    /// Deliveries stored, and their rate over the whole flow.
    pub stored: u64,
    pub achieved: f64,
    /// Devices the flow used.
    pub devices: u64,
    /// Deliveries each kick expires.
    pub per_kick: u64,
    /// `im_expired` and `im_kicked` over the flow and its drain.
    pub expired: i64,
    pub kicked: i64,
    /// The steady window (s): deliveries falling due in it are judged.
    pub window_secs: f64,
    /// Deliveries whose deadline fell in the window.
    pub due: u64,
    /// Deliveries whose kick arrived in the window.
    pub expired_in_window: u64,
    /// Deliveries due in the window that no kick expired by the end of the
    /// drain (their lag counts as the time to the drain's end).
    pub missing: u64,
    /// Lag of the deliveries due in the window (ms).
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// The lowest lag, or 0 (ms): below 0 by up to 1 ms, as the module
    /// counts time in whole ms.
    pub lag_min_ms: f64,
    /// Median lag of the deliveries due in the window's first and last
    /// second (ms): a growing backlog shows as a growing lag.
    pub lag_first_ms: f64,
    pub lag_last_ms: f64,
    /// `im_sweep_us_total` and `im_sweep_runs` over the window.
    pub timer_us: i64,
    pub timer_runs: i64,
    /// The server's main thread over the window: on a CPU, and runnable
    /// but waiting for one (% of the time, `/proc/<pid>/schedstat`).
    pub server_cpu_pct: f64,
    pub server_wait_pct: f64,
    /// The producer's thread over the flow, on a CPU (%).
    pub producer_cpu_pct: f64,
    /// From the producer's end until nothing was pending (s).
    pub drain_secs: f64,
    /// The concurrent client during the window, when it ran.
    pub client: Option<Latency>,
}

/// A flow saturates when its lag grows by more than this over the window
/// (ms).
pub const LAG_GROWTH_MS: f64 = 100.0;
/// A flow reached its rate when the producer stored at least this share
/// of it.
pub const REACHED: f64 = 0.97;

impl FlowRes {
    /// Deliveries falling due per second in the window.
    pub fn due_rate(&self) -> f64 {
        self.due as f64 / self.window_secs.max(1e-9)
    }

    /// Deliveries expired per second in the window.
    pub fn expiry_rate(&self) -> f64 {
        self.expired_in_window as f64 / self.window_secs.max(1e-9)
    }

    pub fn kick_rate(&self) -> f64 {
        self.due_rate() / self.per_kick.max(1) as f64
    }

    /// The timer's share of one core in the window (%).
    pub fn cpu_pct(&self) -> f64 {
        self.timer_us as f64 / (self.window_secs.max(1e-9) * 1e6) * 100.0
    }

    pub fn runs_per_sec(&self) -> f64 {
        self.timer_runs as f64 / self.window_secs.max(1e-9)
    }

    /// The timer's time per kick in the window (µs).
    pub fn us_per_kick(&self) -> f64 {
        let kicks = self.expired_in_window as f64 / self.per_kick.max(1) as f64;
        self.timer_us as f64 / kicks.max(1.0)
    }

    pub fn lag_growth_ms(&self) -> f64 {
        self.lag_last_ms - self.lag_first_ms
    }

    /// The timer kept up: its lag did not grow over the window and nothing
    /// was left unexpired.
    pub fn keeps_up(&self) -> bool {
        self.missing == 0 && self.lag_growth_ms() <= LAG_GROWTH_MS
    }

    /// The producer stored what the flow asked for.
    pub fn reached(&self) -> bool {
        self.achieved >= REACHED * self.rate
    }
}

/// Flows of expiries at steady rates, and a client's `IM.STORE` latency
/// beside them (the `catchup` phase).
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchupRes {
    pub ack_timeout_ms: i64,
    /// `sweep-effort` (%): the most of a core the timer takes when behind.
    pub sweep_effort_pct: i64,
    /// Each flow's length, and when its window starts (s after its start).
    pub flow_secs: f64,
    pub window_from_secs: f64,
    /// The many kind: deliveries per device per burst, and how often a
    /// device comes back (s).
    pub per_device: u64,
    pub period_secs: f64,
    /// The producer's connections.
    pub conns: usize,
    /// The longest wait for a flow's last deliveries to expire (s).
    pub drain_max_secs: f64,
    /// The concurrent client with the timer idle (no flow).
    pub idle: Latency,
    /// The same beside the stores of the kick kind's flow at `CLIENT_AT`
    /// with `ack-timeout` a day: the store load without the timer's.
    pub stores_only: Option<Latency>,
    pub flows: Vec<FlowRes>,
}

/// The rate up to which the timer's lag is judged (deliveries/s).
pub const LAG_GOAL_UP_TO: f64 = 20_000.0;
/// The rate at which its backlog must stay bounded.
pub const BOUNDED_AT: f64 = 50_000.0;
/// The flows beside which the concurrent client runs.
pub const CLIENT_AT: f64 = 20_000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub measured: String,
    pub ratio: f64,
    pub goal: String,
    pub pass: bool,
}

impl Target {
    /// Passes when `a / b` is at least `goal`.
    fn at_least(name: &str, a: f64, b: f64, goal: f64, measured: String) -> Target {
        let r = a / b;
        Target {
            name: name.into(),
            measured,
            ratio: r,
            goal: format!("≥ {goal}"),
            pass: r >= goal,
        }
    }

    /// Passes when `r` is at most `goal`.
    fn at_most(name: &str, r: f64, goal: f64, measured: String) -> Target {
        Target {
            name: name.into(),
            measured,
            ratio: r,
            goal: format!("≤ {goal}"),
            pass: r <= goal,
        }
    }
}

/// All a run measured, its machine and sizes, and the targets' verdicts:
/// what the JSON holds, and all the renderings read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// `FORMAT`.
    pub format: u32,
    /// What `machine()` recorded, in its order (a JSON object).
    #[serde(with = "ordered_map")]
    pub machine: Vec<(String, String)>,
    #[serde(rename = "params")]
    pub p: Params,
    pub measures: Vec<Measure>,
    pub memory: Vec<MemRow>,
    pub paging: Vec<PageRow>,
    pub sweep: SweepRes,
    pub stall: StallRes,
    pub rdb: RdbRes,
    /// Absent unless the phase ran (older results have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<CatchupRes>,
    /// The memory matrix, absent unless the phase ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleRes>,
    pub targets: Vec<Target>,
    /// The goals of many users and of the Signal-style peer.
    #[serde(default)]
    pub goals: Vec<Target>,
    pub total_secs: f64,
}

/// A number that serde_json wrote as null (it was NaN or infinite) reads
/// back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Pairs as a JSON object, its keys in the pairs' order.
mod ordered_map {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    pairs.push(kv);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs)
    }
}

pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

impl Results {
    pub fn new(machine: Vec<(String, String)>, p: Params) -> Results {
        Results {
            format: FORMAT,
            machine,
            p,
            measures: Vec::new(),
            memory: Vec::new(),
            paging: Vec::new(),
            sweep: SweepRes::default(),
            stall: StallRes::default(),
            rdb: RdbRes::default(),
            catchup: None,
            scale: None,
            targets: Vec::new(),
            goals: Vec::new(),
            total_secs: 0.0,
        }
    }

    /// The results as JSON (pretty, ending with a newline).
    pub fn to_json(&self) -> io::Result<String> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// Results written by `to_json`, refused when of another `FORMAT`.
    pub fn from_json(text: &str) -> io::Result<Results> {
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_str(text)?;
        if head.format != FORMAT {
            return Err(io::Error::other(format!(
                "results of format {}, this im-bench reads format {FORMAT}",
                head.format
            )));
        }
        Ok(serde_json::from_str(text)?)
    }

    /// Records one run's rate `v` and the server's time per operation
    /// (µs).
    pub fn measure(&mut self, section: Section, label: &str, tool: Tool, v: f64, server_us: f64) {
        match self
            .measures
            .iter_mut()
            .find(|m| m.section == section && m.label == label && m.tool == tool)
        {
            Some(m) => {
                m.runs.push(v);
                m.server_us.push(server_us);
            }
            None => self.measures.push(Measure {
                section,
                label: label.into(),
                tool,
                runs: vec![v],
                server_us: vec![server_us],
            }),
        }
    }

    pub fn get(&self, section: Section, label: &str, tool: Tool) -> Option<&Measure> {
        self.measures
            .iter()
            .find(|m| m.section == section && m.label == label && m.tool == tool)
    }

    pub fn rate(&self, section: Section, label: &str, tool: Tool) -> f64 {
        self.get(section, label, tool)
            .map_or(f64::NAN, |m| m.median())
    }

    /// The median server time per operation (µs) of a measure.
    pub fn server(&self, section: Section, label: &str, tool: Tool) -> f64 {
        self.get(section, label, tool)
            .map_or(f64::NAN, |m| m.server())
    }

    fn mem(&self, label: &str) -> f64 {
        self.memory
            .iter()
            .find(|m| m.label == label)
            .map_or(f64::NAN, |m| m.bytes_per_msg)
    }

    /// The stall the timer causes: the longest latency event seen while it
    /// worked, or its longest run, whichever is larger (ms).
    pub fn stall_ms(&self) -> f64 {
        (self.stall.events_max_ms() as f64).max(self.sweep.timer_max_us as f64 / 1000.0)
    }

    /// Holds the results to their targets (`self.targets`, in a fixed
    /// order); a target whose figures were not measured is left out.
    pub fn evaluate(&mut self) {
        let mut t = self.throughput_targets();
        t.extend(self.space_and_paging_targets());
        // Without the timer phase (`--only`) there is nothing to judge.
        if self.sweep.timer_runs_seen > 0 {
            t.extend(self.timer_targets());
        }
        if let Some(c) = &self.catchup {
            t.extend(catchup_targets(c));
        }
        t.retain(|x| x.ratio.is_finite());
        let mut g = self.scale_goals();
        g.extend(self.server_time_goals());
        g.extend(self.many_users_goals());
        g.extend(self.signal_goals());
        // Paging and the timer as in the targets.
        g.extend(
            t.iter()
                .filter(|x| {
                    x.name.starts_with("paging")
                        || x.name.starts_with("timer run")
                        || x.name.starts_with("timer stall")
                })
                .cloned(),
        );
        g.retain(|x| x.ratio.is_finite());
        self.targets = t;
        self.goals = g;
    }

    /// redis-im's bytes per message after the users exist, and what a
    /// device adds to a mailbox.
    fn scale_goals(&self) -> Vec<Target> {
        let Some(sc) = &self.scale else {
            return Vec::new();
        };
        let mut t = Vec::new();
        for (i, (per, goal)) in MEM_GOALS.iter().enumerate() {
            let Some(users) = self.p.scale_goal_users.get(i) else {
                continue;
            };
            let Some(c) = sc.cell(L_SC_IM, *users, *per) else {
                continue;
            };
            t.push(Target::at_most(
                &format!(
                    "memory, {} users × {per}: ≤ {goal}× stanza",
                    thousands(*users as f64)
                ),
                c.bytes_after_users() / STANZA_BYTES as f64,
                *goal,
                format!(
                    "{:.0} bytes per {STANZA_BYTES}-byte stanza after the users exist ({:.0} from an empty server)",
                    c.bytes_after_users(),
                    c.bytes_from_empty()
                ),
            ));
        }
        if let Some(d) = &sc.devices {
            let steps: Vec<String> = d.steps().iter().map(|s| format!("{s:.1}")).collect();
            t.push(Target::at_most(
                &format!("a registered device adds ≤ {DEVICE_GOAL:.0} bytes"),
                d.per_device() / DEVICE_GOAL,
                1.0,
                format!(
                    "{:.1} bytes (2nd and 3rd device: {} bytes), {} empty mailboxes",
                    d.per_device(),
                    steps.join(" and "),
                    thousands(d.users as f64)
                ),
            ));
        }
        t
    }

    /// The server's time per `IM.STORE` against `HSET` of the stanza.
    fn server_time_goals(&self) -> Vec<Target> {
        let mut t = Vec::new();
        for (section, users) in [
            (Section::Store, self.p.users),
            (Section::StoreMany, self.p.users_many),
        ] {
            let sv = |l: &str| self.server(section, l, Tool::RedisBenchmark);
            for (label, what) in [(L_IM_ON, "pending"), (L_IM_OFF, "offline")] {
                let (a, b) = (sv(label), sv(L_HSET));
                t.push(Target::at_most(
                    &format!(
                        "server time, {} users: IM.STORE ({what}) ≤ 1.5× HSET",
                        thousands(users as f64)
                    ),
                    a / b,
                    1.5,
                    format!("{a:.2} vs {b:.2} µs per call"),
                ));
            }
        }
        t
    }

    /// Throughput over many users, redis-benchmark at depth `depth`.
    fn many_users_goals(&self) -> Vec<Target> {
        let rb = |l: &str| self.rate(Section::StoreMany, l, Tool::RedisBenchmark);
        let users = thousands(self.p.users_many as f64);
        let vs = |name: String, a: f64, b: f64, goal: f64| {
            let measured = format!("{} vs {} ops/s", thousands(a), thousands(b));
            Target::at_least(&name, a, b, goal, measured)
        };
        vec![
            vs(
                format!("{users} users: IM.STORE (pending) ≥ 0.9× HSET"),
                rb(L_IM_ON),
                rb(L_HSET),
                0.9,
            ),
            vs(
                format!("{users} users: IM.STORE (offline) ≥ 0.9× HSET"),
                rb(L_IM_OFF),
                rb(L_HSET),
                0.9,
            ),
            vs(
                format!("{users} users: IM.STORE (pending) ≥ 2.5× Lua store"),
                rb(L_IM_ON),
                rb(L_LUA_ON),
                2.5,
            ),
            vs(
                format!("{users} users: IM.STORE (offline) ≥ 2.5× Lua store (offline)"),
                rb(L_IM_OFF),
                rb(L_LUA_OFF),
                2.5,
            ),
        ]
    }

    /// Against the Signal-style layout with 3 devices per user: memory
    /// per message in every cell both were measured (the worst judged),
    /// and store+ack cycles.
    fn signal_goals(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(sc) = &self.scale {
            let worst = sc
                .cells
                .iter()
                .filter(|c| c.label == L_SC_IM3)
                .filter_map(|im| {
                    let sig = sc.cell(L_SC_SIG3, im.users, im.per_user)?;
                    Some((im, sig, im.bytes_from_empty() / sig.bytes_from_empty()))
                })
                .max_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((im, sig, r)) = worst {
                t.push(Target::at_most(
                    "memory per message ≤ 0.5× Signal-style, 3 devices",
                    r,
                    0.5,
                    format!(
                        "{:.0} vs {:.0} bytes from an empty server ({:.0} vs {:.0} after the users), {} users × {}: the highest ratio of the cells",
                        im.bytes_from_empty(),
                        sig.bytes_from_empty(),
                        im.bytes_after_users(),
                        sig.bytes_after_users(),
                        thousands(im.users as f64),
                        im.per_user
                    ),
                ));
            }
        }
        let cy = |l: &str| self.rate(Section::Cycle, l, Tool::Driver);
        let (a, b) = (cy(L_CYCLE_IM3), cy(L_CYCLE_SIG3));
        t.push(Target::at_least(
            "store+ack cycles ≥ 3× Signal-style, 3 devices",
            a,
            b,
            3.0,
            format!("{} vs {} cycles/s", thousands(a), thousands(b)),
        ));
        t
    }

    fn throughput_targets(&self) -> Vec<Target> {
        let rb = |l: &str| self.rate(Section::Store, l, Tool::RedisBenchmark);
        let cy = |l: &str| self.rate(Section::Cycle, l, Tool::Driver);
        let vs = |name: &str, a: f64, b: f64, goal: f64| {
            let measured = format!("{} vs {} ops/s", thousands(a), thousands(b));
            Target::at_least(name, a, b, goal, measured)
        };
        vec![
            vs(
                "IM.STORE (pending) ≥ 0.9× HSET",
                rb(L_IM_ON),
                rb(L_HSET),
                0.9,
            ),
            vs(
                "IM.STORE (offline) ≥ 0.9× HSET",
                rb(L_IM_OFF),
                rb(L_HSET),
                0.9,
            ),
            vs(
                "IM.STORE (pending) ≥ 2.5× Lua store",
                rb(L_IM_ON),
                rb(L_LUA_ON),
                2.5,
            ),
            vs(
                "IM.STORE (offline) ≥ 2.5× Lua store (offline)",
                rb(L_IM_OFF),
                rb(L_LUA_OFF),
                2.5,
            ),
            vs(
                "store+ack cycle ≥ 3× seed layout",
                cy(L_CYCLE_IM),
                cy(L_CYCLE_SEED),
                3.0,
            ),
            vs(
                "store+ack cycle ≥ 2× Lua",
                cy(L_CYCLE_IM),
                cy(L_CYCLE_LUA),
                2.0,
            ),
        ]
    }

    fn space_and_paging_targets(&self) -> Vec<Target> {
        let m = self.mem(L_MEM_IM_OFF);
        let mut t = vec![Target::at_most(
            "memory ≤ 1.2× stanza bytes",
            m / STANZA_BYTES as f64,
            1.2,
            format!("{m:.0} bytes per {STANZA_BYTES}-byte stanza"),
        )];
        if let Some(p) = self.paging.iter().find(|p| p.label == L_PAGE_IM) {
            t.push(Target::at_most(
                &format!(
                    "paging from {} ≤ 1.5× from {}",
                    count_name(self.p.page_big),
                    count_name(self.p.page_small)
                ),
                p.big.median / p.small.median,
                1.5,
                format!(
                    "{:.0} vs {:.0} µs round trip (server time {:.0} vs {:.0} µs)",
                    p.big.median, p.small.median, p.big.server, p.small.server
                ),
            ));
        }
        t
    }

    fn timer_targets(&self) -> Vec<Target> {
        let s = &self.sweep;
        let stall = self.stall_ms();
        // The budget is the module's: judged on the CPU time a run used,
        // since a run the system preempted is longer in wall time only.
        // What clients wait for is the stall, below, in wall time.
        let (run_us, run) = if s.timer_max_cpu_us > 0 {
            (
                s.timer_max_cpu_us,
                format!(
                    "longest of {} runs {} µs of CPU ({} µs wall time), budget {} µs",
                    s.timer_runs_seen, s.timer_max_cpu_us, s.timer_max_us, s.budget_us
                ),
            )
        } else {
            (
                s.timer_max_us,
                format!(
                    "longest of {} runs {} µs, budget {} µs",
                    s.timer_runs_seen, s.timer_max_us, s.budget_us
                ),
            )
        };
        vec![
            Target::at_most(
                "timer run ≤ 1.2× sweep-budget",
                run_us as f64 / s.budget_us as f64,
                1.2,
                run,
            ),
            Target::at_most(
                "timer stall ≤ 2 ms",
                stall / 2.0,
                1.0,
                format!(
                    "{stall:.2} ms (latency events max {} ms, longest run {:.2} ms)",
                    self.stall.events_max_ms(),
                    s.timer_max_us as f64 / 1000.0
                ),
            ),
        ]
    }
}

/// The name of a flow's kind, as the report writes it.
pub fn kind_name(k: FlowKind, per_device: u64) -> String {
    match k {
        FlowKind::KickEach => "kick per delivery".into(),
        FlowKind::ManyPerDevice => format!("{per_device} per device"),
    }
}

fn catchup_targets(c: &CatchupRes) -> Vec<Target> {
    let mut t = Vec::new();
    let judged: Vec<&FlowRes> = c
        .flows
        .iter()
        .filter(|f| f.rate <= LAG_GOAL_UP_TO)
        .collect();
    let worst = judged
        .iter()
        .max_by(|a, b| a.lag_p99_ms.total_cmp(&b.lag_p99_ms));
    if let Some(w) = worst {
        t.push(Target::at_most(
            &format!(
                "timer lag p99 ≤ 100 ms up to {}/s",
                thousands(LAG_GOAL_UP_TO)
            ),
            w.lag_p99_ms / 100.0,
            1.0,
            format!(
                "worst p99 {:.1} ms ({}/s, {}) of {} flows",
                w.lag_p99_ms,
                thousands(w.rate),
                kind_name(w.kind, c.per_device),
                judged.len()
            ),
        ));
    }
    let at: Vec<&FlowRes> = c.flows.iter().filter(|f| f.rate == BOUNDED_AT).collect();
    if !at.is_empty() {
        let growth = at
            .iter()
            .map(|f| f.lag_growth_ms())
            .fold(f64::NEG_INFINITY, f64::max);
        let measured = at
            .iter()
            .map(|f| {
                let mut what = if f.keeps_up() {
                    format!("expired {}/s", thousands(f.expiry_rate()))
                } else {
                    format!("saturates, expired {}/s", thousands(f.expiry_rate()))
                };
                if !f.reached() {
                    what += &format!(" (only {}/s stored)", thousands(f.achieved));
                }
                format!(
                    "{}: {what}, lag {:.0} → {:.0} ms",
                    kind_name(f.kind, c.per_device),
                    f.lag_first_ms,
                    f.lag_last_ms
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        t.push(Target {
            name: format!("timer backlog bounded at {}/s", thousands(BOUNDED_AT)),
            measured,
            ratio: growth / LAG_GROWTH_MS,
            goal: "≤ 1".into(),
            pass: at.iter().all(|f| f.keeps_up() && f.reached()),
        });
    }
    let busy = c
        .flows
        .iter()
        .filter(|f| f.rate == CLIENT_AT)
        .filter_map(|f| f.client.map(|l| (f, l)))
        .max_by(|a, b| a.1.p99_ms.total_cmp(&b.1.p99_ms));
    if let Some((f, l)) = busy {
        let more = l.p99_ms - c.idle.p99_ms;
        t.push(Target::at_most(
            "IM.STORE p99 beside the timer ≤ idle + 1 ms",
            more,
            1.0,
            format!(
                "{:.2} ms during the {}/s flow ({}) vs {:.2} ms idle: {more:+.2} ms",
                l.p99_ms,
                thousands(f.rate),
                kind_name(f.kind, c.per_device),
                c.idle.p99_ms
            ),
        ));
    }
    t
}

pub fn count_name(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// The targets, then the goals, as text (what `suite` and `render`
/// print).
pub fn targets_text(r: &Results) -> String {
    let mut s = String::new();
    for (head, list) in [("target", &r.targets), ("goal", &r.goals)] {
        if list.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(s, "{head:<62} ratio   goal    result  measured");
        for t in list {
            let _ = writeln!(
                s,
                "{:<62} {:>6.2}  {:<6}  {:<6}  {}",
                t.name,
                t.ratio,
                t.goal,
                if t.pass { "PASS" } else { "FAIL" },
                t.measured
            );
        }
    }
    s
}
