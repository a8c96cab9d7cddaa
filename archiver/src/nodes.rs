//! The Redis side: every primary (one server, or each primary of a Redis
//! Cluster found from one seed address), a connection of its own to each
//! for the keyless `IM.ARCHIVE.PULL`, and keyed commands (`IM.ARCHIVE.ACK`,
//! `IM.IMPORT`) routed to the user's slot.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use redis::{
    Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, Value,
};

use crate::db::Message;
use crate::reply;

/// Connect, read and write timeout of every connection: a node that stops
/// answering is given up on and found again by the next discovery.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One primary.
pub struct Node {
    /// `host:port` (or the socket path), for logs.
    pub label: String,
    info: ConnectionInfo,
    conn: Option<Connection>,
}

impl Node {
    fn new(info: ConnectionInfo) -> Node {
        Node {
            label: info.addr().to_string(),
            info,
            conn: None,
        }
    }

    /// A new connection of its own to this node (for Pub/Sub).
    pub fn connect(&self) -> Result<Connection> {
        connect(&self.info).with_context(|| format!("connecting to {}", self.label))
    }

    fn conn(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            self.conn =
                Some(connect(&self.info).with_context(|| format!("connecting to {}", self.label))?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Runs a command on this node; a failed connection is dropped, to be
    /// opened again next time.
    fn query(&mut self, cmd: &redis::Cmd) -> Result<Value> {
        let conn = self.conn()?;
        match cmd.query::<Value>(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                if !answered(&e) {
                    self.conn = None;
                }
                Err(e.into())
            }
        }
    }
}

/// An error the server answered (the connection is fine), rather than one
/// of the connection.
fn answered(e: &redis::RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(_))
}

fn connect(info: &ConnectionInfo) -> redis::RedisResult<Connection> {
    let conn = redis::Client::open(info.clone())?.get_connection_with_timeout(TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    Ok(conn)
}

/// The servers the archiver talks to.
pub struct Redis {
    seed: ConnectionInfo,
    cluster: bool,
    nodes: Vec<Node>,
    keyed: Option<Box<dyn ConnectionLike + Send>>,
}

impl Redis {
    /// Parses the URL and discovers the primaries.
    pub fn open(url: &str) -> Result<Redis> {
        let seed = url
            .into_connection_info()
            .with_context(|| format!("bad Redis URL {url:?}"))?;
        let mut redis = Redis {
            seed,
            cluster: false,
            nodes: Vec::new(),
            keyed: None,
        };
        redis.discover()?;
        Ok(redis)
    }

    /// Is it a Redis Cluster?
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The primaries as last discovered.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Asks the seed (or, when it does not answer, any primary known so
    /// far) which primaries there are; keeps the connections to those that
    /// stay. Returns whether the set changed.
    pub fn discover(&mut self) -> Result<bool> {
        let mut candidates = vec![self.seed.clone()];
        candidates.extend(self.nodes.iter().map(|n| n.info.clone()));
        let mut last_error = None;
        for info in candidates {
            match self.primaries_seen_by(&info) {
                Ok((cluster, primaries)) => {
                    let mut old: HashMap<String, Node> =
                        self.nodes.drain(..).map(|n| (n.label.clone(), n)).collect();
                    let before: Vec<String> = {
                        let mut v: Vec<String> = old.keys().cloned().collect();
                        v.sort();
                        v
                    };
                    self.nodes = primaries
                        .into_iter()
                        .map(|info| {
                            let label = info.addr().to_string();
                            old.remove(&label).unwrap_or_else(|| Node::new(info))
                        })
                        .collect();
                    let mut after: Vec<String> =
                        self.nodes.iter().map(|n| n.label.clone()).collect();
                    after.sort();
                    if cluster != self.cluster {
                        self.keyed = None;
                    }
                    self.cluster = cluster;
                    let changed = before != after;
                    if changed {
                        tracing::info!(cluster, primaries = ?after, "primaries discovered");
                    }
                    return Ok(changed);
                }
                Err(e) => {
                    tracing::warn!(node = %info.addr(), error = %format!("{e:#}"), "discovery failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least the seed was tried"))
    }

    /// `(is a cluster, its primaries)` as one server sees them.
    fn primaries_seen_by(&self, info: &ConnectionInfo) -> Result<(bool, Vec<ConnectionInfo>)> {
        let mut conn = connect(info).with_context(|| format!("connecting to {}", info.addr()))?;
        let cluster_info: String = redis::cmd("INFO").arg("cluster").query(&mut conn)?;
        if !cluster_info.contains("cluster_enabled:1") {
            return Ok((false, vec![info.clone()]));
        }
        let primaries = match redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query::<Value>(&mut conn)
        {
            Ok(shards) => reply::shards_primaries(&shards)?,
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn)?;
                reply::nodes_primaries(&nodes)?
            }
            Err(e) => return Err(e.into()),
        };
        if primaries.is_empty() {
            bail!("{} knows no primary", info.addr());
        }
        let infos = primaries
            .into_iter()
            .map(|(host, port)| self.seed.clone().set_addr(ConnectionAddr::Tcp(host, port)))
            .collect();
        Ok((true, infos))
    }

    /// `IM.ARCHIVE.PULL COUNT <count> LEASE <lease>` on one primary.
    pub fn pull(&mut self, node: usize, count: u64, lease_ms: u64) -> Result<Vec<Message>> {
        let mut cmd = redis::cmd("IM.ARCHIVE.PULL");
        cmd.arg("COUNT").arg(count).arg("LEASE").arg(lease_ms);
        let v = self.nodes[node].query(&cmd)?;
        reply::pulled(&v)
    }

    /// `IM.ARCHIVE.ACK`, one per user, pipelined to the node the messages
    /// came from; a user whose slot has moved since (`MOVED`, `ASK`) is
    /// acked through the cluster routing. Returns how many were removed.
    pub fn ack(&mut self, node: usize, messages: &[Message]) -> Result<u64> {
        let mut order: Vec<&[u8]> = Vec::new();
        let mut seqs: HashMap<&[u8], Vec<i64>> = HashMap::new();
        for m in messages {
            seqs.entry(&m.user)
                .or_insert_with(|| {
                    order.push(&m.user);
                    Vec::new()
                })
                .push(m.seq);
        }
        let ack = |user: &[u8]| {
            let mut cmd = redis::cmd("IM.ARCHIVE.ACK");
            cmd.arg(user).arg(&seqs[user]);
            cmd
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for user in &order {
            pipe.add_command(ack(user));
        }
        let conn = self.nodes[node].conn()?;
        let replies: Vec<Value> = match pipe.query(conn) {
            Ok(r) => r,
            Err(e) => {
                self.nodes[node].conn = None;
                return Err(e).context("IM.ARCHIVE.ACK");
            }
        };
        let mut removed = 0u64;
        for (user, reply) in order.iter().zip(replies) {
            match reply {
                Value::Int(n) => removed += n.max(0) as u64,
                Value::ServerError(e)
                    if self.cluster
                        && matches!(
                            e.kind(),
                            Some(
                                redis::ServerErrorKind::Moved
                                    | redis::ServerErrorKind::Ask
                                    | redis::ServerErrorKind::TryAgain
                            )
                        ) =>
                {
                    let v = self
                        .keyed_query(&ack(user))
                        .context("IM.ARCHIVE.ACK after a redirection")?;
                    removed += redis::from_redis_value::<i64>(v)?.max(0) as u64;
                }
                Value::ServerError(e) => bail!("IM.ARCHIVE.ACK: {e}"),
                other => bail!("IM.ARCHIVE.ACK answered {other:?}"),
            }
        }
        Ok(removed)
    }

    /// `IM.IMPORT <user> <ts> <id> <stanza> SEQ <seq>`: `(seq, id)` of the
    /// message in the mailbox (the one already there when the id was).
    pub fn import(&mut self, m: &Message) -> Result<(i64, Vec<u8>)> {
        let mut cmd = redis::cmd("IM.IMPORT");
        cmd.arg(&m.user)
            .arg(m.ts)
            .arg(&m.id)
            .arg(&m.stanza)
            .arg("SEQ")
            .arg(m.seq);
        let v = self.keyed_query(&cmd)?;
        reply::imported(&v)
    }

    /// How many messages wait in one primary's archive queue, leased ones
    /// included (`INFO im`, `im_archive_queue`); `None` if not shown.
    pub fn queued(&mut self, node: usize) -> Result<Option<u64>> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("im");
        let v = self.nodes[node].query(&cmd)?;
        let text: String = redis::from_redis_value(v)?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("im_archive_queue:"))
            .and_then(|n| n.trim().parse().ok()))
    }

    /// A keyed command: to the one server, or routed by the cluster client
    /// to the key's slot (it follows `MOVED` and `ASK`).
    fn keyed_query(&mut self, cmd: &redis::Cmd) -> Result<Value> {
        if self.keyed.is_none() {
            self.keyed = Some(if self.cluster {
                let infos: Vec<ConnectionInfo> =
                    self.nodes.iter().map(|n| n.info.clone()).collect();
                let client = redis::cluster::ClusterClient::builder(infos)
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .build()?;
                Box::new(
                    client
                        .get_connection()
                        .context("connecting to the cluster")?,
                )
            } else {
                let info = self
                    .nodes
                    .first()
                    .map_or_else(|| self.seed.clone(), |n| n.info.clone());
                Box::new(connect(&info).with_context(|| format!("connecting to {}", info.addr()))?)
            });
        }
        let conn = self.keyed.as_mut().expect("just set");
        match cmd.query::<Value>(conn.as_mut()) {
            Ok(v) => Ok(v),
            Err(e) => {
                if !answered(&e) {
                    self.keyed = None;
                }
                Err(e.into())
            }
        }
    }
}
