//! The report's renderings of fixed results, compared byte for byte with
//! the files in `tests/fixtures/`. `UPDATE_FIXTURES=1 cargo test` writes
//! those files anew (only for a change meant to alter the output).

use crate::markdown::markdown;
use crate::results::*;
use crate::svg::svg;
use crate::Params;
use std::path::PathBuf;

fn machine() -> Vec<(String, String)> {
    [
        ("date (UTC)", "2026-11-27 11:29"),
        ("nproc", "2"),
        ("CPU", "Intel(R) Xeon(R) Processor <test> & co"),
        ("memory", "23.5 GiB"),
        ("kernel", "6.18.44-fc-v669"),
        ("load average at start (1, 5, 15 min)", "0.65, 1.15, 0.96"),
        (
            "redis-server",
            "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0",
        ),
        ("persistence", "none (no AOF, no save points, no replica)"),
        ("module", "redis-im 4a8cb6b (with uncommitted changes)"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A rate as the driver computes one: operations over seconds, a double
/// with all its digits.
fn rate(ops: f64, secs: f64) -> f64 {
    ops / secs
}

/// The single stores: label, redis-benchmark's seconds for 200,000
/// operations (none: driver only), the driver's, and the server's µs per
/// operation under each tool.
type StoreRow = (&'static str, Option<f64>, f64, (f64, f64));

const STORES: [StoreRow; 15] = [
    (L_PING, Some(0.078), 0.1077, (0.0512, 0.0498)),
    (L_HSET, Some(0.415), 0.433, (0.3291, 0.3307)),
    (L_TYPE, Some(0.071), 0.0, (0.0812, 0.0)),
    (L_FLOOR, Some(0.311), 0.0, (0.7614, 0.0)),
    (L_IM_ON, Some(0.398), 0.4637, (1.2934, 1.3101)),
    (L_IM_OFF, Some(0.363), 0.4197, (1.1877, 1.2012)),
    (L_SEED_ON, None, 0.7584, (0.0, 0.9013)),
    (L_SEED_OFF, None, 1.0712, (0.0, 1.2406)),
    (L_LUA_ON, Some(1.158), 1.1134, (4.1032, 4.0517)),
    (L_LUA_OFF, Some(1.592), 1.5573, (5.3108, 5.2779)),
    (L_API_ONE, Some(0.109), 0.1211, (0.1603, 0.0)),
    (L_API_MANY, Some(0.175), 0.1901, (0.5112, 0.0)),
    (L_XADD, Some(0.309), 0.3501, (0.7705, 0.7813)),
    (L_SIG1_STORE, None, 2.9517, (0.0, 11.9102)),
    (L_SIG3_STORE, None, 3.0219, (0.0, 36.2217)),
];

/// Every phase run, five repeats: every table and panel filled.
fn full() -> Results {
    let p = Params::new(false);
    let mut r = Results::new(machine(), p);
    for run in 0..5 {
        let f = 1.0 + [0.0, 0.013, -0.021, 0.007, -0.004][run];
        // 100,000 users: slower, the server's time higher.
        for (section, slow) in [(Section::Store, 1.0), (Section::StoreMany, 1.17)] {
            for (label, rb, drv, (rb_us, drv_us)) in STORES {
                if section == Section::StoreMany && (label == L_API_ONE || label == L_API_MANY) {
                    continue;
                }
                let ops = if label == L_SIG1_STORE || label == L_SIG3_STORE {
                    66_666.0
                } else {
                    200_000.0
                };
                if let Some(secs) = rb {
                    r.measure(
                        section,
                        label,
                        Tool::RedisBenchmark,
                        rate(ops, secs * f * slow),
                        rb_us * f * slow,
                    );
                }
                if ![L_API_ONE, L_API_MANY, L_TYPE, L_FLOOR].contains(&label) {
                    r.measure(
                        section,
                        label,
                        Tool::Driver,
                        rate(ops, drv / f * slow),
                        drv_us / f * slow,
                    );
                }
            }
        }
        for (label, secs, sync, us) in [
            (L_CYCLE_IM, 0.4994, 0.795, 2.4113),
            (L_CYCLE_SEED, 0.9329, 1.997, 3.0217),
            (L_CYCLE_LUA, 1.6666, 0.9723, 7.8012),
            (L_CYCLE_STREAM, 1.1207, 1.1782, 4.4476),
            (L_CYCLE_IM3, 0.2991, 0.3512, 4.5311),
            (L_CYCLE_SIG1, 4.4107, 1.6114, 20.1029),
            (L_CYCLE_SIG3, 4.7132, 1.9313, 61.0188),
        ] {
            let ops = if label == L_CYCLE_SIG1 || label == L_CYCLE_SIG3 {
                66_666.0
            } else {
                200_000.0
            };
            r.measure(
                Section::Cycle,
                label,
                Tool::Driver,
                rate(ops, secs * f),
                us * f,
            );
            r.measure(
                Section::CycleSync,
                label,
                Tool::Driver,
                rate(ops / 4.0, sync / f),
                us * 1.1 / f,
            );
        }
    }
    for (label, users_only, after) in [
        (L_MEM_IM_OFF, 621_337, 22_421_337),
        (L_MEM_IM_ON, 508_112, 28_608_112),
        (L_SEED_OFF, 0, 62_812_001),
        (L_SEED_ON, 0, 59_511_003),
        (L_LUA_OFF, 0, 62_812_401),
        (L_XADD, 0, 25_210_555),
    ] {
        let before = 1_104_000;
        let (users_only, after) = (before + users_only, before + after);
        r.memory.push(MemRow {
            label: label.into(),
            bytes_per_msg: (after - before) as f64 / 100_000.0,
            per_user: (users_only - before) as f64 / 1000.0,
            per_msg_after_users: (after - users_only) as f64 / 100_000.0,
        });
    }
    for (label, small, big) in [
        (L_PAGE_IM, (121.4, 170.2, 22.13), (120.2, 160.9, 22.29)),
        (L_PAGE_SEED, (256.5, 672.1, 40.04), (258.3, 674.7, 41.61)),
        (L_PAGE_STREAM, (143.0, 183.5, 28.35), (144.1, 183.2, 28.9)),
        (L_PAGE_SIGNAL, (151.2, 201.7, 37.02), (150.9, 199.3, 37.61)),
    ] {
        let t = |(median, p99, server)| Timing {
            median,
            p99,
            server,
        };
        let mut row = PageRow {
            label: label.into(),
            ..Default::default()
        };
        row.set(0, t(small));
        row.set(1, t(big));
        r.paging.push(row);
    }
    r.sweep = SweepRes {
        pending: 1_000_000,
        due: 10_000,
        alone_us: 8185,
        mixed_us: 11_558,
        budget_us: 1000,
        timer_runs: 50,
        timer_runs_seen: 49,
        timer_resent: 42_752,
        timer_max_us: 974,
        timer_max_cpu_us: 951,
        timer_p50_us: 931,
        timer_p99_us: 974,
        runs_per_sec: 49.0 / 4.9512,
        close_runs: 1,
        quiet: QuietRuns {
            p50_us: 920,
            p99_us: 990,
            max_us: 1012,
            runs_seen: 48,
        },
        quiet_runs_per_sec: 47.0 / 4.7003,
        quiet_close_runs: 0,
        backlog_left: true,
    };
    r.stall = StallRes {
        secs: 5.0,
        load_rate_off: rate(100_010.0, 5.0004),
        load_rate_on: rate(99_950.0, 5.0011),
        events: vec![
            LatencyEvent {
                name: "module-acquire-GIL".into(),
                max_ms: 1,
                samples: 3,
            },
            LatencyEvent {
                name: "command".into(),
                max_ms: 2,
                samples: 1,
            },
        ],
        base_events: Vec::new(),
        longest_us: 11_558,
        probe_max_off_ms: 1.3712,
        probe_p99_off_ms: 0.2803,
        probe_max_on_ms: 3.4129,
        probe_p99_on_ms: 0.7249,
        slow_off: Vec::new(),
        slow_on: vec![
            SlowCommand {
                name: "IM.STORE".into(),
                max_us: 1520,
            },
            SlowCommand {
                name: "EXEC".into(),
                max_us: 1003,
            },
        ],
    };
    r.rdb = RdbRes {
        messages: 1_000_000,
        keys: 1100,
        save_secs: 0.2811,
        bytes: 24_196_063,
        plain_secs: 0.2634,
        plain_bytes: 231_091_295,
        load_secs: Some(0.35),
        startup_secs: 0.3719,
    };
    r.scale = Some(scale(&r.p));
    r.total_secs = 1052.43;
    r.evaluate();
    r
}

/// What one cell of a layout costs in the fixture: bytes per user before
/// any message, then per message (bytes), and messages stored per second.
fn cell_costs(label: &str, per_user: u64) -> (f64, f64, f64) {
    // Fewer messages per user: each carries more of its key.
    let share = 1.0 / per_user as f64;
    match label {
        l if l == L_SC_IM => (611.3, 214.2 + 83.0 * share, 301_000.0),
        l if l == L_SC_IM3 => (741.9, 216.8 + 91.0 * share, 262_000.0),
        l if l == L_SC_IM_NONE => (0.0, 220.1 + 401.5 * share, 312_000.0),
        l if l == L_SEED_OFF => (0.0, 626.4 + 101.2 * share, 183_000.0),
        l if l == L_XADD => (0.0, 250.3 + 4102.0 * share, 402_000.0),
        l if l == L_SC_SIG1 => (0.0, 358.9 + 1091.3 * share, 171_000.0),
        _ => (0.0, 3.0 * (358.9 + 1091.3 * share), 61_000.0),
    }
}

/// The memory matrix of a full run: every cell of `Params::scale` up to
/// the limit of entries, the devices' costs, two cells filled by the
/// script.
fn scale(p: &Params) -> ScaleRes {
    let layouts = [
        (L_SC_IM, 1),
        (L_SC_IM3, 1),
        (L_SC_IM_NONE, 1),
        (L_SEED_OFF, 1),
        (L_XADD, 1),
        (L_SC_SIG1, 1),
        (L_SC_SIG3, 3),
    ];
    let mut res = ScaleRes {
        max_copies: p.scale_max_copies,
        secs: 371.9,
        ..Default::default()
    };
    let before = 1_213_408;
    for [users, per_user] in p.scale.clone() {
        for (label, copies) in layouts {
            let messages = users * per_user;
            let entries = messages * copies;
            if entries > p.scale_max_copies
                || (label == L_SC_IM3 && messages * 3 > p.scale_max_copies)
            {
                res.skipped.push(ScaleSkip {
                    label: label.into(),
                    users,
                    per_user,
                    why: if label == L_SC_IM3 && entries <= p.scale_max_copies {
                        "measured beside the Signal-style layout with 3 devices only".into()
                    } else {
                        format!("{} entries", thousands(entries as f64))
                    },
                });
                continue;
            }
            let (per_user_bytes, per_message, speed) = cell_costs(label, per_user);
            let users_only = before + (per_user_bytes * users as f64) as i64;
            res.cells.push(ScaleCell {
                label: label.into(),
                users,
                per_user,
                copies,
                before,
                users_only,
                after: users_only + (per_message * messages as f64) as i64,
                fill_secs: messages as f64 / speed,
            });
        }
    }
    for (users, per_user, label, off) in [
        (1_000, 100, L_SC_SIG1, 1_311),
        (1_000, 100, L_SC_SIG3, -2_004),
        (100_000, 1, L_SC_SIG1, 40_112),
        (100_000, 1, L_SC_SIG3, -8_192),
    ] {
        let mut c = res.cell(label, users, per_user).unwrap().clone();
        c.after += off;
        c.fill_secs *= 4.1;
        res.script_checks.push(c);
    }
    res.devices = Some(DeviceCosts {
        users: 100_000,
        before,
        with: vec![
            before + 61_130_000,
            before + 65_302_400,
            before + 69_486_400,
        ],
    });
    res
}

/// A flow as the phase records one.
#[allow(clippy::too_many_arguments)]
fn flow(
    kind: FlowKind,
    rate: f64,
    achieved: f64,
    lag: (f64, f64, f64),
    first_last: (f64, f64),
    expired_in_window: u64,
    timer_us: i64,
    timer_runs: i64,
    client: Option<Latency>,
) -> FlowRes {
    let per_kick = if kind == FlowKind::KickEach { 1 } else { 25 };
    let stored = (achieved * 10.0) as u64 / per_kick * per_kick;
    let window_secs = 8.0012;
    FlowRes {
        kind,
        rate,
        stored,
        achieved,
        devices: if per_kick == 1 {
            stored
        } else {
            (rate / 25.0 * 4.0) as u64
        },
        per_kick,
        expired: stored as i64,
        kicked: (stored / per_kick) as i64,
        window_secs,
        due: (rate * window_secs) as u64 / per_kick * per_kick,
        expired_in_window,
        missing: 0,
        lag_p50_ms: lag.0,
        lag_p99_ms: lag.1,
        lag_max_ms: lag.2,
        lag_min_ms: -0.12 - rate / 1e5,
        lag_first_ms: first_last.0,
        lag_last_ms: first_last.1,
        timer_us,
        timer_runs,
        server_cpu_pct: rate / 1000.0 * 1.37,
        server_wait_pct: 2.5,
        producer_cpu_pct: rate / 1000.0 * 0.41,
        drain_secs: 1.0 + lag.2 / 1000.0,
        client,
    }
}

/// Every phase run, the flows of expiries too: one saturated, one short
/// of its rate.
fn with_catchup() -> Results {
    let mut r = full();
    let (k, m) = (FlowKind::KickEach, FlowKind::ManyPerDevice);
    let client = |p50_ms, p99_ms, max_ms| {
        Some(Latency {
            requests: 181_004,
            secs: 8.0015,
            p50_ms,
            p99_ms,
            max_ms,
        })
    };
    r.catchup = Some(CatchupRes {
        ack_timeout_ms: 1000,
        sweep_effort_pct: 25,
        flow_secs: 10.0,
        window_from_secs: 2.0,
        per_device: 25,
        period_secs: 4.0,
        conns: 4,
        drain_max_secs: 15.0,
        idle: Latency {
            requests: 240_113,
            secs: 8.0002,
            p50_ms: 0.0291,
            p99_ms: 0.0612,
            max_ms: 1.2041,
        },
        stores_only: Some(Latency {
            requests: 190_551,
            secs: 8.0009,
            p50_ms: 0.0299,
            p99_ms: 0.9013,
            max_ms: 3.0127,
        }),
        flows: vec![
            flow(
                k,
                1000.0,
                1000.02,
                (50.2, 99.1, 101.3),
                (49.8, 50.6),
                8001,
                31_113,
                80,
                None,
            ),
            flow(
                m,
                1000.0,
                999.97,
                (51.0, 99.6, 100.2),
                (50.3, 51.1),
                8000,
                2_004,
                80,
                None,
            ),
            flow(
                k,
                5000.0,
                4999.8,
                (50.9, 99.4, 103.8),
                (50.1, 50.7),
                40_005,
                160_552,
                93,
                None,
            ),
            flow(
                m,
                5000.0,
                5000.1,
                (50.4, 99.2, 100.9),
                (49.9, 50.2),
                40_000,
                9_412,
                80,
                None,
            ),
            flow(
                k,
                20_000.0,
                19_998.4,
                (3.1, 61.7, 88.2),
                (3.0, 3.3),
                160_011,
                655_208,
                1_712,
                client(0.0301, 1.3127, 4.4198),
            ),
            flow(
                m,
                20_000.0,
                20_000.3,
                (49.7, 99.0, 100.4),
                (49.5, 50.3),
                160_000,
                35_518,
                81,
                client(0.0297, 0.1702, 1.9001),
            ),
            flow(
                k,
                50_000.0,
                46_210.7,
                (1210.4, 2301.2, 2377.0),
                (301.7, 2290.5),
                301_442,
                1_999_615,
                1_991,
                None,
            ),
            flow(
                m,
                50_000.0,
                49_999.2,
                (50.8, 99.8, 104.1),
                (50.2, 51.4),
                400_000,
                90_321,
                82,
                None,
            ),
        ],
    });
    r.evaluate();
    r
}

/// A `--quick --only stores,cycles` run: one repeat, the other phases'
/// tables empty, their targets left out.
fn partial() -> Results {
    let p = Params::new(true);
    let mut r = Results::new(machine(), p);
    for (label, rb, drv) in [
        (L_PING, 10_000.0 / 0.0081, 10_000.0 / 0.0113),
        (L_HSET, 20_000.0 / 0.0433, 20_000.0 / 0.0451),
        (L_IM_ON, 20_000.0 / 0.0412, 20_000.0 / 0.0461),
        (L_IM_OFF, 20_000.0 / 0.0399, 20_000.0 / 0.0437),
        (L_LUA_ON, 20_000.0 / 0.1203, 20_000.0 / 0.1141),
    ] {
        r.measure(
            Section::Store,
            label,
            Tool::RedisBenchmark,
            rb,
            1e6 / rb * 0.8,
        );
        r.measure(Section::Store, label, Tool::Driver, drv, 1e6 / drv * 0.7);
    }
    r.measure(
        Section::Store,
        L_SEED_ON,
        Tool::Driver,
        20_000.0 / 0.0781,
        2.9121,
    );
    r.measure(
        Section::Cycle,
        L_CYCLE_IM,
        Tool::Driver,
        20_000.0 / 0.0512,
        2.0118,
    );
    r.measure(
        Section::Cycle,
        L_CYCLE_LUA,
        Tool::Driver,
        20_000.0 / 0.1702,
        7.9901,
    );
    r.measure(
        Section::CycleSync,
        L_CYCLE_IM,
        Tool::Driver,
        5_000.0 / 0.0833,
        2.7311,
    );
    r.total_secs = 9.87;
    r.evaluate();
    r
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compares `got` with the fixture `name` (or writes it, with
/// `UPDATE_FIXTURES=1`); a difference leaves `got` in the temp dir.
fn check(name: &str, got: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if got != want {
        let out = std::env::temp_dir().join(format!("im-bench-{name}"));
        std::fs::write(&out, got).unwrap();
        panic!(
            "{name} differs from {} (this rendering: {})",
            path.display(),
            out.display()
        );
    }
}

fn check_all(stem: &str, r: &Results) {
    check(&format!("{stem}.md"), &markdown(r));
    check(&format!("{stem}.svg"), &svg(r));
    check(&format!("{stem}.txt"), &targets_text(r));
}

/// The results render as the fixtures, and so do they after a round trip
/// through JSON (which gives back the same results and the same JSON).
fn renders_alike(stem: &str, r: Results) {
    check_all(stem, &r);
    let json = r.to_json().unwrap();
    check(&format!("{stem}.json"), &json);
    let back = Results::from_json(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.to_json().unwrap(), json);
    check_all(stem, &back);
}

#[test]
fn full_run_renders_as_the_fixtures() {
    renders_alike("full", full());
}

#[test]
fn run_with_catchup_renders_as_the_fixtures() {
    renders_alike("catchup", with_catchup());
}

#[test]
fn partial_run_renders_as_the_fixtures() {
    renders_alike("partial", partial());
}

/// Results kept as JSON (the fixture, as `render` reads a file) render as
/// the fixtures, with the targets' verdicts as they were recorded.
#[test]
fn kept_json_renders_as_the_fixtures() {
    for stem in ["full", "partial", "catchup"] {
        let text = std::fs::read_to_string(fixture(&format!("{stem}.json"))).unwrap();
        check_all(stem, &Results::from_json(&text).unwrap());
    }
}

#[test]
fn json_of_another_format_is_refused() {
    let mut r = partial();
    r.format = FORMAT + 1;
    let e = Results::from_json(&r.to_json().unwrap()).unwrap_err();
    let want = format!("results of format {}", FORMAT + 1);
    assert!(e.to_string().contains(&want), "{e}");
    assert!(Results::from_json("{}").is_err());
}

/// A rate the driver could not compute is written as null and read back
/// as NaN, not refused.
#[test]
fn non_finite_rates_read_back() {
    let mut r = partial();
    r.sweep.runs_per_sec = f64::INFINITY;
    let back = Results::from_json(&r.to_json().unwrap()).unwrap();
    assert!(back.sweep.runs_per_sec.is_nan());
}

/// Results written before the scale phase, the server times and the
/// Signal-style peer existed (`before-scale.json`, as `docs/bench.json`
/// was) still read and render: their tables as before, no new section,
/// and of the goals only those their figures allow.
#[test]
fn results_from_before_the_scale_phase_render() {
    let text = std::fs::read_to_string(fixture("before-scale.json")).unwrap();
    let mut r = Results::from_json(&text).unwrap();
    assert!(r.scale.is_none() && r.goals.is_empty());
    assert!(r.measures.iter().all(|m| m.server_us.is_empty()));
    let md = markdown(&r);
    assert!(!md.contains("## Memory at scale") && !md.contains("## The Signal-style peer"));
    check_all("before-scale", &r);
    r.evaluate();
    let names: Vec<&str> = r.goals.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "paging from 1M ≤ 1.5× from 1k",
            "timer run ≤ 1.2× sweep-budget",
            "timer stall ≤ 2 ms"
        ]
    );
}

fn goal<'a>(r: &'a Results, name: &str) -> &'a Target {
    r.goals
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no goal {name}"))
}

/// Each goal's ratio is the figure it names: redis-im's bytes per message
/// after the users exist, the mean of what the 2nd and 3rd device add,
/// the server times of redis-benchmark's runs, the rates with 100,000
/// users, and against the Signal-style layout the cell where redis-im
/// comes closest.
#[test]
fn goals_judge_the_figures_they_name() {
    let r = full();
    let sc = r.scale.as_ref().unwrap();
    let stanza = crate::workloads::STANZA_BYTES as f64;
    for (name, users, per_user) in [
        ("memory, 100,000 users × 1: ≤ 1.5× stanza", 100_000, 1),
        ("memory, 20,000 users × 5: ≤ 1.3× stanza", 20_000, 5),
        ("memory, 1,000 users × 100: ≤ 1.15× stanza", 1_000, 100),
    ] {
        let c = sc.cell(L_SC_IM, users, per_user).unwrap();
        assert_eq!(goal(&r, name).ratio, c.bytes_after_users() / stanza);
        assert!(c.bytes_after_users() < c.bytes_from_empty());
    }
    let d = sc.devices.as_ref().unwrap();
    assert_eq!(d.steps(), [41.7, 41.8]);
    let g = goal(&r, "a registered device adds ≤ 48 bytes");
    assert_eq!(g.ratio, (d.per_user(3) - d.per_user(1)) / 2.0 / 48.0);
    assert!(g.pass);

    let sv = |section, label| r.server(section, label, Tool::RedisBenchmark);
    let g = goal(
        &r,
        "server time, 100,000 users: IM.STORE (offline) ≤ 1.5× HSET",
    );
    assert_eq!(
        g.ratio,
        sv(Section::StoreMany, L_IM_OFF) / sv(Section::StoreMany, L_HSET)
    );
    assert!(!g.pass);
    let rb = |label| r.rate(Section::StoreMany, label, Tool::RedisBenchmark);
    let g = goal(&r, "100,000 users: IM.STORE (pending) ≥ 2.5× Lua store");
    assert_eq!(g.ratio, rb(L_IM_ON) / rb(L_LUA_ON));

    // Signal-style: the highest ratio over the cells both have.
    let worst = sc
        .cells
        .iter()
        .filter(|c| c.label == L_SC_IM3)
        .map(|c| {
            c.bytes_from_empty()
                / sc.cell(L_SC_SIG3, c.users, c.per_user)
                    .unwrap()
                    .bytes_from_empty()
        })
        .fold(0.0, f64::max);
    let g = goal(&r, "memory per message ≤ 0.5× Signal-style, 3 devices");
    assert_eq!(g.ratio, worst);
    assert!(g.measured.contains("1,000 users × 1:"), "{}", g.measured);
    let cy = |label| r.rate(Section::Cycle, label, Tool::Driver);
    let g = goal(&r, "store+ack cycles ≥ 3× Signal-style, 3 devices");
    assert_eq!(g.ratio, cy(L_CYCLE_IM3) / cy(L_CYCLE_SIG3));

    // Without the scale phase nor the second round of stores those goals
    // are left out.
    let p = partial();
    assert!(p
        .goals
        .iter()
        .all(|g| g.name.starts_with("server time, 1,000 users")));
    assert_eq!(p.goals.len(), 2);
}
