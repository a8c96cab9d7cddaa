//! A private PostgreSQL server for the tests: initdb in a temporary
//! directory, started on a free loopback port, stopped when dropped. As root
//! it runs as the `postgres` user (PostgreSQL refuses to run as root).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, or the
/// directory `IM_ARCHIVER_PG_BIN` names.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("IM_ARCHIVER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestPostgres {
    /// `None` when PostgreSQL is not installed.
    pub fn start() -> Option<TestPostgres> {
        let bin = bin_dir()?;
        let as_postgres = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::Builder::new()
            .prefix("im-archiver-pg")
            .tempdir()
            .unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown postgres {}", dir.path().display());
        }
        let mut pg = TestPostgres {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        for _ in 0..3 {
            pg.port = free_port();
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("log").display().to_string();
            if pg.try_run(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-o", &opts, "start"],
            ) {
                return Some(pg);
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let path = Path::new(&self.bin).join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(self.dir.path());
        cmd
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        self.command(tool)
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of a new, empty database on this server.
    pub fn url(&self, db: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}", self.port);
        let mut client =
            postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        format!("{base}/{db}")
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data();
        self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
