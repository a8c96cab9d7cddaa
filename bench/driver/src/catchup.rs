//! The timer catching up (SPEC §5; the `catchup` phase): steady flows of
//! deliveries falling due, the lag from each deadline to the kick that
//! expired it, the timer's share of a core, and the latency a client sees
//! for `IM.STORE` beside it.
//!
//! A flow: a producer stores deliveries at a steady rate, each pending on
//! a device it connected just before on node `bench`; a subscriber on
//! `im:events:bench` timestamps every `kick` event as it arrives. Each
//! batch the producer sends starts with `TIME`, so that the server's clock
//! when it stored a delivery is known (a seq is no clock: a mailbox's
//! counter starts above every seq handed out before, and a reused mailbox
//! counts on from its own); the deadline is that time + `ack-timeout`.
//! A kick expires every delivery pending on its device; in the many kind
//! those are one burst stored in one pipeline, named by the kick's seq
//! (the device's oldest pending delivery).

use crate::resp::{Conn, Val};
use crate::results::*;
use crate::workloads::{stanza, DEVICE, ID_LEN};
use crate::{fail, log, percentile, Suite};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The node the flows' devices are on.
const NODE: &str = "bench";
const ACK_TIMEOUT_MS: i64 = 1000;
/// The default `sweep-effort` (%).
const SWEEP_EFFORT: i64 = 25;
/// Deliveries due per second, each flow.
const RATES: [f64; 4] = [1000.0, 5000.0, 20_000.0, 50_000.0];
/// The many kind: deliveries per burst (one kick each), and how often a
/// device comes back for its next burst (well after its kick).
const PER_DEVICE: u64 = 25;
const PERIOD_SECS: f64 = 4.0;
/// The producer's connections; its chunks (a `TIME`, then up to 16
/// deliveries in the kick kind, one burst in the many kind: a few KB,
/// which the server reads at once), and the most chunks it sends on one
/// connection per round (a round that came late carries what fell due
/// meanwhile).
const CONNS: usize = 4;
const CHUNK_KICK: usize = 16;
const CHUNKS_PER_ROUND: usize = 8;
const CLIENT_USER: &str = "client:000000000000";

/// The phase's durations (s).
struct Sizes {
    flow: f64,
    /// The steady window starts this long after the flow (the first
    /// deadlines come after `ack-timeout`).
    window_from: f64,
    /// The concurrent client with the timer idle.
    idle: f64,
    /// The longest wait for the last deliveries to expire.
    drain_max: f64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        Sizes {
            flow: if quick { 4.0 } else { 10.0 },
            window_from: 2.0,
            idle: if quick { 2.0 } else { 8.0 },
            drain_max: if quick { 5.0 } else { 15.0 },
        }
    }
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn join<T>(h: JoinHandle<io::Result<T>>, what: &str) -> io::Result<T> {
    h.join().map_err(|_| fail(format!("{what} panicked")))?
}

/// The stanza template and where its id goes.
fn template() -> (Vec<u8>, usize) {
    let xml = stanza(&"x".repeat(ID_LEN));
    let at = xml.find(" id='").map_or(0, |i| i + 5);
    (xml.into_bytes(), at)
}

fn set_id(xml: &mut [u8], at: usize, a: u64, b: u64) {
    let id = format!("x{a:012}-{b:012}");
    xml[at..at + ID_LEN].copy_from_slice(id.as_bytes());
}

fn user_name(kind: FlowKind, n: u64) -> String {
    match kind {
        FlowKind::KickEach => format!("kick:{n:012}"),
        FlowKind::ManyPerDevice => format!("many:{n:012}"),
    }
}

/// What the producer did: each operation's deadline (a delivery in the
/// kick kind, a burst in the many kind).
#[derive(Default)]
struct Produced {
    /// Epoch ms, by operation.
    deadlines: Vec<f64>,
    /// The many kind: (device, seq of the burst's first store) → burst.
    bursts: HashMap<(u64, u64), usize>,
    secs: f64,
    /// The producer's thread on a CPU (%).
    cpu_pct: f64,
}

/// `TIME`'s reply in ms.
fn time_ms(v: &Val) -> Option<f64> {
    let a = v.arr()?;
    Some(a.first()?.int()? as f64 * 1e3 + a.get(1)?.int()? as f64 / 1e3)
}

/// A thread's time on a CPU and runnable waiting for one (ns), from
/// `/proc/.../schedstat`.
fn schedstat(path: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// An `IM.STORE` reply that made the delivery pending on the device:
/// its seq.
fn pending_seq(v: &Val) -> io::Result<u64> {
    let a = v
        .arr()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| fail(format!("IM.STORE answered {}", v.show())))?;
    let on = a[2]
        .arr()
        .is_some_and(|d| d.iter().any(|d| d.bytes() == Some(DEVICE.as_bytes())));
    if !on {
        return Err(fail(format!("IM.STORE not pending: {}", v.show())));
    }
    a[0].int()
        .map(|s| s as u64)
        .ok_or_else(|| fail(format!("IM.STORE answered {}", v.show())))
}

fn expect_map(v: &Val, what: &str) -> io::Result<()> {
    match v {
        Val::Arr(_) => Ok(()),
        _ => Err(fail(format!("{what} answered {}", v.show()))),
    }
}

/// Stores the flow's deliveries at `rate` per second for `secs`: each
/// round, what has come due since the last one, in chunks that take turns
/// on the connections, each chunk led by `TIME`.
fn produce(
    port: u16,
    kind: FlowKind,
    rate: f64,
    secs: f64,
    devices: u64,
    start: Instant,
) -> io::Result<Produced> {
    let many = kind == FlowKind::ManyPerDevice;
    let per_op = if many { PER_DEVICE } else { 1 };
    let chunk = if many { 1 } else { CHUNK_KICK };
    let op_rate = rate / per_op as f64;
    let mut conns = (0..CONNS)
        .map(|_| Conn::connect(port))
        .collect::<io::Result<Vec<_>>>()?;
    let (mut xml, at) = template();
    let mut p = Produced::default();
    // Per connection, this round: each operation, and whether a `TIME`
    // came before it.
    let mut sent: Vec<Vec<(u64, bool)>> = vec![Vec::new(); CONNS];
    let mut next_conn = 0;
    let mut ops = 0u64;
    let cpu0 = schedstat("/proc/thread-self/schedstat").map_or(0, |s| s.0);
    loop {
        let el = start.elapsed().as_secs_f64();
        if el >= secs {
            break;
        }
        let due = (el * op_rate).floor() as u64 + 1;
        if ops >= due {
            let wait = ops as f64 / op_rate - el;
            std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, secs - el)));
            continue;
        }
        for _ in 0..CONNS * CHUNKS_PER_ROUND {
            if ops >= due {
                break;
            }
            let c = next_conn;
            next_conn = (next_conn + 1) % CONNS;
            let conn = &mut conns[c];
            conn.cmd(&[b"TIME"]);
            for i in 0..chunk {
                if ops >= due {
                    break;
                }
                let k = ops;
                ops += 1;
                sent[c].push((k, i == 0));
                let dev = if many { k % devices } else { k };
                let user = user_name(kind, dev);
                conn.cmd_str(&["IM.CONNECT", &user, DEVICE, "NODE", NODE]);
                for j in 0..per_op {
                    set_id(&mut xml, at, k, j);
                    conn.cmd(&[b"IM.STORE", user.as_bytes(), &xml]);
                }
            }
        }
        for conn in conns.iter_mut() {
            conn.flush()?;
        }
        p.deadlines.resize(ops as usize, f64::NAN);
        for (conn, sent) in conns.iter_mut().zip(sent.iter_mut()) {
            let mut now_ms = 0.0;
            for (k, timed) in sent.drain(..) {
                if timed {
                    let v = conn.read()?;
                    now_ms = time_ms(&v).ok_or_else(|| fail(format!("TIME: {}", v.show())))?;
                }
                expect_map(&conn.read()?, "IM.CONNECT")?;
                let first = pending_seq(&conn.read()?)?;
                for _ in 1..per_op {
                    pending_seq(&conn.read()?)?;
                }
                if many {
                    p.bursts.insert((k % devices, first), k as usize);
                }
                p.deadlines[k as usize] = now_ms + ACK_TIMEOUT_MS as f64;
            }
        }
    }
    p.secs = start.elapsed().as_secs_f64();
    let cpu = schedstat("/proc/thread-self/schedstat").map_or(0, |s| s.0) - cpu0;
    p.cpu_pct = cpu as f64 / 1e7 / p.secs.max(1e-9);
    Ok(p)
}

/// A `kick` event: when it arrived (epoch ms), the number in its user's
/// name, its seq.
struct Kick {
    at: f64,
    user: u64,
    seq: u64,
}

/// The text after `key` up to the next `end`.
fn field<'a>(json: &'a [u8], key: &str, end: u8) -> Option<&'a [u8]> {
    let k = key.as_bytes();
    let from = json.windows(k.len()).position(|w| w == k)? + k.len();
    let len = json[from..].iter().position(|&b| b == end)?;
    Some(&json[from..from + len])
}

fn digits(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Reads the events until the driver's `stop`; keeps the kicks.
fn listen(mut c: Conn) -> io::Result<Vec<Kick>> {
    let mut kicks = Vec::new();
    loop {
        let v = c.read()?;
        let at = epoch_ms();
        let Some(json) = v.arr().and_then(|a| a.get(2)).and_then(|p| p.bytes()) else {
            continue;
        };
        if json.starts_with(b"{\"event\":\"stop\"") {
            return Ok(kicks);
        }
        if !json.starts_with(b"{\"event\":\"kick\"") {
            continue;
        }
        let user = field(json, "\"user\":\"", b'"')
            .and_then(|u| u.iter().position(|&b| b == b':').map(|i| &u[i + 1..]))
            .and_then(digits);
        let seq = field(json, "\"seq\":", b',').and_then(digits);
        match (user, seq) {
            (Some(user), Some(seq)) => kicks.push(Kick { at, user, seq }),
            _ => {
                return Err(fail(format!(
                    "a kick event the driver cannot read: {}",
                    String::from_utf8_lossy(json)
                )))
            }
        }
    }
}

/// The concurrent client: `IM.STORE` to its own mailbox (its device
/// offline), one request at a time, until `stop`.
fn client(port: u16, stop: Arc<AtomicBool>, tag: u64) -> io::Result<Latency> {
    let mut c = Conn::connect(port)?;
    let (mut xml, at) = template();
    let mut rtts = Vec::new();
    let t0 = Instant::now();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        set_id(&mut xml, at, tag, n);
        let t = Instant::now();
        c.cmd(&[b"IM.STORE", CLIENT_USER.as_bytes(), &xml]);
        c.flush()?;
        let v = c.read()?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
        let offline = v
            .arr()
            .filter(|a| a.len() == 3)
            .and_then(|a| a[2].arr())
            .is_some_and(|d| d.is_empty());
        if !offline {
            return Err(fail(format!("client's IM.STORE answered {}", v.show())));
        }
        n += 1;
    }
    Ok(Latency {
        requests: n,
        secs: t0.elapsed().as_secs_f64(),
        p50_ms: percentile(&rtts, 50.0),
        p99_ms: percentile(&rtts, 99.0),
        max_ms: rtts.iter().cloned().fold(0.0, f64::max),
    })
}

/// The timer's counters and the server's main thread at one moment.
struct Snap {
    at: Instant,
    us: i64,
    runs: i64,
    /// ns on a CPU, and waiting for one.
    cpu: u64,
    wait: u64,
}

impl Suite {
    fn snap(&mut self) -> io::Result<Snap> {
        let m = self.admin.info("im")?;
        let get = |k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let (cpu, wait) = self
            .server
            .pid()
            .and_then(|p| schedstat(&format!("/proc/{p}/task/{p}/schedstat")))
            .unwrap_or_default();
        Ok(Snap {
            at: Instant::now(),
            us: get("im_sweep_us_total"),
            runs: get("im_sweep_runs"),
            cpu,
            wait,
        })
    }

    /// An emptied server, with the concurrent client's mailbox (its one
    /// device registered and offline).
    fn flow_reset(&mut self) -> io::Result<()> {
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        self.admin.ok(&["IM.CONNECT", CLIENT_USER, DEVICE])?;
        self.admin.ok(&["IM.DISCONNECT", CLIENT_USER, DEVICE])?;
        Ok(())
    }

    pub(crate) fn catchup(&mut self) -> io::Result<()> {
        let z = Sizes::new(self.p.quick);
        // Emptied first: a change of a timer setting rebuilds the schedule
        // from the keyspace.
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        for (name, value) in [
            ("im.sweep-interval", "100"),
            ("im.sweep-budget", "1000"),
            ("im.sweep-effort", &SWEEP_EFFORT.to_string()),
            ("im.push-events", "yes"),
            ("im.max-pending", "1000"),
            ("im.resend-interval", "0"),
            ("im.ack-timeout", &ACK_TIMEOUT_MS.to_string()),
            // The subscriber is never cut off for falling behind.
            ("client-output-buffer-limit", "pubsub 0 0 0"),
        ] {
            self.config_set(name, value)?;
        }
        self.flow_reset()?;
        let stop = Arc::new(AtomicBool::new(false));
        let port = self.port();
        let h = {
            let stop = stop.clone();
            std::thread::spawn(move || client(port, stop, 0))
        };
        std::thread::sleep(Duration::from_secs_f64(z.idle));
        stop.store(true, Ordering::Relaxed);
        let idle = join(h, "client")?;
        log(format!(
            "catchup: client, timer idle: {} requests, p50 {:.3} p99 {:.3} max {:.2} ms",
            idle.requests, idle.p50_ms, idle.p99_ms, idle.max_ms
        ));
        let stores_only = self.stores_only(&z, CLIENT_AT)?;
        log(format!(
            "catchup: client beside {CLIENT_AT}/s of stores, no expiry: {} requests, p50 {:.3} p99 {:.3} max {:.2} ms",
            stores_only.requests, stores_only.p50_ms, stores_only.p99_ms, stores_only.max_ms
        ));
        let mut flows = Vec::new();
        for rate in RATES {
            for kind in [FlowKind::KickEach, FlowKind::ManyPerDevice] {
                let f = self.flow(&z, kind, rate, rate == CLIENT_AT)?;
                log(format!(
                    "catchup: {:>6}/s {:<18} stored {} ({:.0}/s), due {:.0}/s, expired {:.0}/s in the window ({} kicks in all), \
                     lag min {:.2} p50 {:.1} p99 {:.1} max {:.1} ms (first second {:.1}, last {:.1}), timer {:.1}% of a core ({:.2} µs per kick), {:.0} runs/s, \
                     server main thread {:.0}% on a CPU, {:.0}% waiting for one, producer {:.0}%, drained in {:.2}s{}{}",
                    rate,
                    kind_name(kind, PER_DEVICE),
                    f.stored,
                    f.achieved,
                    f.due_rate(),
                    f.expiry_rate(),
                    f.kicked,
                    f.lag_min_ms,
                    f.lag_p50_ms,
                    f.lag_p99_ms,
                    f.lag_max_ms,
                    f.lag_first_ms,
                    f.lag_last_ms,
                    f.cpu_pct(),
                    f.us_per_kick(),
                    f.runs_per_sec(),
                    f.server_cpu_pct,
                    f.server_wait_pct,
                    f.producer_cpu_pct,
                    f.drain_secs,
                    if f.keeps_up() { "" } else { ", SATURATED" },
                    f.client.map_or(String::new(), |l| format!(
                        "; client p50 {:.3} p99 {:.3} max {:.2} ms",
                        l.p50_ms, l.p99_ms, l.max_ms
                    ))
                ));
                flows.push(f);
            }
        }
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        for (name, value) in [
            ("im.sweep-interval", "0"),
            ("im.max-pending", "1000000000"),
            ("client-output-buffer-limit", "pubsub 33554432 8388608 60"),
        ] {
            self.config_set(name, value)?;
        }
        self.res.catchup = Some(CatchupRes {
            ack_timeout_ms: ACK_TIMEOUT_MS,
            sweep_effort_pct: SWEEP_EFFORT,
            flow_secs: z.flow,
            window_from_secs: z.window_from,
            per_device: PER_DEVICE,
            period_secs: PERIOD_SECS,
            conns: CONNS,
            drain_max_secs: z.drain_max,
            idle,
            stores_only: Some(stores_only),
            flows,
        });
        Ok(())
    }

    /// The concurrent client beside the stores of a kick-kind flow whose
    /// deliveries never fall due (`ack-timeout` a day: the timer idle), over
    /// the same window as a flow's.
    fn stores_only(&mut self, z: &Sizes, rate: f64) -> io::Result<Latency> {
        self.flow_reset()?;
        self.config_set("im.ack-timeout", 86_400_000)?;
        let port = self.port();
        let start = Instant::now();
        let secs = z.flow;
        let producer =
            std::thread::spawn(move || produce(port, FlowKind::KickEach, rate, secs, 0, start));
        sleep_until(start + Duration::from_secs_f64(z.window_from));
        let runs = self.im("im_sweep_runs")?;
        let stop = Arc::new(AtomicBool::new(false));
        let h = {
            let stop = stop.clone();
            std::thread::spawn(move || client(port, stop, 2))
        };
        sleep_until(start + Duration::from_secs_f64(z.flow));
        stop.store(true, Ordering::Relaxed);
        let l = join(h, "client")?;
        let prod = join(producer, "producer")?;
        let runs = self.im("im_sweep_runs")? - runs;
        self.admin.ok(&["FLUSHALL", "SYNC"])?;
        self.config_set("im.ack-timeout", ACK_TIMEOUT_MS)?;
        let stored = prod.deadlines.len() as f64 / prod.secs.max(1e-9);
        if runs > 0 || stored < REACHED * rate {
            log(format!(
                "catchup: warning: stores without expiry: {runs} timer runs, {stored:.0} stores/s of {rate}"
            ));
        }
        Ok(l)
    }

    /// One flow on an emptied server.
    fn flow(
        &mut self,
        z: &Sizes,
        kind: FlowKind,
        rate: f64,
        with_client: bool,
    ) -> io::Result<FlowRes> {
        self.flow_reset()?;
        let port = self.port();
        let channel = format!("im:events:{NODE}");
        let mut sub = Conn::connect(port)?;
        sub.ok(&["SUBSCRIBE", &channel])?;
        let listener = std::thread::spawn(move || listen(sub));
        let (expired0, kicked0) = (self.im("im_expired")?, self.im("im_kicked")?);
        let many = kind == FlowKind::ManyPerDevice;
        let devices = if many {
            (rate / PER_DEVICE as f64 * PERIOD_SECS).ceil() as u64
        } else {
            0
        };
        let per_op = if many { PER_DEVICE } else { 1 };
        let start = Instant::now();
        let start_ms = epoch_ms();
        let secs = z.flow;
        let producer = std::thread::spawn(move || produce(port, kind, rate, secs, devices, start));
        sleep_until(start + Duration::from_secs_f64(z.window_from));
        let a = self.snap()?;
        let stop = Arc::new(AtomicBool::new(false));
        let client = with_client.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || client(port, stop, 1))
        });
        sleep_until(start + Duration::from_secs_f64(z.flow));
        let b = self.snap()?;
        stop.store(true, Ordering::Relaxed);
        let client = client.map(|h| join(h, "client")).transpose()?;
        let prod = join(producer, "producer")?;
        // The drain: until nothing is pending (the client's device is
        // offline: its messages never are).
        let t = Instant::now();
        while self.im("im_pending")? > 0 && t.elapsed().as_secs_f64() < z.drain_max {
            std::thread::sleep(Duration::from_millis(10));
        }
        let drain_secs = t.elapsed().as_secs_f64();
        let end_ms = epoch_ms();
        self.admin
            .ok(&["PUBLISH", &channel, "{\"event\":\"stop\"}"])?;
        let kicks = join(listener, "subscriber")?;
        let expired = self.im("im_expired")? - expired0;
        let kicked = self.im("im_kicked")? - kicked0;
        if kicks.len() as i64 != kicked {
            return Err(fail(format!(
                "{kicked} devices kicked, {} kick events received",
                kicks.len()
            )));
        }

        // When each operation's kick came.
        let n = prod.deadlines.len();
        let mut came: Vec<Option<f64>> = vec![None; n];
        for k in &kicks {
            let op = if many {
                prod.bursts.get(&(k.user, k.seq)).copied()
            } else {
                Some(k.user as usize).filter(|&i| i < n)
            };
            match op.map(|i| &mut came[i]) {
                Some(slot @ None) => *slot = Some(k.at),
                _ => {
                    return Err(fail(format!(
                        "a kick of {} seq {} that matches no delivery pending (or a second one)",
                        user_name(kind, k.user),
                        k.seq
                    )))
                }
            }
        }
        let lo = start_ms + a.at.duration_since(start).as_secs_f64() * 1e3;
        let hi = start_ms + b.at.duration_since(start).as_secs_f64() * 1e3;
        let window_secs = (hi - lo) / 1e3;
        let (mut due, mut in_window, mut missing) = (0u64, 0u64, 0u64);
        let (mut lags, mut first, mut last) = (Vec::new(), Vec::new(), Vec::new());
        for (&d, c) in prod.deadlines.iter().zip(&came) {
            if let Some(at) = c {
                if (lo..hi).contains(at) {
                    in_window += per_op;
                }
            }
            if (lo..hi).contains(&d) {
                due += per_op;
                let lag = match c {
                    Some(at) => at - d,
                    None => {
                        missing += per_op;
                        end_ms - d
                    }
                };
                lags.push(lag);
                if d < lo + 1e3 {
                    first.push(lag);
                }
                if d >= hi - 1e3 {
                    last.push(lag);
                }
            }
        }
        let wall_ns = (hi - lo) * 1e6;

        let stored = n as u64 * per_op;
        Ok(FlowRes {
            kind,
            rate,
            stored,
            achieved: stored as f64 / prod.secs.max(1e-9),
            devices: if many { devices } else { n as u64 },
            per_kick: per_op,
            expired,
            kicked,
            window_secs,
            due,
            expired_in_window: in_window,
            missing,
            lag_p50_ms: percentile(&lags, 50.0),
            lag_p99_ms: percentile(&lags, 99.0),
            lag_max_ms: lags.iter().cloned().fold(0.0, f64::max),
            lag_min_ms: lags.iter().cloned().fold(0.0, f64::min),
            lag_first_ms: percentile(&first, 50.0),
            lag_last_ms: percentile(&last, 50.0),
            server_cpu_pct: b.cpu.saturating_sub(a.cpu) as f64 / wall_ns * 100.0,
            server_wait_pct: b.wait.saturating_sub(a.wait) as f64 / wall_ns * 100.0,
            producer_cpu_pct: prod.cpu_pct,
            timer_us: b.us - a.us,
            timer_runs: b.runs - a.runs,
            drain_secs,
            client,
        })
    }
}
