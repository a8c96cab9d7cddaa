//! What the servers answer, read into plain types: `IM.ARCHIVE.PULL`'s
//! messages, `IM.IMPORT`'s reply, the primaries of `CLUSTER SHARDS` and
//! `CLUSTER NODES`, and restore requests published on Pub/Sub.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use redis::Value;

use crate::db::Message;

fn bytes(v: &Value) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.clone().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        _ => bail!("expected a string, got {v:?}"),
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => Ok(std::str::from_utf8(b)?.parse()?),
        Value::SimpleString(s) => Ok(s.parse()?),
        _ => bail!("expected an integer, got {v:?}"),
    }
}

fn array(v: &Value) -> Result<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        _ => bail!("expected an array, got {v:?}"),
    }
}

/// `[[user, seq, id, ts, stanza, [device, ...]], ...]`
pub fn pulled(v: &Value) -> Result<Vec<Message>> {
    array(v)?
        .iter()
        .map(|item| {
            let f = array(item)?;
            if f.len() != 6 {
                bail!("a pulled message has {} fields, not 6: {item:?}", f.len());
            }
            Ok(Message {
                user: bytes(&f[0]).context("user")?,
                seq: int(&f[1]).context("seq")?,
                id: bytes(&f[2]).context("id")?,
                ts: int(&f[3]).context("ts")?,
                stanza: bytes(&f[4]).context("stanza")?,
                devices: array(&f[5])?
                    .iter()
                    .map(bytes)
                    .collect::<Result<_>>()
                    .context("devices")?,
            })
        })
        .collect()
}

/// `IM.IMPORT`'s `[seq, id]`.
pub fn imported(v: &Value) -> Result<(i64, Vec<u8>)> {
    match array(v)? {
        [seq, id] => Ok((int(seq)?, bytes(id)?)),
        other => bail!("IM.IMPORT answered {other:?}, not [seq, id]"),
    }
}

/// A map reply as field/value pairs, whether RESP3 sent a map or RESP2 a
/// flat array.
fn pairs(v: &Value) -> Result<Vec<(String, &Value)>> {
    match v {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Ok((String::from_utf8(bytes(k)?)?, v)))
            .collect(),
        Value::Array(a) if a.len() % 2 == 0 => a
            .chunks(2)
            .map(|kv| Ok((String::from_utf8(bytes(&kv[0])?)?, &kv[1])))
            .collect(),
        _ => bail!("expected a map, got {v:?}"),
    }
}

/// A node address as a client reaches it.
pub type Addr = (String, u16);

/// The primaries in a `CLUSTER SHARDS` reply that are online, with or
/// without slots (a primary emptied of slots may still hold queued
/// messages). The address is the node's `endpoint` (what the cluster tells
/// clients to use, as in `MOVED`), its `ip` when the endpoint is unknown.
pub fn shards_primaries(v: &Value) -> Result<Vec<Addr>> {
    let mut out = Vec::new();
    for shard in array(v)? {
        let shard = pairs(shard)?;
        let Some((_, nodes)) = shard.iter().find(|(k, _)| k == "nodes") else {
            bail!("a shard without nodes");
        };
        for node in array(nodes)? {
            let node = pairs(node)?;
            let field = |name: &str| node.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let text = |name: &str| -> Option<String> {
                field(name)
                    .and_then(|v| bytes(v).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            if text("role").as_deref() != Some("master")
                || text("health").as_deref() == Some("fail")
            {
                continue;
            }
            let port = match field("port") {
                Some(p) => int(p)?,
                None => continue, // TLS only: not reachable without TLS
            };
            let host = match text("endpoint") {
                Some(e) if !e.is_empty() && e != "?" => e,
                _ => match text("ip") {
                    Some(ip) if !ip.is_empty() => ip,
                    _ => continue,
                },
            };
            out.push((host, u16::try_from(port).context("port")?));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The primaries in `CLUSTER NODES` output (servers without `CLUSTER
/// SHARDS`): lines `<id> <ip:port@cport[,hostname]> <flags> ...`, flags with
/// `master` and neither `fail` nor `handshake` nor `noaddr`.
pub fn nodes_primaries(text: &str) -> Result<Vec<Addr>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            bail!("bad CLUSTER NODES line: {line}");
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if !flags.contains(&"master")
            || flags
                .iter()
                .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"))
        {
            continue;
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("bad address in: {line}"))?;
        if host.is_empty() {
            continue;
        }
        out.push((host.trim_matches(['[', ']']).to_string(), port.parse()?));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A restore request: `{"event":"restore","user":"<key>","archived":<n>}`,
/// the key as `user_base64` when it is not UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub user: Vec<u8>,
    /// How many messages the evicted mailbox sent to the archive.
    pub archived: Option<u64>,
}

/// `Ok(None)` for an event of another kind (the channel may carry others).
pub fn restore_request(payload: &[u8]) -> Result<Option<RestoreRequest>> {
    let v: serde_json::Value = serde_json::from_slice(payload).context("not JSON")?;
    let Some(obj) = v.as_object() else {
        bail!("not a JSON object");
    };
    if obj.get("event").and_then(|e| e.as_str()) != Some("restore") {
        return Ok(None);
    }
    let user = match (obj.get("user"), obj.get("user_base64")) {
        (Some(serde_json::Value::String(u)), _) => u.clone().into_bytes(),
        (_, Some(serde_json::Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .context("user_base64")?,
        _ => bail!("restore request without user"),
    };
    let archived = obj.get("archived").and_then(|n| n.as_u64());
    Ok(Some(RestoreRequest { user, archived }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn pull_reply() {
        let v = Value::Array(vec![
            Value::Array(vec![
                bulk(b"alice@example.com"),
                Value::Int(1_795_764_670_609_000),
                bulk(b"m1"),
                Value::Int(1_795_764_670_635),
                bulk(b"<message id='m1'/>"),
                Value::Array(vec![bulk(b"phone"), bulk(b"\xfflaptop")]),
            ]),
            Value::Array(vec![
                bulk(b"\x00bob"),
                Value::Int(7),
                bulk(b"\xff"),
                Value::Int(8),
                bulk(b""),
                Value::Array(vec![]),
            ]),
        ]);
        let m = pulled(&v).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].user, b"alice@example.com");
        assert_eq!(
            (m[0].seq, m[0].ts),
            (1_795_764_670_609_000, 1_795_764_670_635)
        );
        assert_eq!(
            m[0].devices,
            vec![b"phone".to_vec(), b"\xfflaptop".to_vec()]
        );
        assert_eq!(
            (m[1].user.as_slice(), m[1].id.as_slice()),
            (&b"\x00bob"[..], &b"\xff"[..])
        );
        assert!(pulled(&Value::Array(vec![])).unwrap().is_empty());
        assert!(pulled(&Value::Array(vec![Value::Array(vec![bulk(b"x")])])).is_err());
        assert!(pulled(&Value::Int(3)).is_err());
    }

    #[test]
    fn import_reply() {
        let v = Value::Array(vec![Value::Int(42), bulk(b"m1")]);
        assert_eq!(imported(&v).unwrap(), (42, b"m1".to_vec()));
        assert!(imported(&Value::Array(vec![Value::Int(42)])).is_err());
    }

    fn node(fields: &[(&str, Value)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k.as_bytes()), v.clone()])
                .collect(),
        )
    }

    #[test]
    fn cluster_shards() {
        let primary = |port, health: &str| {
            node(&[
                ("id", bulk(b"abc")),
                ("port", Value::Int(port)),
                ("ip", bulk(b"127.0.0.1")),
                ("endpoint", bulk(b"127.0.0.1")),
                ("role", bulk(b"master")),
                ("health", bulk(health.as_bytes())),
            ])
        };
        let replica = node(&[
            ("port", Value::Int(7005)),
            ("ip", bulk(b"127.0.0.1")),
            ("endpoint", bulk(b"127.0.0.1")),
            ("role", bulk(b"replica")),
            ("health", bulk(b"online")),
        ]);
        let no_endpoint = node(&[
            ("port", Value::Int(7009)),
            ("ip", bulk(b"10.0.0.9")),
            ("endpoint", bulk(b"?")),
            ("role", bulk(b"master")),
            ("health", bulk(b"online")),
        ]);
        let shard = |slots: Vec<Value>, nodes: Vec<Value>| {
            node(&[
                ("slots", Value::Array(slots)),
                ("nodes", Value::Array(nodes)),
            ])
        };
        let v = Value::Array(vec![
            shard(
                vec![Value::Int(0), Value::Int(5460)],
                vec![primary(7001, "online"), replica],
            ),
            shard(
                vec![Value::Int(5461), Value::Int(16383)],
                vec![primary(7002, "online")],
            ),
            shard(vec![], vec![primary(7003, "fail")]),
            shard(vec![], vec![no_endpoint]),
        ]);
        assert_eq!(
            shards_primaries(&v).unwrap(),
            vec![
                ("10.0.0.9".to_string(), 7009),
                ("127.0.0.1".to_string(), 7001),
                ("127.0.0.1".to_string(), 7002)
            ]
        );
        // RESP3 maps read the same.
        let as_map = Value::Array(vec![Value::Map(vec![(
            bulk(b"nodes"),
            Value::Array(vec![Value::Map(vec![
                (bulk(b"port"), Value::Int(1)),
                (bulk(b"endpoint"), bulk(b"h")),
                (bulk(b"role"), bulk(b"master")),
            ])]),
        )])]);
        assert_eq!(
            shards_primaries(&as_map).unwrap(),
            vec![("h".to_string(), 1)]
        );
    }

    #[test]
    fn cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 127.0.0.1:30009@31009 master,fail - 0 0 9 connected
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb :0@0 master,noaddr - 0 0 9 connected
";
        assert_eq!(
            nodes_primaries(text).unwrap(),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30003)
            ]
        );
    }

    #[test]
    fn restore_requests() {
        let r = restore_request(br#"{"event":"restore","user":"alice@example.com","archived":50}"#)
            .unwrap();
        assert_eq!(
            r,
            Some(RestoreRequest {
                user: b"alice@example.com".to_vec(),
                archived: Some(50)
            })
        );
        let r = restore_request(br#"{"event":"restore","user_base64":"/wBib2I=","archived":3}"#)
            .unwrap();
        assert_eq!(
            r,
            Some(RestoreRequest {
                user: b"\xff\x00bob".to_vec(),
                archived: Some(3)
            })
        );
        let r =
            restore_request("{\"event\":\"restore\",\"user\":\"j\u{f6}rg\"}".as_bytes()).unwrap();
        assert_eq!(
            r,
            Some(RestoreRequest {
                user: "j\u{f6}rg".as_bytes().to_vec(),
                archived: None
            })
        );
        assert_eq!(
            restore_request(br#"{"event":"kick","user":"a"}"#).unwrap(),
            None
        );
        assert!(restore_request(br#"{"event":"restore"}"#).is_err());
        assert!(restore_request(br#"{"event":"restore","user_base64":"!!"}"#).is_err());
        assert!(restore_request(b"not json").is_err());
        assert!(restore_request(b"[1]").is_err());
    }
}
