//! RESP2 over a plain TcpStream: commands are appended to an output buffer
//! (so any number can be pipelined) and sent with `flush`; replies are read
//! back one at a time, in order.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Nil,
    Str(Vec<u8>),
    Err(String),
    Int(i64),
    Arr(Vec<Val>),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            _ => None,
        }
    }
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn arr(&self) -> Option<&[Val]> {
        match self {
            Val::Arr(a) => Some(a),
            _ => None,
        }
    }
    pub fn is_err(&self) -> bool {
        matches!(self, Val::Err(_))
    }
    /// A short human form, for error messages.
    pub fn show(&self) -> String {
        let s = match self {
            Val::Nil => "(nil)".to_string(),
            Val::Str(s) => format!("\"{}\"", String::from_utf8_lossy(s)),
            Val::Err(e) => format!("(error) {e}"),
            Val::Int(i) => i.to_string(),
            Val::Arr(a) => format!(
                "[{}]",
                a.iter().map(Val::show).collect::<Vec<_>>().join(", ")
            ),
        };
        if s.len() > 300 {
            format!(
                "{}...",
                &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)]
            )
        } else {
            s
        }
    }
    /// Flat key/value array (RESP2 form of a map) as pairs of text and value.
    pub fn pairs(&self) -> Vec<(String, Val)> {
        let mut out = Vec::new();
        if let Some(a) = self.arr() {
            for kv in a.chunks(2) {
                if let [k, v] = kv {
                    out.push((
                        String::from_utf8_lossy(k.bytes().unwrap_or_default()).into_owned(),
                        v.clone(),
                    ));
                }
            }
        }
        out
    }
}

pub struct Conn {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
    out: Vec<u8>,
    line: Vec<u8>,
    /// Each command waits for its reply before the next is sent (a client
    /// that does not pipeline); the replies are kept for `read`.
    sync: bool,
    replies: std::collections::VecDeque<io::Result<Val>>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad integer in reply"))
}

impl Conn {
    pub fn connect(port: u16) -> io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(Conn {
            rd: BufReader::with_capacity(1 << 17, s.try_clone()?),
            wr: s,
            out: Vec::with_capacity(1 << 16),
            line: Vec::with_capacity(256),
            sync: false,
            replies: Default::default(),
        })
    }

    /// From now on every command waits for its reply (no pipelining).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Appends one command to the pipeline.
    pub fn cmd(&mut self, args: &[&[u8]]) {
        let o = &mut self.out;
        o.push(b'*');
        push_num(o, args.len() as u64);
        o.extend_from_slice(b"\r\n");
        for a in args {
            o.push(b'$');
            push_num(o, a.len() as u64);
            o.extend_from_slice(b"\r\n");
            o.extend_from_slice(a);
            o.extend_from_slice(b"\r\n");
        }
        if self.sync {
            let r = self.flush().and_then(|_| self.read_reply());
            self.replies.push_back(r);
        }
    }

    /// Appends one command given as text words.
    pub fn cmd_str(&mut self, args: &[&str]) {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        let n = self.rd.read_until(b'\n', &mut self.line)?;
        if n < 2 || !self.line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.line.truncate(n - 2);
        Ok(())
    }

    /// Reads the next reply.
    pub fn read(&mut self) -> io::Result<Val> {
        match self.replies.pop_front() {
            Some(r) => r,
            None => self.read_reply(),
        }
    }

    fn read_reply(&mut self) -> io::Result<Val> {
        self.read_line()?;
        let Some(&t) = self.line.first() else {
            return Err(bad("empty reply line"));
        };
        match t {
            b'+' => Ok(Val::Str(self.line[1..].to_vec())),
            b'-' => Ok(Val::Err(
                String::from_utf8_lossy(&self.line[1..]).into_owned(),
            )),
            b':' => Ok(Val::Int(parse_int(&self.line[1..])?)),
            b'$' => {
                let n = parse_int(&self.line[1..])?;
                if n < 0 {
                    return Ok(Val::Nil);
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.rd.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Ok(Val::Str(buf))
            }
            b'*' => {
                let n = parse_int(&self.line[1..])?;
                if n < 0 {
                    return Ok(Val::Nil);
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.read_reply()?);
                }
                Ok(Val::Arr(v))
            }
            _ => Err(bad("unknown reply type")),
        }
    }

    /// One command, waiting for its reply.
    pub fn call_str(&mut self, args: &[&str]) -> io::Result<Val> {
        self.cmd_str(args);
        self.flush()?;
        self.read()
    }

    /// A command that must not answer an error.
    pub fn ok(&mut self, args: &[&str]) -> io::Result<Val> {
        let v = self.call_str(args)?;
        if let Val::Err(e) = &v {
            return Err(io::Error::other(format!("{}: {e}", args.join(" "))));
        }
        Ok(v)
    }

    /// Sends what is queued and reads `n` replies; the first error reply
    /// is returned as an error.
    pub fn drain(&mut self, n: usize) -> io::Result<()> {
        self.flush()?;
        let mut first = None;
        for _ in 0..n {
            if let Val::Err(e) = self.read()? {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }

    /// `INFO <section>` as name/value pairs.
    pub fn info(&mut self, section: &str) -> io::Result<std::collections::HashMap<String, String>> {
        let v = self.ok(&["INFO", section])?;
        let text = String::from_utf8_lossy(v.bytes().unwrap_or_default()).into_owned();
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    pub fn info_i64(&mut self, section: &str, field: &str) -> io::Result<i64> {
        let m = self.info(section)?;
        m.get(field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("INFO {section} has no {field}")))
    }
}

/// Appends the decimal form of `n`.
pub fn push_num(o: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    o.extend_from_slice(&tmp[i..]);
}

/// Writes `n` as 12 zero-padded digits (the form of redis-benchmark's
/// `__rand_int__`) into `dst`.
pub fn pad12(dst: &mut [u8], mut n: u64) {
    for i in (0..12).rev() {
        dst[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}
