//! A redis-server with the module loaded, started and stopped by the suite.

use crate::resp::{Conn, Val};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub module: PathBuf,
    pub log: PathBuf,
    /// `appendonly yes` (`appendfsync everysec`) instead of no persistence.
    pub appendonly: bool,
    /// A second module to load beside redis-im: the store's floor
    /// (`bench/floor`, commands `FLOOR.INIT` and `FLOOR.STORE`).
    pub floor: Option<PathBuf>,
}

/// A port nobody listens on now.
pub fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    pub fn new(module: &Path, dir: &Path, port: u16) -> Server {
        Server {
            child: None,
            port,
            dir: dir.to_path_buf(),
            module: module.to_path_buf(),
            log: dir.join("redis.log"),
            appendonly: false,
            floor: None,
        }
    }

    /// Starts the server and waits until it answers PING (and so has
    /// loaded any RDB file in its dir); answers how long that took.
    pub fn start(&mut self) -> io::Result<Duration> {
        let t0 = Instant::now();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.appendonly {
                ["--appendonly", "yes", "--appendfsync", "everysec"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .args(["--dbfilename", "bench.rdb"])
            .arg("--logfile")
            .arg(&self.log)
            .arg("--loadmodule")
            .arg(&self.module)
            .args([
                "sweep-interval",
                "0",
                "max-messages",
                "2000000",
                "max-bytes",
                "1000000000",
            ])
            .args(
                self.floor
                    .iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--loadmodule"), f.as_os_str()]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "redis-server exited ({status}); see {}",
                        self.log.display()
                    )));
                }
            }
            if let Ok(mut c) = Conn::connect(self.port) {
                if let Ok(Val::Str(_)) = c.call_str(&["PING"]) {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() > Duration::from_secs(300) {
                return Err(io::Error::other("redis-server did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut c) = Conn::connect(self.port) {
                let _ = c.call_str(&["SHUTDOWN", "NOSAVE"]);
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last "DB loaded from disk: X seconds" in the log.
    pub fn loaded_seconds(&self) -> Option<f64> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("DB loaded from disk"))?;
        let after = line.split("DB loaded from disk:").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
