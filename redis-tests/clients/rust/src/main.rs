//! Calls redis-im commands through redis-rs's cluster client
//! (`ClusterClient`), as an application would, and prints each reply as
//! one JSON line.
//!
//!     im-cluster-client <port>
//!
//! Each line on standard input is one call: tab-separated, the key the call
//! names first (unused: the client routes by itself), then the command and
//! its arguments. Each reply is printed at once as one line, {"ok": reply}
//! (bulk strings as UTF-8 text, integers as numbers, arrays as arrays) or
//! {"error": message}.

use redis::cluster::ClusterClient;
use redis::Value;
use std::fmt::Write as _;
use std::io::{BufRead, Write as _};

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json(out: &mut String, v: &Value) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BulkString(b) => json_string(out, &String::from_utf8_lossy(b)),
        Value::SimpleString(s) => json_string(out, s),
        Value::Okay => json_string(out, "OK"),
        Value::Array(items) | Value::Set(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(out, item);
            }
            out.push(']');
        }
        Value::Map(pairs) => {
            out.push('[');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(out, k);
                out.push(',');
                json(out, v);
            }
            out.push(']');
        }
        other => json_string(out, &format!("{other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = &args[1];
    let client = ClusterClient::new(vec![format!("redis://127.0.0.1:{port}/")]).expect("a client");
    let mut conn = client.get_connection().expect("a cluster connection");
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("a line of standard input");
        if line.is_empty() {
            continue;
        }
        let mut out = String::new();
        let mut fields = line.split('\t').skip(1);
        let mut cmd = redis::cmd(fields.next().expect("a command"));
        for a in fields {
            cmd.arg(a);
        }
        match cmd.query::<Value>(&mut conn) {
            Ok(v) => {
                out.push_str("{\"ok\":");
                json(&mut out, &v);
                out.push_str("}\n");
            }
            Err(e) => {
                out.push_str("{\"error\":");
                json_string(&mut out, &e.to_string());
                out.push_str("}\n");
            }
        }
        let mut w = stdout.lock();
        w.write_all(out.as_bytes()).expect("standard output");
        w.flush().expect("standard output");
    }
}
