//! The SVG plot of a run's results (written by hand, no dependencies).

use crate::results::*;
use crate::workloads::STANZA_BYTES;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Bar {
    label: String,
    value: f64,
    text: String,
    color: &'static str,
}

/// One panel's title, bars and dashed reference line.
struct Panel {
    title: String,
    bars: Vec<Bar>,
    reference: Option<(f64, &'static str)>,
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

const LABEL_W: f64 = 330.0;
const BAR_W: f64 = 420.0;
const ROW: f64 = 22.0;

/// One panel of horizontal bars at `y0`; answers its height.
fn panel(out: &mut String, y0: f64, p: &Panel) -> f64 {
    if p.bars.is_empty() {
        return 0.0;
    }
    let max = p
        .bars
        .iter()
        .map(|b| b.value)
        .chain(p.reference.map(|r| r.0))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(&p.title)
    );
    let top = y0 + 30.0;
    for (i, b) in p.bars.iter().enumerate() {
        bar(out, top + i as f64 * ROW, b, max);
    }
    let h = 30.0 + p.bars.len() as f64 * ROW;
    if let Some((v, name)) = p.reference {
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

/// One bar at `y`, its label to the left and its text to the right; `max`
/// is the value of the full width.
fn bar(out: &mut String, y: f64, b: &Bar, max: f64) {
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

/// The plot: a header, then the panels one below the other.
pub fn svg(r: &Results) -> String {
    let mut body = String::new();
    let mut y = 40.0;
    for p in panels(r) {
        y += panel(&mut body, y, &p);
    }
    let height = y + 10.0;
    let mut out = String::new();
    header(&mut out, r, height);
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

fn panels(r: &Results) -> Vec<Panel> {
    let plain = |title: &str, bars| Panel {
        title: title.into(),
        bars,
        reference: None,
    };
    let mut panels = vec![
        plain(
            "Store throughput, redis-benchmark (operations/s)",
            rate_bars(r, |m| {
                m.section == Section::Store
                    && m.tool == Tool::RedisBenchmark
                    && ![L_PING, L_TYPE, L_FLOOR, L_API_ONE, L_API_MANY].contains(&m.label.as_str())
            }),
        ),
        plain(
            "Store throughput, driver (operations/s)",
            rate_bars(r, |m| {
                m.section == Section::Store && m.tool == Tool::Driver && m.label != L_PING
            }),
        ),
        plain(
            "Server time per store, driver (µs per operation)",
            server_bars(r, Section::Store),
        ),
        plain(
            &format!(
                "Store throughput with {} users, redis-benchmark (operations/s)",
                thousands(r.p.users_many as f64)
            ),
            rate_bars(r, |m| {
                m.section == Section::StoreMany
                    && m.tool == Tool::RedisBenchmark
                    && ![L_PING, L_TYPE, L_FLOOR].contains(&m.label.as_str())
            }),
        ),
        plain(
            "Store + ack cycle, pipelined (cycles/s)",
            rate_bars(r, |m| m.section == Section::Cycle),
        ),
        plain(
            "Store + ack cycle, unpipelined, a thread per connection (cycles/s)",
            rate_bars(r, |m| m.section == Section::CycleSync),
        ),
        Panel {
            title: "Memory per stored message (bytes)".into(),
            bars: memory_bars(r),
            reference: Some((STANZA_BYTES as f64 * 1.2, "1.2× stanza")),
        },
    ];
    panels.extend(scale_panels(r));
    panels.push(plain(
        "Page of 100 offline messages from the middle (median µs)",
        page_bars(r),
    ));
    panels
}

/// The server's time per operation of the driver's runs in `section`.
fn server_bars(r: &Results, section: Section) -> Vec<Bar> {
    r.measures
        .iter()
        .filter(|m| m.section == section && m.tool == Tool::Driver && m.server().is_finite())
        .map(|m| Bar {
            label: m.label.clone(),
            value: m.server(),
            text: format!("{:.2} µs", m.server()),
            color: color_of(&m.label),
        })
        .collect()
}

/// The memory matrix: for 1, 5 and 100 messages per user, each layout at
/// the most users measured with redis-im, from an empty server.
fn scale_panels(r: &Results) -> Vec<Panel> {
    let Some(sc) = &r.scale else {
        return Vec::new();
    };
    let mut panels = Vec::new();
    for per in [1, 5, 100] {
        let Some(users) = sc
            .cells
            .iter()
            .filter(|c| c.label == L_SC_IM && c.per_user == per)
            .map(|c| c.users)
            .max()
        else {
            continue;
        };
        let bars = sc
            .cells
            .iter()
            .filter(|c| c.users == users && c.per_user == per)
            .map(|c| Bar {
                label: c.label.clone(),
                value: c.bytes_from_empty(),
                text: format!(
                    "{:.0} B ({:.2}×)",
                    c.bytes_from_empty(),
                    c.bytes_from_empty() / STANZA_BYTES as f64
                ),
                color: color_of(&c.label),
            })
            .collect();
        panels.push(Panel {
            title: format!(
                "Memory per message, {} users × {per}, from an empty server (bytes)",
                thousands(users as f64)
            ),
            bars,
            reference: Some((STANZA_BYTES as f64, "stanza")),
        });
    }
    panels
}

fn memory_bars(r: &Results) -> Vec<Bar> {
    r.memory
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
        .collect()
}

/// Two bars per layout: the small mailbox's median, the big one's.
fn page_bars(r: &Results) -> Vec<Bar> {
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
    pages
}

/// The `<svg>` element, its background, the title and the machine.
fn header(out: &mut String, r: &Results, height: f64) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height:.0}" viewBox="0 0 900 {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let machine = |key: &str| {
        r.machine
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    };
    let _ = writeln!(
        out,
        r#"<text x="10" y="24" font-size="18" font-weight="bold">redis-im benchmarks{}</text><text x="890" y="24" font-size="11" text-anchor="end">{} cores, {}</text>"#,
        if r.p.quick { " (quick run)" } else { "" },
        esc(machine("nproc")),
        esc(machine("CPU"))
    );
}
