//! The seed's flow against a redis-im server, with redis-rs.
//!
//!     cargo run --release -- [host [port]]   (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD)
//!
//! A device connects on an IM node, gets a message and acks it, goes offline,
//! misses three messages, comes back, reads the summary, pages and acks. Then a
//! message is left unacked: the node hears `resend` events on its channel and
//! finally a `kick`, and the device fetches the message when it reconnects.
//! Every reply is checked; the exit status is 1 when one differs.
use std::collections::HashMap;
use std::error::Error;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use redis::{cmd, from_redis_value_ref, Client, Connection, Value};
use serde_json::Value as Json;

type Result<T> = std::result::Result<T, Box<dyn Error>>;
/// A map reply (a flat array in RESP2) whose values are integers.
type Counts = HashMap<String, i64>;
/// A map reply with values of several kinds.
type Fields = HashMap<String, Value>;
/// `IM.STORE`'s reply: seq, id, the devices it is pending on.
type Stored = (i64, String, Vec<String>);
/// `IM.OFFLINE.PAGE`'s reply: cursor, [seq, id, ts, stanza] per message.
type Page = (i64, Vec<(i64, String, i64, String)>);

const DEVICE: &str = "phone";
/// Short timer settings so that the events come within seconds.
const SETTINGS: [(&str, &str); 2] = [("im.resend-interval", "400"), ("im.ack-timeout", "2000")];

fn expect<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}").into())
    }
}

fn stanza(user: &str, id: &str, text: &str) -> String {
    format!("<message from='bob@example.com/pc' to='{user}' id='{id}' type='chat'><body>{text}</body></message>")
}

fn config_get(r: &mut Connection, name: &str) -> Result<String> {
    let (_, value): (String, String) = cmd("CONFIG").arg("GET").arg(name).query(r)?;
    Ok(value)
}

/// `IM.CONNECT` of the device on the node: what it missed while away.
fn connect(r: &mut Connection, user: &str, node: &str) -> Result<Counts> {
    Ok(cmd("IM.CONNECT")
        .arg(user)
        .arg(DEVICE)
        .arg("NODE")
        .arg(node)
        .query(r)?)
}

/// `IM.STORE` of a message delivered to the connected device: pending there.
fn store_delivered(r: &mut Connection, user: &str, stanza: &str) -> Result<Stored> {
    Ok(cmd("IM.STORE")
        .arg(user)
        .arg(stanza)
        .arg("DEVICES")
        .arg(1)
        .arg(DEVICE)
        .query(r)?)
}

/// The device acks the message `id`, its last one: the mailbox is then empty.
fn ack_last(r: &mut Connection, user: &str, id: &str, what: &str) -> Result<()> {
    let acked = cmd("IM.ACK")
        .arg(user)
        .arg(DEVICE)
        .arg(id)
        .query::<i64>(r)?;
    expect(&format!("IM.ACK {id}"), acked, 1)?;
    let info: Counts = cmd("IM.INFO").arg(user).query(r)?;
    expect(what, info["messages"], 0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let host = args
        .next()
        .unwrap_or_else(|| env("REDIS_HOST", "127.0.0.1"));
    let port = args.next().unwrap_or_else(|| env("REDIS_PORT", "6379"));
    let password = env("REDIS_PASSWORD", "");
    let auth = if password.is_empty() {
        String::new()
    } else {
        format!(":{password}@")
    };
    let pid = std::process::id();
    let (user, node) = (
        format!("alice-rust-{pid}@example.com"),
        format!("xmpp-rust-{pid}"),
    );
    println!("redis-rs -> {host}:{port}, user {user}");

    let outcome = Client::open(format!("redis://{auth}{host}:{port}/"))
        .map_err(Box::from)
        .and_then(|client| {
            let mut r = client.get_connection()?;
            let saved = SETTINGS
                .iter()
                .map(|(name, _)| Ok((*name, config_get(&mut r, name)?)))
                .collect::<Result<Vec<_>>>()?;
            let outcome = flow(&client, &mut r, &user, &node, &saved);
            // Put the settings back and remove the mailbox, whatever happened.
            for (name, value) in &saved {
                cmd("CONFIG").arg("SET").arg(name).arg(value).exec(&mut r)?;
            }
            cmd("DEL").arg(&user).exec(&mut r)?;
            outcome
        });
    match outcome {
        Ok(()) => println!("OK"),
        Err(e) => {
            println!("FAIL {e}");
            std::process::exit(1);
        }
    }
}

fn flow(
    client: &Client,
    r: &mut Connection,
    user: &str,
    node: &str,
    saved: &[(&str, String)],
) -> Result<()> {
    // The IM node listens on its own channel before it takes sessions.
    let channel = config_get(r, "im.event-prefix")? + node;
    let mut listener = client.get_connection()?;
    let mut events = listener.as_pubsub();
    events.subscribe(&channel)?;
    events.set_read_timeout(Some(Duration::from_secs(1)))?;
    println!("node {node} listens on {channel}");
    for (name, value) in SETTINGS {
        cmd("CONFIG").arg("SET").arg(name).arg(value).exec(r)?;
    }
    println!(
        "CONFIG SET resend-interval 400 ms, ack-timeout 2000 ms (were {}, {})",
        saved[0].1, saved[1].1
    );

    // 1. The device connects; a message is delivered and acked.
    let info = connect(r, user, node)?;
    expect("IM.CONNECT count", info["count"], 0)?;
    println!("{DEVICE} connects on {node}: nothing missed");
    let m1 = stanza(user, "m1", "Hi Alice");
    let (seq, id, pending) = store_delivered(r, user, &m1)?;
    expect(
        "IM.STORE m1",
        (id.as_str(), pending),
        ("m1", vec![DEVICE.to_string()]),
    )?;
    println!("stored m1 (seq {seq}), delivered to {DEVICE}");
    ack_last(r, user, "m1", "messages after the ack")?;
    println!("{DEVICE} acks m1: the mailbox is empty");

    // 2. The device goes offline; messages are kept for it.
    expect(
        "IM.DISCONNECT",
        cmd("IM.DISCONNECT").arg(user).arg(DEVICE).query::<i64>(r)?,
        0,
    )?;
    println!("{DEVICE} disconnects");
    let mut sent = Vec::new();
    for (mid, text) in [
        ("m2", "Lunch?"),
        ("m3", "12:30 at the usual place"),
        ("m4", "Call me"),
    ] {
        let body = stanza(user, mid, text);
        let (seq, id, pending): Stored = cmd("IM.STORE").arg(user).arg(&body).query(r)?;
        expect(
            &format!("IM.STORE {mid}"),
            (id.as_str(), pending.len()),
            (mid, 0),
        )?;
        println!("stored {mid} (seq {seq}) offline");
        sent.push((seq, mid.to_string(), body));
    }
    let (first, last) = (sent[0].0, sent[2].0);

    // 3. It comes back: summary, pages, ack.
    let info = connect(r, user, node)?;
    expect(
        "IM.CONNECT summary",
        (info["count"], info["first"], info["last"]),
        (3, first, last),
    )?;
    expect(
        "bytes",
        info["bytes"],
        sent.iter().map(|m| m.2.len() as i64).sum(),
    )?;
    println!(
        "{DEVICE} reconnects: {} missed, {} bytes, seq {first}..{last}",
        info["count"], info["bytes"]
    );
    let info: Fields = cmd("IM.OFFLINE.INFO")
        .arg(user)
        .arg(DEVICE)
        .arg("IDS")
        .query(r)?;
    let ids: Vec<String> = from_redis_value_ref(&info["ids"])?;
    expect("IM.OFFLINE.INFO ids", ids.join(" ").as_str(), "m2 m3 m4")?;
    println!("offline ids: {}", ids.join(" "));
    let (mut cursor, mut got) = (0i64, Vec::new());
    loop {
        let (next, page): Page = cmd("IM.OFFLINE.PAGE")
            .arg(user)
            .arg(DEVICE)
            .arg("AFTER")
            .arg(cursor)
            .arg("COUNT")
            .arg(2)
            .query(r)?;
        let names: Vec<&str> = page.iter().map(|m| m.1.as_str()).collect();
        println!("page: {} (cursor {next})", names.join(" "));
        got.extend(page.into_iter().map(|(seq, id, _ts, body)| (seq, id, body)));
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    expect("paged messages", &got, &sent)?;
    expect(
        "IM.ACK UPTO",
        cmd("IM.ACK")
            .arg(user)
            .arg(DEVICE)
            .arg("UPTO")
            .arg(last)
            .query::<i64>(r)?,
        3,
    )?;
    let offline = cmd("IM.OFFLINE.INFO")
        .arg(user)
        .arg(DEVICE)
        .query::<Counts>(r)?["count"];
    expect("offline after the ack", offline, 0)?;
    println!("{DEVICE} acks UPTO {last}: 3 acked");

    // 4. A message the device never acks: resend events, then a kick.
    let m5 = stanza(user, "m5", "Are you there?");
    let (seq5, _, pending) = store_delivered(r, user, &m5)?;
    expect("IM.STORE m5 pending", pending, vec![DEVICE.to_string()])?;
    println!("stored m5 (seq {seq5}), delivered to {DEVICE}, which does not ack");
    let (mut attempts, mut kicked) = (Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !kicked && Instant::now() < deadline {
        let msg = match events.get_message() {
            Ok(msg) => msg,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e.into()),
        };
        let ev: Json = serde_json::from_str(&msg.get_payload::<String>()?)?;
        let target = (
            ev["user"].as_str(),
            ev["device"].as_str(),
            ev["seq"].as_i64(),
            ev["id"].as_str(),
        );
        expect(
            "event target",
            target,
            (Some(user), Some(DEVICE), Some(seq5), Some("m5")),
        )?;
        match ev["event"].as_str() {
            Some("resend") => {
                expect("resent stanza", ev["stanza"].as_str(), Some(m5.as_str()))?;
                attempts.push(ev["attempt"].as_i64().unwrap_or(0));
                println!(
                    "event resend m5, attempt {}: the node writes the stanza to the session again",
                    ev["attempt"]
                );
            }
            Some("kick") => {
                expect("kick reason", ev["reason"].as_str(), Some("ack-timeout"))?;
                kicked = true;
                println!("event kick {DEVICE} (ack-timeout): the node closes the session");
            }
            other => expect("event kind", other, Some("resend or kick"))?,
        }
    }
    expect("kicked within 15 s", kicked, true)?;
    let want: Vec<i64> = (2..2 + attempts.len().max(1) as i64).collect();
    expect("resend attempts", &attempts, &want)?;
    let devices: Vec<Fields> = cmd("IM.DEVICES").arg(user).query(r)?;
    let state = devices
        .iter()
        .map(|d| {
            let int = |name: &str| from_redis_value_ref::<i64>(&d[name]);
            Ok((
                from_redis_value_ref::<String>(&d["device"])?,
                int("online")?,
                int("pending")?,
                int("offline")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    expect(
        "IM.DEVICES after the kick",
        state,
        vec![(DEVICE.to_string(), 0, 0, 1)],
    )?;
    let info = connect(r, user, node)?;
    expect("IM.CONNECT after the kick", info["count"], 1)?;
    let (cursor, page): Page = cmd("IM.OFFLINE.PAGE").arg(user).arg(DEVICE).query(r)?;
    let page: Vec<(i64, String, String)> = page
        .into_iter()
        .map(|(s, id, _, body)| (s, id, body))
        .collect();
    expect(
        "page after the kick",
        (cursor, page),
        (0, vec![(seq5, "m5".to_string(), m5.clone())]),
    )?;
    ack_last(r, user, "m5", "messages at the end")?;
    println!("{DEVICE} reconnects, pages m5, acks it by id: the mailbox is empty");
    Ok(())
}
