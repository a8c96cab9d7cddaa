//! The Markdown report of a run's results.

use crate::results::*;
use crate::workloads::STANZA_BYTES;
use std::fmt::Write;

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn events_text(e: &[LatencyEvent]) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter()
        .map(|e| format!("{}: max {} ms ({} samples)", e.name, e.max_ms, e.samples))
        .collect::<Vec<_>>()
        .join("; ")
}

fn slow_text(v: &[SlowCommand]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|c| format!("{} {}", c.name, thousands(c.max_us as f64)))
        .collect::<Vec<_>>()
        .join(", ")
        + " µs"
}

/// The report: one section after the other.
pub fn markdown(r: &Results) -> String {
    let sections: [fn(&mut String, &Results); 16] = [
        title, machine, how, targets, goals, stores, api_cost, cycles, memory, scale, signal,
        paging, timer, catchup, rdb, plot,
    ];
    let mut s = String::new();
    for section in sections {
        section(&mut s, r);
    }
    s
}

/// The title and what wrote the report.
fn title(w: &mut String, r: &Results) {
    let p = &r.p;
    let _ = writeln!(w, "# redis-im benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `scripts/bench` (driver: `bench/driver`){}. Every number below comes from one run, on one \
         redis-server with the module loaded, in {:.0} s.\n",
        if p.quick { " **with `--quick`: a smoke run with small sizes, not the reference numbers**" } else { "" },
        r.total_secs
    );
}

/// The machine and the server, as recorded at the start.
fn machine(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(w, "| {} | {} |", k, md_cell(v));
    }
}

/// How the throughput is measured: the run's sizes.
fn how(w: &mut String, r: &Results) {
    let p = &r.p;
    let signal = r.measures.iter().any(|m| m.label.starts_with("Signal"));
    let server = r.measures.iter().any(|m| !m.server_us.is_empty());
    let _ = writeln!(w, "\n## How\n");
    let _ = writeln!(
        w,
        "- Payload: a {STANZA_BYTES}-byte chat stanza, `<message xmlns='jabber:client' from='bob@example.com/phone' \
         to='alice@example.com' type='chat' id='x…'><body>…</body></message>`, whose `id` attribute is the unique \
         message id (26 bytes), the same for every variant.\n\
         - Throughput: {} operations per measurement{}, {} connections, pipeline depth {}, {} users \
         (`user:<12 digits>`, device `phone`), median of {} run(s) (range shown); the server is emptied \
         (`FLUSHALL`) and the users prepared before each run. Single commands are timed with `redis-benchmark` \
         (`-r {}`, ids from `__rand_int__`) and, for comparison, with the driver (one thread driving all \
         connections in lock step); everything with more than one command per operation with the driver only.\n{}\
         - A cycle is one message stored and then acknowledged by the device: the ack is sent in the round after \
         the store's reply came back; a cycle counts when its ack's reply is read.\n\
         - `im.max-pending` is raised to 10⁹ for the whole run so that no device is kicked by the load; \
         the timer is off (`sweep-interval 0`) except in the stall test{}.\n",
        thousands(p.ops as f64),
        if signal {
            " (a third of that for the Signal-style variants, whose scripts take several times as long)"
        } else {
            ""
        },
        p.conns,
        p.depth,
        p.users,
        p.repeats,
        p.users,
        if server {
            "- Server time: before each measurement `CONFIG RESETSTAT`, after it `INFO commandstats`: the time the \
             server spent in the commands the client sent (a script's inner calls are inside its `EVALSHA`), per \
             operation; a client-bound run shows its rate low but its server time as it is.\n"
        } else {
            ""
        },
        if r.catchup.is_some() {
            " and the flows of expiries (which have the default timer settings and `max-pending`)"
        } else {
            ""
        }
    );
}

/// The targets and their verdicts.
fn targets(w: &mut String, r: &Results) {
    let _ = writeln!(
        w,
        "## Targets\n\n| target | measured | ratio | goal | result |\n|---|---|---:|---|---|"
    );
    verdict_rows(w, &r.targets);
}

/// One table row per target or goal: what it is, what was measured, the
/// ratio, the goal and PASS or FAIL.
fn verdict_rows(w: &mut String, rows: &[Target]) {
    for t in rows {
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
}

/// The goals of many users and of the Signal-style peer, and their
/// verdicts.
fn goals(w: &mut String, r: &Results) {
    if r.goals.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n## Goals: many users, server time, the Signal-style peer\n\n\
         Each ratio is measured side by side in this run. Memory is redis-im's per message after the users \
         registered their device (from an empty server beside it); server time is `usec_per_call` of \
         `INFO commandstats` during the redis-benchmark runs, where `HSET` writes each message as the seed \
         layout does, a new key `OGM:<id>` per message (overwriting one of a few small hashes instead \
         costs a third of that: `bench/store-server-time.py`); the Signal-style memory is judged in the cell \
         where redis-im comes closest to it.\n\n\
         | goal | measured | ratio | goal | result |\n|---|---|---:|---|---|"
    );
    verdict_rows(w, &r.goals);
}

/// The single stores' rows: label and commands per operation.
const STORE_ROWS: [(&str, u32); 13] = [
    (L_PING, 1),
    (L_HSET, 1),
    (L_TYPE, 1),
    (L_FLOOR, 1),
    (L_IM_ON, 1),
    (L_IM_OFF, 1),
    (L_SEED_ON, 2),
    (L_SEED_OFF, 2),
    (L_LUA_ON, 1),
    (L_LUA_OFF, 1),
    (L_XADD, 1),
    (L_SIG1_STORE, 1),
    (L_SIG3_STORE, 3),
];

/// A measure's median, range and server time, or dashes.
fn rate_cells(m: Option<&Measure>) -> String {
    match m {
        Some(m) => format!(
            "{} | {} | {}",
            thousands(m.median()),
            spread(m),
            us(m.server())
        ),
        None => "- | - | -".into(),
    }
}

/// A server time per operation (µs), "-" when not measured.
fn us(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

/// Single stores: redis-benchmark and the driver side by side, each with
/// the server's own time per operation.
fn stores(w: &mut String, r: &Results) {
    let _ = writeln!(w, "\n## Store throughput (operations/s)\n");
    store_table(w, r, Section::Store);
    let many = r.measures.iter().any(|m| m.section == Section::StoreMany);
    if many {
        let _ = writeln!(
            w,
            "\n### The same with {} users\n\nEach user prepared as above (`-r {}` for redis-benchmark); the driver's \
             connections share the users evenly.\n",
            thousands(r.p.users_many as f64),
            r.p.users_many
        );
        store_table(w, r, Section::StoreMany);
        lookup_note(w, r);
        floor_note(w, r);
    }
}

/// What the floor of a module's store (`FLOOR.STORE`) leaves to
/// `IM.STORE`'s own work with many users (only when it ran).
fn floor_note(w: &mut String, r: &Results) {
    let rate = |label| r.rate(Section::StoreMany, label, Tool::RedisBenchmark);
    let server = |label| r.server(Section::StoreMany, label, Tool::RedisBenchmark);
    let (floor, hset, store) = (rate(L_FLOOR), rate(L_HSET), rate(L_IM_ON));
    let (floor_us, store_us) = (server(L_FLOOR), server(L_IM_ON));
    if ![floor, hset, store, floor_us, store_us]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
    {
        return;
    }
    let _ = writeln!(
        w,
        "\n`FLOOR.STORE` (`bench/floor`, a module loaded beside redis-im) is the least a module's store to \
         an existing key does: it opens the user's key (a `floor-box` under the same name), appends the stanza \
         and answers with `IM.STORE`'s five reply calls, and parses, indexes and schedules nothing. With {} \
         users it runs at {} a second, {:.2}× `HSET`, in {} µs of server time; a pending `IM.STORE` runs at {:.2}× `HSET` in {} µs, so what \
         it does beyond the floor (the stanza's check, the id, the delivery, the schedule, its own dispatch \
         and bookkeeping) costs {:.2} µs of server time a store.",
        thousands(r.p.users_many as f64),
        thousands(floor),
        floor / hset,
        us(floor_us),
        store / hset,
        us(store_us),
        store_us - floor_us,
    );
}

/// What the server's own lookup of a user's key costs with few and with
/// many users (the `TYPE` rows), beside the stores' server time.
fn lookup_note(w: &mut String, r: &Results) {
    let us_of = |section, label| r.server(section, label, Tool::RedisBenchmark);
    let (few, many) = (
        us_of(Section::Store, L_TYPE),
        us_of(Section::StoreMany, L_TYPE),
    );
    let (store_few, store_many) = (
        us_of(Section::Store, L_IM_ON),
        us_of(Section::StoreMany, L_IM_ON),
    );
    if ![few, many, store_few, store_many]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
    {
        return;
    }
    let _ = writeln!(
        w,
        "\nThe server's own lookup of a user's key (`TYPE`, which reads the key's object and nothing of \
         the mailbox) takes {} µs with {} users and {} µs with {}: {:.2} µs of the {:.2} µs that a pending \
         `IM.STORE` gains between the two. Every store to an existing mailbox pays it, where an `HSET` that \
         creates its key pays only for finding no key there.",
        us(few),
        thousands(r.p.users as f64),
        us(many),
        thousands(r.p.users_many as f64),
        many - few,
        store_many - store_few,
    );
}

fn store_table(w: &mut String, r: &Results, section: Section) {
    let _ = writeln!(
        w,
        "| variant | commands | redis-benchmark | range | server µs/op | driver | range | server µs/op |\n\
         |---|---:|---:|---|---:|---:|---|---:|"
    );
    for (label, cmds) in STORE_ROWS {
        let a = rate_cells(r.get(section, label, Tool::RedisBenchmark));
        let b = rate_cells(r.get(section, label, Tool::Driver));
        if a.starts_with('-') && b.starts_with('-') {
            continue;
        }
        let _ = writeln!(w, "| {} | {cmds} | {a} | {b} |", md_cell(label));
    }
}

/// What the module API itself costs (only when both API commands ran).
fn api_cost(w: &mut String, r: &Results) {
    let one = r.rate(Section::Store, L_API_ONE, Tool::RedisBenchmark);
    let many = r.rate(Section::Store, L_API_MANY, Tool::RedisBenchmark);
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
}

/// Store + ack cycles, pipelined and not.
fn cycles(w: &mut String, r: &Results) {
    let p = &r.p;
    let _ = writeln!(
        w,
        "\n## Store + ack cycle (cycles/s, driver)\n\n\
         Pipelined: {} connections, {} cycles in flight on each (all of a stage's commands sent together). \
         Unpipelined: {} threads with a connection each, every command waiting for its reply, as a blocking \
         client does ({} cycles per run). Server µs: the server's own time per cycle (`INFO commandstats` of \
         the commands sent). *redis-im is*: redis-im's rate over the row's, with as many devices per user.\n\n\
         | variant | commands per cycle | pipelined | range | server µs | redis-im is | unpipelined | range | server µs | redis-im is |\n\
         |---|---:|---:|---|---:|---:|---:|---|---:|---:|",
        p.conns,
        p.depth,
        p.conns,
        thousands((p.ops / 4) as f64)
    );
    for (label, cmds, base) in [
        (L_CYCLE_IM, 2, L_CYCLE_IM),
        (L_CYCLE_SEED, 6, L_CYCLE_IM),
        (L_CYCLE_LUA, 2, L_CYCLE_IM),
        (L_CYCLE_STREAM, 3, L_CYCLE_IM),
        (L_CYCLE_SIG1, 2, L_CYCLE_IM),
        (L_CYCLE_IM3, 4, L_CYCLE_IM3),
        (L_CYCLE_SIG3, 6, L_CYCLE_IM3),
    ] {
        let cell = |sec: Section| match r.get(sec, label, Tool::Driver) {
            Some(m) => format!(
                "{} | {} | {} | {:.2}×",
                thousands(m.median()),
                spread(m),
                us(m.server()),
                r.rate(sec, base, Tool::Driver) / m.median()
            ),
            None => "- | - | - | -".into(),
        };
        let (a, b) = (cell(Section::Cycle), cell(Section::CycleSync));
        if a.starts_with('-') && b.starts_with('-') {
            continue;
        }
        let _ = writeln!(w, "| {} | {cmds} | {a} | {b} |", md_cell(label));
    }
    let three = r.get(Section::Cycle, L_CYCLE_IM3, Tool::Driver).is_some();
    let _ = writeln!(
        w,
        "\nThe stream variant keeps every entry after `XACK` (deleting it would take an `XDEL` more); the others \
         leave nothing behind, which the driver checks after each run.{}",
        if three {
            " With 3 devices, redis-im stores once and each device acks (all three online, the message pending \
             on each); the Signal-style peer inserts a copy into each device's queue and each device removes its \
             copy by guid."
        } else {
            ""
        }
    );
}

/// Memory per stored message.
fn memory(w: &mut String, r: &Results) {
    let p = &r.p;
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
}

/// The matrix's layouts, in its columns' order, with their short names.
const SCALE_LAYOUTS: [(&str, &str); 7] = [
    (L_SC_IM, "redis-im, 1 device"),
    (L_SC_IM3, "redis-im, 3 devices"),
    (L_SC_IM_NONE, "redis-im, no device"),
    (L_SEED_OFF, "seed layout (offline)"),
    (L_XADD, "stream per user"),
    (L_SC_SIG1, "Signal-style, 1 device"),
    (L_SC_SIG3, "Signal-style, 3 devices"),
];

/// The memory matrix: bytes per message for many users with few messages
/// and few users with many, and what empty mailboxes cost.
fn scale(w: &mut String, r: &Results) {
    let Some(sc) = &r.scale else { return };
    let _ = writeln!(
        w,
        "\n## Memory at scale\n\n\
         Each cell: so many users with so many messages each (the {STANZA_BYTES}-byte stanza, every message its \
         own id), each layout on an emptied server. `used_memory` is read on the empty server, after the users \
         registered their devices (redis-im: `IM.CONNECT` then `IM.DISCONNECT` of each device, so that the \
         messages are kept offline; the other layouts keep no device in Redis), and after the messages, stored \
         over 8 connections with 256 operations in flight on each (128 where users have 3 devices). Each reading waits until the filling connections are gone and the \
         keyspace's hash tables are not halfway through a resize. Bytes per message: **(a)** from the empty \
         server, the users' keys and devices included; **(b)** what the messages added once the users existed. \
         A Signal-style message counts all its copies (one per device queue). The seed layout is its offline \
         form (`ZADD OFOFFLINE:<user>` + `HMSET OFOFFLINE:<id>`, the workload of the tables above). Cells whose \
         layout would store more than {} entries (messages × copies) are skipped. The phase took {:.0} s.\n",
        thousands(sc.max_copies as f64),
        sc.secs
    );
    let rows: Vec<[u64; 2]> = r.p.scale.clone();
    let layouts: Vec<(&str, &str)> = SCALE_LAYOUTS
        .iter()
        .copied()
        .filter(|(l, _)| sc.cells.iter().any(|c| c.label == *l))
        .collect();
    let skipped = |l: &str, u: u64, m: u64| {
        sc.skipped
            .iter()
            .any(|s| s.label == l && s.users == u && s.per_user == m)
    };
    let _ = writeln!(
        w,
        "### (a) Bytes per message from an empty server (× the stanza)\n\n| users | messages each | messages | {} |\n|---:|---:|---:|{}",
        layouts.iter().map(|l| l.1).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(layouts.len())
    );
    for [u, m] in &rows {
        let cells: Vec<String> = layouts
            .iter()
            .map(|(l, _)| match sc.cell(l, *u, *m) {
                Some(c) => format!(
                    "{:.0} ({:.2}×)",
                    c.bytes_from_empty(),
                    c.bytes_from_empty() / STANZA_BYTES as f64
                ),
                None if skipped(l, *u, *m) => "skipped".into(),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(
            w,
            "| {} | {m} | {} | {} |",
            thousands(*u as f64),
            thousands((u * m) as f64),
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        w,
        "\n### redis-im: (a), (b) and the users alone\n\n\
         (c): bytes per user of the mailboxes before any message (they only remember their devices).\n\n\
         | users | messages each | layout | (a) from an empty server | (b) after the users | (b) × stanza | (c) per user, no message |\n\
         |---:|---:|---|---:|---:|---:|---:|"
    );
    for [u, m] in &rows {
        for l in [L_SC_IM, L_SC_IM3, L_SC_IM_NONE] {
            if let Some(c) = sc.cell(l, *u, *m) {
                let _ = writeln!(
                    w,
                    "| {} | {m} | {} | {:.1} | {:.1} | {:.3} | {} |",
                    thousands(*u as f64),
                    md_cell(l),
                    c.bytes_from_empty(),
                    c.bytes_after_users(),
                    c.bytes_after_users() / STANZA_BYTES as f64,
                    if c.users_only != c.before {
                        format!("{:.1}", c.per_user_bytes())
                    } else {
                        "-".into()
                    }
                );
            }
        }
    }
    if let Some(d) = &sc.devices {
        let steps = d.steps();
        let _ = writeln!(
            w,
            "\n### Empty mailboxes: what a user with no message costs\n\n\
             {} users, each mailbox remembering its registered (offline) devices and no message: devices added \
             one at a time to every mailbox. *A device adds* is what registering it added per mailbox; the goal \
             judges the mean of the second and third ({:.1} bytes).\n\n\
             | devices | bytes per user | a device adds |\n|---:|---:|---:|",
            thousands(d.users as f64),
            d.per_device()
        );
        for n in 1..=d.with.len() {
            let _ = writeln!(
                w,
                "| {n} | {:.1} | {} |",
                d.per_user(n),
                if n == 1 {
                    "-".into()
                } else {
                    format!("{:.1}", steps.get(n - 2).copied().unwrap_or(f64::NAN))
                }
            );
        }
    }
    if !sc.script_checks.is_empty() {
        let checks: Vec<String> = sc
            .script_checks
            .iter()
            .map(|s| {
                let rate = |c: &ScaleCell| thousands(c.messages() as f64 / c.fill_secs.max(1e-9));
                let direct = sc.cell(&s.label, s.users, s.per_user);
                format!(
                    "{} users × {}, {}: {:.1} bytes per message by the script ({} messages/s), {} written directly ({} messages/s)",
                    thousands(s.users as f64),
                    s.per_user,
                    SCALE_LAYOUTS
                        .iter()
                        .find(|l| l.0 == s.label)
                        .map_or(s.label.as_str(), |l| l.1),
                    s.bytes_from_empty(),
                    rate(s),
                    direct.map_or("-".into(), |d| format!("{:.1}", d.bytes_from_empty())),
                    direct.map_or("-".into(), rate)
                )
            })
            .collect();
        let _ = writeln!(
            w,
            "\nThe Signal-style cells are filled with what its insert script writes (`ZADD NX` of the message under \
             its number, `HSET` of the counter and the guid's number, the keys' expiry), sent directly: the same \
             keys and values, quicker to write. The script itself filled these cells again, on an emptied \
             server: {}.",
            checks.join("; ")
        );
    }
    if !sc.skipped.is_empty() {
        let mut text = Vec::new();
        for [u, m] in &rows {
            let here: Vec<&ScaleSkip> = sc
                .skipped
                .iter()
                .filter(|s| s.users == *u && s.per_user == *m)
                .collect();
            if here.is_empty() {
                continue;
            }
            let what = if here.len() == SCALE_LAYOUTS.len() {
                format!("every layout ({} messages)", thousands((u * m) as f64))
            } else {
                here.iter()
                    .map(|s| {
                        let name = SCALE_LAYOUTS
                            .iter()
                            .find(|l| l.0 == s.label)
                            .map_or(s.label.as_str(), |l| l.1);
                        format!("{name} ({})", s.why)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            text.push(format!("{} users × {m}: {what}", thousands(*u as f64)));
        }
        let _ = writeln!(
            w,
            "\nSkipped, where a layout would store more than {} entries (messages × copies; more would take more \
             time than the run allows, and the largest more memory than the machine has): {}.",
            thousands(sc.max_copies as f64),
            text.join("; ")
        );
    }
}

/// What the Signal-style peer is, in words.
fn signal(w: &mut String, r: &Results) {
    let any = r.measures.iter().any(|m| m.label.starts_with("Signal"))
        || r.scale.is_some()
        || r.paging.iter().any(|p| p.label == L_PAGE_SIGNAL);
    if !any {
        return;
    }
    let _ = writeln!(
        w,
        "\n## The Signal-style peer\n\n\
         Signal-Server keeps the messages waiting for a device in Redis (its \"message cache\", `MessagesCache`, \
         with Lua scripts `insert_item.lua`, `remove_item_by_guid.lua` and `get_items.lua`); the driver \
         re-creates that layout (`bench/driver/src/workloads.rs`, `SIGNAL_*`):\n\n\
         - **Per device, not per user.** Every device of an account has its own queue, so a message to a user \
         with three devices is inserted three times, one copy per queue, and each device deletes its own copy. \
         The account and its devices live outside Redis (Signal keeps them in its database), so Redis holds \
         nothing for a user until a message waits.\n\
         - **The queue** (`user_queue::{{<user>::<device>}}`) is a sorted set whose members are the messages \
         themselves (here the stanza; in Signal the serialized envelope, which carries the guid), scored by a \
         number local to the queue.\n\
         - **The metadata hash** (`user_queue_metadata::{{<user>::<device>}}`) holds that number's counter \
         (field `counter`, incremented per insert) and maps each message's guid to its number.\n\
         - **Insert** (a script, `EVALSHA`): if the hash knows the guid already it answers the known number \
         (a retry stores nothing); otherwise it takes the next number, adds the message to the queue under it \
         (`ZADD NX`), records guid → number, renews a 46-day expiry on both keys, and publishes a \"new message \
         available\" event on the device's shard channel (`SPUBLISH client_presence::{{...}}`; nobody listens \
         here, as nobody listens to redis-im's push hints).\n\
         - **Remove by guid** (a script): looks the number up, fetches the message at that score, removes it \
         from the queue and the guid from the hash, and when the queue is empty deletes both keys (counter \
         included).\n\
         - **Read a page** (a script): nothing while the queue's persist lock is held (a `GET` of \
         `user_queue_persisting::{{...}}`), else up to the page's size of messages with their numbers after the \
         cursor (`ZRANGE ... BYSCORE ( <n> +inf LIMIT 0 <size> WITHSCORES`).\n\n\
         What is the same for both: the user names (`user:<12 digits>`, where Signal uses a 36-character \
         account UUID), the payload (the {STANZA_BYTES}-byte stanza) and the message id (the guid is the \
         stanza's 26-byte id; Signal's is a 36-character UUID). Left out: Signal's persister, which moves \
         queues to its database after a while, the shared multi-recipient payloads, and the queue index that \
         older versions kept per shard (retired from the scripts in 2026). Device ids are 1, 2, 3; redis-im's \
         devices are `phone`, `laptop`, `tablet`."
    );
}

/// A page of offline messages from two mailbox sizes.
fn paging(w: &mut String, r: &Results) {
    let p = &r.p;
    let (sm, bg) = (count_name(p.page_small), count_name(p.page_big));
    let _ = writeln!(
        w,
        "\n## Offline retrieval: a page of 100 messages from the middle\n\nOne user whose only device is offline, \
         {sm} and {bg} messages; the page starts after the middle message. Client round-trip time in µs over {} \
         requests (one at a time, after 20 warm-up requests; the two mailboxes take turns in blocks of 50, so that \
         the machine's other load falls on both alike), and the server's own time per request \
         (`INFO commandstats`). The seed layout takes two round trips (the ids, then 100 pipelined `HGETALL`).{}\n\n\
         | layout | {sm}: median | p99 | server | {bg}: median | p99 | server | {bg} / {sm}: median | server |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        p.page_reps,
        if r.paging.iter().any(|p| p.label == L_PAGE_SIGNAL) {
            " The Signal-style page is its read script on the device's queue, after the middle message's number."
        } else {
            ""
        }
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
}

/// The timer: `IM.SWEEP` alone, then the timer's runs and the stall they
/// cause under a load.
fn timer(w: &mut String, r: &Results) {
    let (p, sw) = (&r.p, &r.sweep);
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
    sweep_rows(w, sw);
    timer_rows(w, sw, &r.stall);
    stall_rows(w, r);
    let _ = writeln!(
        w,
        "\nThe stall is the longest time the event loop is held by the timer: the longest latency event or the \
         longest run, whichever is larger (Redis has no latency event for module timers). The probe's \
         round-trip times also hold the client's own scheduling on {} cores, so they are shown, not judged.",
        r.machine.iter().find(|(k, _)| k == "nproc").map_or("?", |(_, v)| v.as_str())
    );
}

/// `IM.SWEEP` with no budget, with and without the deliveries not due.
fn sweep_rows(w: &mut String, sw: &SweepRes) {
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
}

/// The timer's runs during the load and with no load.
fn timer_rows(w: &mut String, sw: &SweepRes, st: &StallRes) {
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
        "| timer runs' durations (`im_sweep_last_us` polled every 5 ms; {} of {} runs seen): median / p99 / longest | {} / {} / {} µs{} |",
        sw.timer_runs_seen,
        sw.timer_runs,
        thousands(sw.timer_p50_us as f64),
        thousands(sw.timer_p99_us as f64),
        thousands(sw.timer_max_us as f64),
        if sw.timer_max_cpu_us > 0 {
            format!(" (longest in CPU time, `im_sweep_last_cpu_us`: {} µs)", thousands(sw.timer_max_cpu_us as f64))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        w,
        "| timer runs per second (`sweep-interval 100`: 10 expected), and runs less than 20 ms after the previous one | {:.1}/s, {} |",
        sw.runs_per_sec, sw.close_runs
    );
    let _ = writeln!(
        w,
        "| the same timer with no load at all ({} runs seen): median / p99 / longest; runs per second | {} / {} / {} µs; {:.1}/s, {} runs less than 20 ms after the previous |",
        sw.quiet.runs_seen,
        thousands(sw.quiet.p50_us as f64),
        thousands(sw.quiet.p99_us as f64),
        thousands(sw.quiet.max_us as f64),
        sw.quiet_runs_per_sec,
        sw.quiet_close_runs
    );
}

/// What the load and the server saw while the timer ran, and without it.
fn stall_rows(w: &mut String, r: &Results) {
    let (p, st) = (&r.p, &r.stall);
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
}

/// The timer under steady flows of expiries, and a client beside it.
fn catchup(w: &mut String, r: &Results) {
    let Some(c) = &r.catchup else { return };
    let _ = writeln!(
        w,
        "\n## The timer under steady flows of expiries\n\n\
         Deliveries fall due at a steady rate, each flow on an emptied server with the default timer settings \
         (`sweep-interval` 100 ms, `sweep-budget` 1,000 µs, `sweep-effort` 25 %, `push-events yes`) but \
         `ack-timeout` {} ms and `resend-interval` 0. A producer ({} connections, pipelined) stores for {:.0} s at \
         the flow's rate, each delivery pending on a device it connected (`IM.CONNECT ... NODE bench`) just before: \
         *kick per delivery*, a fresh user and device for every delivery, so that every delivery costs the timer \
         a kick; *{} per device*, bursts of {} deliveries in one pipeline to one of a few thousand devices (each \
         comes back for its next burst every {:.0} s), so that one kick expires {} deliveries. A subscriber on \
         `im:events:bench` takes the time of each `kick` event as it arrives.\n\n\
         - Lag: the kick's arrival minus the delivery's deadline, its store's time (a `TIME` sent in the same \
         pipeline just before it) + `ack-timeout`. A kick expires every delivery pending on its device, and \
         names the oldest (its `seq`): in the many kind, the burst it began, all stored in the same \
         pipeline; every expiry is counted (`im_expired`), and the kicks the subscriber saw are checked against \
         `im_kicked`. The lowest lag of a flow ({:.2} to {:.2} ms here) is the measure's own offset: the module \
         counts time in whole ms, and may expire a delivery up to 1 ms before its exact deadline.\n\
         - Steady state: the deliveries falling due from {:.0} s after the flow's start to its end ({:.0} s); \
         the timer's share of a core is its runs' time in that window (Δ`im_sweep_us_total`) over the \
         window's.\n\
         - Saturates: the backlog grows, seen as the lag of the deliveries due in the window's last second \
         exceeding that of its first second by more than {:.0} ms (or deliveries left unexpired {:.0} s after \
         the producer stopped); the rate the timer then expired is its ceiling.\n",
        c.ack_timeout_ms,
        c.conns,
        c.flow_secs,
        c.per_device,
        c.per_device,
        c.period_secs,
        c.per_device,
        c.flows.iter().map(|f| f.lag_min_ms).fold(0.0, f64::min),
        c.flows.iter().map(|f| f.lag_min_ms).fold(f64::NEG_INFINITY, f64::max),
        c.window_from_secs,
        c.flow_secs,
        LAG_GROWTH_MS,
        c.drain_max_secs
    );
    let _ = writeln!(
        w,
        "| deliveries due/s | kind | stored/s | kicks due/s | expired | lag p50 (ms) | p99 | max | timer: % of a core | saturates? |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for f in &c.flows {
        let mut sat = if !f.keeps_up() {
            format!(
                "**yes**: expired {}/s at most, lag {:.0} → {:.0} ms{}",
                thousands(f.expiry_rate()),
                f.lag_first_ms,
                f.lag_last_ms,
                if f.missing > 0 {
                    format!(", {} never expired", thousands(f.missing as f64))
                } else {
                    String::new()
                }
            )
        } else {
            "no".into()
        };
        if !f.reached() {
            sat += " (rate not reached)";
        }
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {sat} |",
            thousands(f.rate),
            kind_name(f.kind, c.per_device),
            thousands(f.achieved),
            thousands(f.kick_rate()),
            thousands(f.expired as f64),
            f.lag_p50_ms,
            f.lag_p99_ms,
            f.lag_max_ms,
            f.cpu_pct()
        );
    }
    let saturated: Vec<String> = c
        .flows
        .iter()
        .filter(|f| !f.keeps_up())
        .map(|f| {
            format!(
                "{}/s {} (the timer expired {}/s at most)",
                thousands(f.rate),
                kind_name(f.kind, c.per_device),
                thousands(f.expiry_rate())
            )
        })
        .collect();
    let short: Vec<String> = c
        .flows
        .iter()
        .filter(|f| !f.reached())
        .map(|f| {
            format!(
                "{}/s {} (stored {}/s)",
                thousands(f.rate),
                kind_name(f.kind, c.per_device),
                thousands(f.achieved)
            )
        })
        .collect();
    // The timer's ceiling as its cost per kick in the fastest kick per
    // delivery flow that kept up gives it.
    let ceiling = c
        .flows
        .iter()
        .filter(|f| f.kind == FlowKind::KickEach && f.keeps_up() && f.timer_us > 0)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map(|f| {
            format!(
                " At the timer's cost per kick in the {}/s flow with a kick per delivery ({:.2} µs), `sweep-effort` \
                 {} % would allow about {} kicks/s: the ceiling this projects, not one measured.",
                thousands(f.rate),
                f.us_per_kick(),
                c.sweep_effort_pct,
                thousands((c.sweep_effort_pct as f64 * 1e4 / f.us_per_kick() / 1000.0).round() * 1000.0)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "\n{}{}",
        if saturated.is_empty() {
            format!("No flow saturated the timer.{ceiling}")
        } else {
            format!("Saturated: {}.", saturated.join("; "))
        },
        if short.is_empty() {
            String::new()
        } else {
            format!(
                " Short of their rate (the producer stored less than {:.0} % of it): {}.",
                REACHED * 100.0,
                short.join("; ")
            )
        }
    );
    let _ = writeln!(
        w,
        "\nThe load beside the timer, over the same windows: the timer's runs per second (10 at rest, up to 250 \
         when behind), its time per kick (a kick expires one delivery or a burst), the server's main thread on a CPU and runnable but waiting for one \
         (`/proc/<pid>/schedstat`: the machine's other load shows there), the producer's thread on a CPU over \
         the flow, and how long after the producer stopped nothing was pending any more (`ack-timeout` + the \
         lag).\n\n\
         | deliveries due/s | kind | timer runs/s | timer µs per kick | server: on a CPU | waiting for a CPU | producer: on a CPU | drained after |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for f in &c.flows {
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.2} | {:.0} % | {:.0} % | {:.0} % | {:.2} s |",
            thousands(f.rate),
            kind_name(f.kind, c.per_device),
            f.runs_per_sec(),
            f.us_per_kick(),
            f.server_cpu_pct,
            f.server_wait_pct,
            f.producer_cpu_pct,
            f.drain_secs
        );
    }
    let _ = writeln!(
        w,
        "\nA concurrent client: one more connection doing `IM.STORE` to its own mailbox (its device offline), \
         one request at a time, round-trip times over the window; first with the timer idle (no flow, {:.0} s).\n\n\
         | concurrent client | requests | p50 (ms) | p99 | max |\n|---|---:|---:|---:|---:|\n\
         | timer idle, no flow | {} | {:.3} | {:.3} | {:.2} |",
        c.idle.secs,
        thousands(c.idle.requests as f64),
        c.idle.p50_ms,
        c.idle.p99_ms,
        c.idle.max_ms
    );
    if let Some(l) = &c.stores_only {
        let _ = writeln!(
            w,
            "| beside the stores of the {}/s kick-per-delivery flow, `ack-timeout` a day (timer idle) | {} | {:.3} | {:.3} | {:.2} |",
            thousands(CLIENT_AT),
            thousands(l.requests as f64),
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    for f in &c.flows {
        if let Some(l) = &f.client {
            let _ = writeln!(
                w,
                "| during the {}/s flow, {} | {} | {:.3} | {:.3} | {:.2} |",
                thousands(f.rate),
                kind_name(f.kind, c.per_device),
                thousands(l.requests as f64),
                l.p50_ms,
                l.p99_ms,
                l.max_ms
            );
        }
    }
}

/// SAVE and the restart that loads it.
fn rdb(w: &mut String, r: &Results) {
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
}

/// The plot, beside the report.
fn plot(w: &mut String, _: &Results) {
    let _ = writeln!(w, "\n![benchmark plot](bench.svg)");
}

/// The lowest and highest of a measure's runs ("-" for a single run).
fn spread(m: &Measure) -> String {
    if m.runs.len() < 2 {
        return "-".into();
    }
    let min = m.runs.iter().cloned().fold(f64::MAX, f64::min);
    let max = m.runs.iter().cloned().fold(0.0, f64::max);
    format!("{}–{}", thousands(min), thousands(max))
}
