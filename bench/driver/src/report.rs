//! The results, the targets they are held to, and their two renderings:
//! a Markdown report and an SVG plot (written by hand, no dependencies).

use crate::workloads::STANZA_BYTES;
use crate::{percentile, Params};
use std::fmt::Write;

pub const TOOL_RB: &str = "redis-benchmark";
pub const TOOL_DRIVER: &str = "driver";

pub const L_PING: &str = "PING";
pub const L_HSET: &str = "HSET OGM:<id> STANZA … CREATIONDATE …";
pub const L_IM_ON: &str = "IM.STORE, device online (pending)";
pub const L_IM_OFF: &str = "IM.STORE, device offline";
pub const L_SEED_ON: &str = "seed layout: SADD SOGU + HMSET OGM";
pub const L_SEED_OFF: &str = "seed layout offline: ZADD + HMSET OFOFFLINE";
pub const L_LUA_ON: &str = "Lua EVALSHA: SADD SOGU + HSET OGM";
pub const L_LUA_OFF: &str = "Lua EVALSHA offline: ZADD + HSET OFOFFLINE";
pub const L_XADD: &str = "XADD to a stream per user";
/// A module command on a missing key answering with one reply call, and
/// the same with 17: what the server's module API itself costs.
pub const L_API_ONE: &str = "IM.DEVICES on a missing key (1 reply call)";
pub const L_API_MANY: &str = "IM.INFO on a missing key (17 reply calls)";
pub const L_CYCLE_IM: &str = "redis-im: IM.STORE, IM.ACK";
pub const L_CYCLE_SEED: &str = "seed layout: SADD+HMSET, SADD URT+SADD RT+SREM+DEL";
pub const L_CYCLE_LUA: &str = "Lua: EVALSHA store, EVALSHA ack";
pub const L_CYCLE_STREAM: &str = "streams: XADD+XREADGROUP, XACK";
pub const L_MEM_IM_OFF: &str = "redis-im, offline device";
pub const L_MEM_IM_ON: &str = "redis-im, online device (pending)";
pub const L_PAGE_IM: &str = "redis-im: IM.OFFLINE.PAGE AFTER <seq> COUNT 100";
pub const L_PAGE_SEED: &str = "seed layout: ZRANGEBYSCORE LIMIT 100 + 100 HGETALL";
pub const L_PAGE_STREAM: &str = "stream: XRANGE (<id> + COUNT 100";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Store,
    Cycle,
    /// Cycles without pipelining.
    CycleSync,
}

pub struct Measure {
    pub section: Section,
    pub label: String,
    pub tool: &'static str,
    pub runs: Vec<f64>,
}

impl Measure {
    pub fn median(&self) -> f64 {
        percentile(&self.runs, 50.0)
    }
    fn spread(&self) -> String {
        if self.runs.len() < 2 {
            return "-".into();
        }
        let min = self.runs.iter().cloned().fold(f64::MAX, f64::min);
        let max = self.runs.iter().cloned().fold(0.0, f64::max);
        format!("{}–{}", thousands(min), thousands(max))
    }
}

pub struct MemRow {
    pub label: String,
    pub bytes_per_msg: f64,
    /// Users and devices alone, before any message (per user).
    pub per_user: f64,
    /// The messages alone, after the users were there (per message).
    pub per_msg_after_users: f64,
}

/// Round-trip median and p99, and the server's own time, per request (µs).
#[derive(Default, Debug, Clone, Copy)]
pub struct Timing {
    pub median: f64,
    pub p99: f64,
    pub server: f64,
}

#[derive(Default, Debug)]
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

#[derive(Default)]
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
    pub timer_p50_us: i64,
    pub timer_p99_us: i64,
    pub runs_per_sec: f64,
    pub close_runs: u64,
    /// The timer with no load: p50, p99, max µs, runs seen.
    pub quiet: (i64, i64, i64, u64),
    pub quiet_runs_per_sec: f64,
    pub quiet_close_runs: u64,
    /// Work was still due when the load stopped (every run was a full one).
    pub backlog_left: bool,
}

#[derive(Default)]
pub struct StallRes {
    pub secs: f64,
    pub load_rate_off: f64,
    pub load_rate_on: f64,
    /// (event, max ms, samples)
    pub events: Vec<(String, i64, usize)>,
    pub base_events: Vec<(String, i64, usize)>,
    pub longest_us: i64,
    pub probe_max_off_ms: f64,
    pub probe_p99_off_ms: f64,
    pub probe_max_on_ms: f64,
    pub probe_p99_on_ms: f64,
    pub slow_off: Vec<(String, i64)>,
    pub slow_on: Vec<(String, i64)>,
}

impl StallRes {
    pub fn events_max_ms(&self) -> i64 {
        self.events.iter().map(|e| e.1).max().unwrap_or(0)
    }
}

#[derive(Default)]
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

pub struct Target {
    pub name: String,
    pub measured: String,
    pub ratio: f64,
    pub goal: String,
    pub pass: bool,
}

pub struct Results {
    pub machine: Vec<(String, String)>,
    pub p: Params,
    pub measures: Vec<Measure>,
    pub memory: Vec<MemRow>,
    pub paging: Vec<PageRow>,
    pub sweep: SweepRes,
    pub stall: StallRes,
    pub rdb: RdbRes,
    pub targets: Vec<Target>,
    pub total_secs: f64,
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
            machine,
            p,
            measures: Vec::new(),
            memory: Vec::new(),
            paging: Vec::new(),
            sweep: SweepRes::default(),
            stall: StallRes::default(),
            rdb: RdbRes::default(),
            targets: Vec::new(),
            total_secs: 0.0,
        }
    }

    pub fn measure(&mut self, section: Section, label: &str, tool: &'static str, v: f64) {
        match self
            .measures
            .iter_mut()
            .find(|m| m.section == section && m.label == label && m.tool == tool)
        {
            Some(m) => m.runs.push(v),
            None => self.measures.push(Measure {
                section,
                label: label.into(),
                tool,
                runs: vec![v],
            }),
        }
    }

    fn get(&self, section: Section, label: &str, tool: &str) -> Option<&Measure> {
        self.measures
            .iter()
            .find(|m| m.section == section && m.label == label && m.tool == tool)
    }

    fn rate(&self, section: Section, label: &str, tool: &str) -> f64 {
        self.get(section, label, tool)
            .map_or(f64::NAN, |m| m.median())
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

    pub fn evaluate(&mut self) {
        let mut t = Vec::new();
        let mut at_least = |name: &str, a: f64, b: f64, goal: f64, measured: String| {
            let r = a / b;
            t.push(Target {
                name: name.into(),
                measured,
                ratio: r,
                goal: format!("≥ {goal}"),
                pass: r >= goal,
            });
        };
        let rb = |l: &str| self.rate(Section::Store, l, TOOL_RB);
        let cy = |l: &str| self.rate(Section::Cycle, l, TOOL_DRIVER);
        let ops = |a: f64, b: f64| format!("{} vs {} ops/s", thousands(a), thousands(b));
        at_least(
            "IM.STORE (pending) ≥ 0.9× HSET",
            rb(L_IM_ON),
            rb(L_HSET),
            0.9,
            ops(rb(L_IM_ON), rb(L_HSET)),
        );
        at_least(
            "IM.STORE (offline) ≥ 0.9× HSET",
            rb(L_IM_OFF),
            rb(L_HSET),
            0.9,
            ops(rb(L_IM_OFF), rb(L_HSET)),
        );
        at_least(
            "IM.STORE (pending) ≥ 2.5× Lua store",
            rb(L_IM_ON),
            rb(L_LUA_ON),
            2.5,
            ops(rb(L_IM_ON), rb(L_LUA_ON)),
        );
        at_least(
            "IM.STORE (offline) ≥ 2.5× Lua store (offline)",
            rb(L_IM_OFF),
            rb(L_LUA_OFF),
            2.5,
            ops(rb(L_IM_OFF), rb(L_LUA_OFF)),
        );
        at_least(
            "store+ack cycle ≥ 3× seed layout",
            cy(L_CYCLE_IM),
            cy(L_CYCLE_SEED),
            3.0,
            ops(cy(L_CYCLE_IM), cy(L_CYCLE_SEED)),
        );
        at_least(
            "store+ack cycle ≥ 2× Lua",
            cy(L_CYCLE_IM),
            cy(L_CYCLE_LUA),
            2.0,
            ops(cy(L_CYCLE_IM), cy(L_CYCLE_LUA)),
        );
        let mut at_most = |name: &str, r: f64, goal: f64, measured: String| {
            t.push(Target {
                name: name.into(),
                measured,
                ratio: r,
                goal: format!("≤ {goal}"),
                pass: r <= goal,
            });
        };
        let m = self.mem(L_MEM_IM_OFF);
        at_most(
            "memory ≤ 1.2× stanza bytes",
            m / STANZA_BYTES as f64,
            1.2,
            format!("{m:.0} bytes per {STANZA_BYTES}-byte stanza"),
        );
        if let Some(p) = self.paging.iter().find(|p| p.label == L_PAGE_IM) {
            at_most(
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
            );
        }
        let s = &self.sweep;
        if s.timer_runs_seen == 0 {
            // The timer phase did not run (`--only`): nothing to judge.
            t.retain(|x| x.ratio.is_finite());
            self.targets = t;
            return;
        }
        at_most(
            "timer run ≤ 1.2× sweep-budget",
            s.timer_max_us as f64 / s.budget_us as f64,
            1.2,
            format!(
                "longest of {} runs {} µs, budget {} µs",
                s.timer_runs_seen, s.timer_max_us, s.budget_us
            ),
        );
        let stall = self.stall_ms();
        at_most(
            "timer stall ≤ 2 ms",
            stall / 2.0,
            1.0,
            format!(
                "{stall:.2} ms (latency events max {} ms, longest run {:.2} ms)",
                self.stall.events_max_ms(),
                s.timer_max_us as f64 / 1000.0
            ),
        );
        t.retain(|x| x.ratio.is_finite());
        self.targets = t;
    }
}

fn count_name(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn events_text(e: &[(String, i64, usize)]) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter()
        .map(|(n, ms, k)| format!("{n}: max {ms} ms ({k} samples)"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn slow_text(v: &[(String, i64)]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|(n, us)| format!("{n} {}", thousands(*us as f64)))
        .collect::<Vec<_>>()
        .join(", ")
        + " µs"
}

pub fn targets_text(r: &Results) -> String {
    let mut s = String::from(
        "target                                             ratio   goal    result  measured\n",
    );
    for t in &r.targets {
        let _ = writeln!(
            s,
            "{:<50} {:>6.2}  {:<6}  {:<6}  {}",
            t.name,
            t.ratio,
            t.goal,
            if t.pass { "PASS" } else { "FAIL" },
            t.measured
        );
    }
    s
}

pub fn markdown(r: &Results) -> String {
    let p = &r.p;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# redis-im benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `scripts/bench` (driver: `bench/driver`){}. Every number below comes from one run, on one \
         redis-server with the module loaded, in {:.0} s.\n",
        if p.quick { " **with `--quick`: a smoke run with small sizes, not the reference numbers**" } else { "" },
        r.total_secs
    );
    let _ = writeln!(w, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(w, "| {} | {} |", k, md_cell(v));
    }
    let _ = writeln!(w, "\n## How\n");
    let _ = writeln!(
        w,
        "- Payload: a {STANZA_BYTES}-byte chat stanza, `<message xmlns='jabber:client' from='bob@example.com/phone' \
         to='alice@example.com' type='chat' id='x…'><body>…</body></message>`, whose `id` attribute is the unique \
         message id (26 bytes), the same for every variant.\n\
         - Throughput: {} operations per measurement, {} connections, pipeline depth {}, {} users \
         (`user:<12 digits>`, device `phone`), median of {} run(s) (range shown); the server is emptied \
         (`FLUSHALL`) and the users prepared before each run. Single commands are timed with `redis-benchmark` \
         (`-r {}`, ids from `__rand_int__`) and, for comparison, with the driver (one thread driving all \
         connections in lock step); everything with more than one command per operation with the driver only.\n\
         - A cycle is one message stored and then acknowledged by the device: the ack is sent in the round after \
         the store's reply came back; a cycle counts when its ack's reply is read.\n\
         - `im.max-pending` is raised to 10⁹ for the whole run so that no device is kicked by the load; \
         the timer is off (`sweep-interval 0`) except in the stall test.\n",
        thousands(p.ops as f64),
        p.conns,
        p.depth,
        p.users,
        p.repeats,
        p.users
    );

    let _ = writeln!(
        w,
        "## Targets\n\n| target | measured | ratio | goal | result |\n|---|---|---:|---|---|"
    );
    for t in &r.targets {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2} | {} | **{}** |",
            md_cell(&t.name),
            md_cell(&t.measured),
            t.ratio,
            t.goal,
            if t.pass { "PASS" } else { "FAIL" }
        );
    }

    let _ = writeln!(
        w,
        "\n## Store throughput (operations/s)\n\n| variant | commands | redis-benchmark | range | driver | range |\n|---|---:|---:|---|---:|---|"
    );
    let store_rows = [
        (L_PING, 1),
        (L_HSET, 1),
        (L_IM_ON, 1),
        (L_IM_OFF, 1),
        (L_SEED_ON, 2),
        (L_SEED_OFF, 2),
        (L_LUA_ON, 1),
        (L_LUA_OFF, 1),
        (L_XADD, 1),
    ];
    for (label, cmds) in store_rows {
        let cell = |tool: &str| match r.get(Section::Store, label, tool) {
            Some(m) => (thousands(m.median()), m.spread()),
            None => ("-".into(), "-".into()),
        };
        let (a, ar) = cell(TOOL_RB);
        let (b, br) = cell(TOOL_DRIVER);
        let _ = writeln!(
            w,
            "| {} | {cmds} | {a} | {ar} | {b} | {br} |",
            md_cell(label)
        );
    }

    let one = r.rate(Section::Store, L_API_ONE, TOOL_RB);
    let many = r.rate(Section::Store, L_API_MANY, TOOL_RB);
    if one > 0.0 && many > 0.0 {
        let per_call_ns = (1e9 / many - 1e9 / one) / 16.0;
        let _ = writeln!(
            w,
            "\n### What the module API itself costs\n\n\
             | module command (redis-benchmark) | operations/s | µs per operation |\n|---|---:|---:|\n\
             | {} | {} | {:.2} |\n| {} | {} | {:.2} |\n\n\
             Each reply call beyond the first costs {per_call_ns:.0} ns here. `IM.STORE` answers \
             `[seq, id, [devices...]]` with five calls (one device) where `HSET` answers with one.",
            md_cell(L_API_ONE),
            thousands(one),
            1e6 / one,
            md_cell(L_API_MANY),
            thousands(many),
            1e6 / many,
        );
    }

    let _ = writeln!(
        w,
        "\n## Store + ack cycle (cycles/s, driver)\n\n\
         Pipelined: {} connections, {} cycles in flight on each (all of a stage's commands sent together). \
         Unpipelined: {} threads with a connection each, every command waiting for its reply, as a blocking \
         client does ({} cycles per run).\n\n\
         | variant | commands per cycle | pipelined | range | redis-im is | unpipelined | range | redis-im is |\n\
         |---|---:|---:|---|---:|---:|---|---:|",
        p.conns,
        p.depth,
        p.conns,
        thousands((p.ops / 4) as f64)
    );
    let im = r.rate(Section::Cycle, L_CYCLE_IM, TOOL_DRIVER);
    let im_sync = r.rate(Section::CycleSync, L_CYCLE_IM, TOOL_DRIVER);
    for (label, cmds) in [
        (L_CYCLE_IM, 2),
        (L_CYCLE_SEED, 6),
        (L_CYCLE_LUA, 2),
        (L_CYCLE_STREAM, 3),
    ] {
        let cell = |sec: Section, base: f64| match r.get(sec, label, TOOL_DRIVER) {
            Some(m) => format!(
                "{} | {} | {:.2}×",
                thousands(m.median()),
                m.spread(),
                base / m.median()
            ),
            None => "- | - | -".into(),
        };
        let _ = writeln!(
            w,
            "| {} | {cmds} | {} | {} |",
            md_cell(label),
            cell(Section::Cycle, im),
            cell(Section::CycleSync, im_sync)
        );
    }
    let _ = writeln!(
        w,
        "\nThe stream variant keeps every entry after `XACK` (deleting it would take an `XDEL` more); the others \
         leave nothing behind, which the driver checks after each run."
    );

    let _ = writeln!(
        w,
        "\n## Memory per stored message\n\n{} messages over {} users; `used_memory` after minus before \
         (users' devices, sets and streams included), divided by the messages.\n\n\
         | layout | bytes/message | × stanza ({STANZA_BYTES} B) | of which: per user before any message | per message after the users |\n\
         |---|---:|---:|---:|---:|",
        thousands(p.mem_msgs as f64),
        thousands(p.mem_users as f64)
    );
    for m in &r.memory {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.2} | {} | {:.0} |",
            md_cell(&m.label),
            m.bytes_per_msg,
            m.bytes_per_msg / STANZA_BYTES as f64,
            if m.per_user != 0.0 {
                format!("{:.0}", m.per_user)
            } else {
                "-".into()
            },
            m.per_msg_after_users
        );
    }
    let _ = writeln!(
        w,
        "\nThe Lua variant stores the same keys as the seed layout, so it costs the same."
    );

    let (sm, bg) = (count_name(p.page_small), count_name(p.page_big));
    let _ = writeln!(
        w,
        "\n## Offline retrieval: a page of 100 messages from the middle\n\nOne user whose only device is offline, \
         {sm} and {bg} messages; the page starts after the middle message. Client round-trip time in µs over {} \
         requests (one at a time, after 20 warm-up requests; the two mailboxes take turns in blocks of 50, so that \
         the machine's other load falls on both alike), and the server's own time per request \
         (`INFO commandstats`). The seed layout takes two round trips (the ids, then 100 pipelined `HGETALL`).\n\n\
         | layout | {sm}: median | p99 | server | {bg}: median | p99 | server | {bg} / {sm}: median | server |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        p.page_reps
    );
    for row in &r.paging {
        let (a, b) = (&row.small, &row.big);
        let _ = writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            md_cell(&row.label),
            a.median,
            a.p99,
            a.server,
            b.median,
            b.p99,
            b.server,
            b.median / a.median,
            b.server / a.server
        );
    }

    let sw = &r.sweep;
    let st = &r.stall;
    let _ = writeln!(
        w,
        "\n## The timer\n\n{} users, one online device each, {} pending deliveries; `ack-timeout` one day; \
         `resend-interval` set so that exactly {} deliveries (stored {} ms before the others) are due. \
         `IM.SWEEP` has no budget: it does all that is due, and its duration is `im_sweep_last_us`.\n",
        thousands(p.sweep_users as f64),
        thousands(sw.pending as f64),
        thousands(sw.due as f64),
        1500
    );
    let _ = writeln!(w, "| measurement | value |\n|---|---|");
    let _ = writeln!(
        w,
        "| `IM.SWEEP`, {} pending, all {} due (reply `resent` = {}) | {} µs ({:.2} µs per resend) |",
        thousands(sw.due as f64),
        thousands(sw.due as f64),
        thousands(sw.due as f64),
        thousands(sw.alone_us as f64),
        sw.alone_us as f64 / sw.due as f64
    );
    let _ = writeln!(
        w,
        "| `IM.SWEEP`, {} pending, {} due (reply `resent` = {}) | {} µs ({:.2} µs per resend) |",
        thousands(sw.pending as f64),
        thousands(sw.due as f64),
        thousands(sw.due as f64),
        thousands(sw.mixed_us as f64),
        sw.mixed_us as f64 / sw.due as f64
    );
    let _ = writeln!(
        w,
        "| the same work with 100× more not-due deliveries costs | {:.2}× |",
        sw.mixed_us as f64 / sw.alone_us as f64
    );
    let _ = writeln!(
        w,
        "| timer (`sweep-interval 100`, `sweep-budget {}`) during a {:.0} s load, the {} not-due deliveries \
         falling due meanwhile | {} runs, {} resends ({:.0} per run){} |",
        sw.budget_us,
        st.secs,
        thousands((sw.pending - sw.due) as f64),
        sw.timer_runs,
        thousands(sw.timer_resent as f64),
        sw.timer_resent as f64 / sw.timer_runs.max(1) as f64,
        if sw.backlog_left { ", work still due at the end: every run had a full budget's worth" } else { "" }
    );
    let _ = writeln!(
        w,
        "| timer runs' durations (`im_sweep_last_us` polled every 5 ms; {} of {} runs seen): median / p99 / longest | {} / {} / {} µs |",
        sw.timer_runs_seen,
        sw.timer_runs,
        thousands(sw.timer_p50_us as f64),
        thousands(sw.timer_p99_us as f64),
        thousands(sw.timer_max_us as f64)
    );
    let _ = writeln!(
        w,
        "| timer runs per second (`sweep-interval 100`: 10 expected), and runs less than 20 ms after the previous one | {:.1}/s, {} |",
        sw.runs_per_sec, sw.close_runs
    );
    let _ = writeln!(
        w,
        "| the same timer with no load at all ({} runs seen): median / p99 / longest; runs per second | {} / {} / {} µs; {:.1}/s, {} runs less than 20 ms after the previous |",
        sw.quiet.3,
        thousands(sw.quiet.0 as f64),
        thousands(sw.quiet.1 as f64),
        thousands(sw.quiet.2 as f64),
        sw.quiet_runs_per_sec,
        sw.quiet_close_runs
    );
    let _ = writeln!(
        w,
        "| `im_sweep_longest_us` (since start: includes the unbudgeted `IM.SWEEP` calls above) | {} µs |",
        thousands(st.longest_us as f64)
    );
    let _ = writeln!(
        w,
        "| `LATENCY LATEST`/`HISTORY` (`latency-monitor-threshold 1`), timer on | {} |",
        events_text(&st.events)
    );
    let _ = writeln!(
        w,
        "| the same, timer off | {} |",
        events_text(&st.base_events)
    );
    let _ = writeln!(
        w,
        "| `SLOWLOG` (commands over 1 ms), timer on / off | {} / {} |",
        slow_text(&st.slow_on),
        slow_text(&st.slow_off)
    );
    let _ = writeln!(
        w,
        "| load: `IM.STORE`+`IM.ACK` cycles on 100 other users, paced at {} cycles/s, achieved, timer off / on | {} / {} cycles/s |",
        thousands(p.stall_rate),
        thousands(st.load_rate_off),
        thousands(st.load_rate_on)
    );
    let _ = writeln!(
        w,
        "| `PING` probe beside the load (one every ms), p99 / max, timer off | {:.2} / {:.2} ms |",
        st.probe_p99_off_ms, st.probe_max_off_ms
    );
    let _ = writeln!(
        w,
        "| the same, timer on | {:.2} / {:.2} ms |",
        st.probe_p99_on_ms, st.probe_max_on_ms
    );
    let _ = writeln!(
        w,
        "\nThe stall is the longest time the event loop is held by the timer: the longest latency event or the \
         longest run, whichever is larger (Redis has no latency event for module timers). The probe's \
         round-trip times also hold the client's own scheduling on {} cores, so they are shown, not judged.",
        r.machine.iter().find(|(k, _)| k == "nproc").map_or("?", |(_, v)| v.as_str())
    );

    let rd = &r.rdb;
    let _ = writeln!(
        w,
        "\n## RDB\n\nThe timer test's data ({} messages pending in {} keys): `SAVE`, then a restart that loads it.\n\n\
         | messages | RDB bytes | bytes/message | `SAVE` | without compression: bytes, `SAVE` | load (log: \"DB loaded from disk\") | restart to first `PING` |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.0} | {:.2} s | {}, {:.2} s | {} | {:.2} s |",
        thousands(rd.messages as f64),
        thousands(rd.keys as f64),
        thousands(rd.messages as f64),
        thousands(rd.bytes as f64),
        rd.bytes as f64 / rd.messages.max(1) as f64,
        rd.save_secs,
        thousands(rd.plain_bytes as f64),
        rd.plain_secs,
        rd.load_secs.map_or("-".into(), |s| format!("{s:.2} s")),
        rd.startup_secs
    );
    let _ = writeln!(
        w,
        "\nThe restart loads the compressed file. Every stanza of the benchmark has the same text but its id, \
         which LZF compresses far better than real chat; the uncompressed size is the honest upper bound."
    );
    let _ = writeln!(w, "\n![benchmark plot](bench.svg)");
    s
}

struct Bar {
    label: String,
    value: f64,
    text: String,
    color: &'static str,
}

const IM_COLOR: &str = "#d9480f";
const OTHER_COLOR: &str = "#4263eb";
const CEIL_COLOR: &str = "#868e96";

fn color_of(label: &str) -> &'static str {
    if label.contains("IM.") || label.starts_with("redis-im") {
        IM_COLOR
    } else if label == L_PING || label == L_HSET {
        CEIL_COLOR
    } else {
        OTHER_COLOR
    }
}

/// One panel of horizontal bars; answers its height.
fn panel(
    out: &mut String,
    y0: f64,
    title: &str,
    bars: &[Bar],
    reference: Option<(f64, &str)>,
) -> f64 {
    if bars.is_empty() {
        return 0.0;
    }
    const LABEL_W: f64 = 330.0;
    const BAR_W: f64 = 420.0;
    const ROW: f64 = 22.0;
    let max = bars
        .iter()
        .map(|b| b.value)
        .chain(reference.map(|r| r.0))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(title)
    );
    let top = y0 + 30.0;
    for (i, b) in bars.iter().enumerate() {
        let y = top + i as f64 * ROW;
        let wdt = if b.value.is_finite() {
            b.value / max * BAR_W
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_W,
            y + 14.0,
            esc(&b.label)
        );
        let _ = writeln!(
            out,
            r#"<rect x="{:.0}" y="{:.0}" width="{:.1}" height="16" fill="{}"/>"#,
            LABEL_W + 8.0,
            y + 2.0,
            wdt,
            b.color
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.0}" font-size="12">{}</text>"#,
            LABEL_W + 12.0 + wdt,
            y + 14.0,
            esc(&b.text)
        );
    }
    let h = 30.0 + bars.len() as f64 * ROW;
    if let Some((v, name)) = reference {
        let x = LABEL_W + 8.0 + v / max * BAR_W;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{:.0}" stroke="black" stroke-dasharray="4 3"/>"#,
            top - 4.0,
            y0 + h + 2.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.0}" font-size="11" text-anchor="middle">{}</text>"#,
            y0 + h + 14.0,
            esc(name)
        );
        return h + 30.0;
    }
    h + 16.0
}

/// One bar per measure that `keep` selects: its median rate.
fn rate_bars(r: &Results, keep: impl Fn(&Measure) -> bool) -> Vec<Bar> {
    r.measures
        .iter()
        .filter(|m| keep(m))
        .map(|m| Bar {
            label: m.label.clone(),
            value: m.median(),
            text: thousands(m.median()),
            color: color_of(&m.label),
        })
        .collect()
}

pub fn svg(r: &Results) -> String {
    let mut body = String::new();
    let mut y = 40.0;
    let rb = rate_bars(r, |m| {
        m.section == Section::Store
            && m.tool == TOOL_RB
            && ![L_PING, L_API_ONE, L_API_MANY].contains(&m.label.as_str())
    });
    y += panel(
        &mut body,
        y,
        "Store throughput, redis-benchmark (operations/s)",
        &rb,
        None,
    );
    let drv = rate_bars(r, |m| {
        m.section == Section::Store && m.tool == TOOL_DRIVER && m.label != L_PING
    });
    y += panel(
        &mut body,
        y,
        "Store throughput, driver (operations/s)",
        &drv,
        None,
    );
    let cyc = rate_bars(r, |m| m.section == Section::Cycle);
    y += panel(
        &mut body,
        y,
        "Store + ack cycle, pipelined (cycles/s)",
        &cyc,
        None,
    );
    let cyc_sync = rate_bars(r, |m| m.section == Section::CycleSync);
    y += panel(
        &mut body,
        y,
        "Store + ack cycle, unpipelined, a thread per connection (cycles/s)",
        &cyc_sync,
        None,
    );
    let mem: Vec<Bar> = r
        .memory
        .iter()
        .map(|m| Bar {
            label: m.label.clone(),
            value: m.bytes_per_msg,
            text: format!(
                "{:.0} B ({:.2}×)",
                m.bytes_per_msg,
                m.bytes_per_msg / STANZA_BYTES as f64
            ),
            color: color_of(&m.label),
        })
        .collect();
    y += panel(
        &mut body,
        y,
        "Memory per stored message (bytes)",
        &mem,
        Some((STANZA_BYTES as f64 * 1.2, "1.2× stanza")),
    );
    let mut pages = Vec::new();
    for p in &r.paging {
        for (n, v) in [
            (r.p.page_small, p.small.median),
            (r.p.page_big, p.big.median),
        ] {
            let short = p.label.split(':').next().unwrap_or(&p.label);
            pages.push(Bar {
                label: format!("{short}, mailbox of {}", count_name(n)),
                value: v,
                text: format!("{v:.0} µs"),
                color: color_of(&p.label),
            });
        }
    }
    y += panel(
        &mut body,
        y,
        "Page of 100 offline messages from the middle (median µs)",
        &pages,
        None,
    );
    let height = y + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height:.0}" viewBox="0 0 900 {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let cpu = r
        .machine
        .iter()
        .find(|(k, _)| k == "CPU")
        .map_or("", |(_, v)| v.as_str());
    let nproc = r
        .machine
        .iter()
        .find(|(k, _)| k == "nproc")
        .map_or("", |(_, v)| v.as_str());
    let _ = writeln!(
        out,
        r#"<text x="10" y="24" font-size="18" font-weight="bold">redis-im benchmarks{}</text><text x="890" y="24" font-size="11" text-anchor="end">{} cores, {}</text>"#,
        if r.p.quick { " (quick run)" } else { "" },
        esc(nproc),
        esc(cpu)
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}
