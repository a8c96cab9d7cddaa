//! The load loop: C connections driven from one thread in lock step. Each
//! round writes up to D new operations on every connection (plus the
//! second stage, the ack, of the operations of the previous round), then
//! reads every reply. An operation is done when its last reply is read, so
//! a store-and-ack cycle is counted once, when its ack came back.

use crate::resp::{Conn, Val};
use std::io;
use std::time::{Duration, Instant};

/// One kind of traffic. `c` is the connection, `k` the operation's number
/// on that connection.
pub trait Workload {
    /// Queues the first commands of operation `k`; answers how many replies
    /// they produce.
    fn start(&mut self, c: usize, k: u64, out: &mut Conn) -> usize;
    /// Looks at the replies of `start`: `Ok(Some(data))` when the operation
    /// has a second stage (given `data`), `Ok(None)` when it is done,
    /// `Err(why)` when a reply was not the one expected.
    fn started(&mut self, c: usize, k: u64, replies: &[Val]) -> Result<Option<Vec<u8>>, String>;
    /// Queues the second stage; answers how many replies it produces.
    fn finish(&mut self, _c: usize, _k: u64, _data: &[u8], _out: &mut Conn) -> usize {
        0
    }
    /// Looks at the replies of the second stage.
    fn finished(&mut self, _c: usize, _k: u64, _replies: &[Val]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub conns: usize,
    pub depth: usize,
    /// Operations in all.
    pub ops: u64,
    /// Stop starting operations after this long.
    pub deadline: Option<Duration>,
    /// At most this many operations started per second.
    pub rate: Option<f64>,
    /// The number the first connection has for the workload (so that
    /// several threads can share the users without sharing connections).
    pub conn_base: usize,
    /// Each command waits for its reply (no pipelining at all).
    pub sync: bool,
}

impl Plan {
    pub fn new(conns: usize, depth: usize, ops: u64) -> Plan {
        Plan {
            conns,
            depth,
            ops,
            deadline: None,
            rate: None,
            conn_base: 0,
            sync: false,
        }
    }
}

/// `plan.conns` threads with one connection each, every command waiting
/// for its reply: a blocking client with a thread per connection.
pub fn run_threads<W: Workload + Send + 'static>(
    port: u16,
    plan: Plan,
    make: impl Fn() -> W,
) -> io::Result<Stats> {
    let n = plan.conns.max(1);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let mut wl = make();
            let barrier = barrier.clone();
            let ops = plan.ops / n as u64 + u64::from((i as u64) < plan.ops % n as u64);
            let p = Plan {
                conns: 1,
                depth: 1,
                ops,
                conn_base: i,
                sync: true,
                ..plan
            };
            std::thread::spawn(move || {
                barrier.wait();
                run(port, p, &mut wl)
            })
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        let st = h
            .join()
            .map_err(|_| io::Error::other("load thread panicked"))??;
        total.ops += st.ops;
        total.secs = total.secs.max(st.secs);
        total.errors += st.errors;
        total.anomalies += st.anomalies;
        total.first_error = total.first_error.or(st.first_error);
        total.first_anomaly = total.first_anomaly.or(st.first_anomaly);
    }
    Ok(total)
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ops: u64,
    pub secs: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub anomalies: u64,
    pub first_anomaly: Option<String>,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
    /// Fails when any reply was an error or not what was expected.
    pub fn clean(&self, what: &str) -> io::Result<()> {
        if self.errors > 0 || self.anomalies > 0 {
            return Err(io::Error::other(format!(
                "{what}: {} error replies (first: {}), {} unexpected replies (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("-"),
                self.anomalies,
                self.first_anomaly.as_deref().unwrap_or("-")
            )));
        }
        Ok(())
    }
}

struct Flight {
    k: u64,
    second: bool,
    replies: usize,
}

pub fn run(port: u16, plan: Plan, wl: &mut dyn Workload) -> io::Result<Stats> {
    let mut conns = (0..plan.conns.max(1))
        .map(|_| {
            let mut c = Conn::connect(port)?;
            c.set_sync(plan.sync);
            Ok(c)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let n = conns.len();
    // Each connection's share of the operations (the first ones one more
    // when they do not divide evenly), so that connection c's operations
    // are 0..quota[c] whatever the depth.
    let quota: Vec<u64> = (0..n as u64)
        .map(|c| plan.ops / n as u64 + u64::from(c < plan.ops % n as u64))
        .collect();
    let mut next_k = vec![0u64; n];
    let mut carry: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); n];
    let mut flights: Vec<Vec<Flight>> = (0..n).map(|_| Vec::new()).collect();
    let mut replies: Vec<Val> = Vec::new();
    let mut st = Stats::default();
    let mut issued = 0u64;
    let t0 = Instant::now();
    loop {
        let stop_new = plan.deadline.is_some_and(|d| t0.elapsed() >= d);
        if let Some(rate) = plan.rate {
            let due = Duration::from_secs_f64(issued as f64 / rate);
            let el = t0.elapsed();
            if due > el && !stop_new {
                std::thread::sleep(due - el);
            }
        }
        let mut any = false;
        for c in 0..n {
            let conn = &mut conns[c];
            for (k, data) in std::mem::take(&mut carry[c]) {
                let r = wl.finish(plan.conn_base + c, k, &data, conn);
                flights[c].push(Flight {
                    k,
                    second: true,
                    replies: r,
                });
            }
            let mut started = 0;
            while !stop_new && started < plan.depth && next_k[c] < quota[c] {
                let k = next_k[c];
                next_k[c] += 1;
                issued += 1;
                started += 1;
                let r = wl.start(plan.conn_base + c, k, conn);
                flights[c].push(Flight {
                    k,
                    second: false,
                    replies: r,
                });
            }
            if !flights[c].is_empty() {
                any = true;
                conn.flush()?;
            }
        }
        if !any {
            break;
        }
        for c in 0..n {
            for f in std::mem::take(&mut flights[c]) {
                replies.clear();
                for _ in 0..f.replies {
                    replies.push(conns[c].read()?);
                }
                if let Some(Val::Err(e)) = replies.iter().find(|v| v.is_err()) {
                    st.errors += 1;
                    st.first_error.get_or_insert_with(|| e.clone());
                    st.ops += 1;
                    continue;
                }
                let outcome = if f.second {
                    wl.finished(plan.conn_base + c, f.k, &replies).map(|_| None)
                } else {
                    wl.started(plan.conn_base + c, f.k, &replies)
                };
                match outcome {
                    Ok(Some(data)) => carry[c].push((f.k, data)),
                    Ok(None) => st.ops += 1,
                    Err(why) => {
                        st.anomalies += 1;
                        st.first_anomaly.get_or_insert(why);
                        st.ops += 1;
                    }
                }
            }
        }
    }
    st.secs = t0.elapsed().as_secs_f64();
    Ok(st)
}
