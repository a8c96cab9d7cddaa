"""The archiver (archiver/, binary im-archiver) against real servers and real
databases: SQLite, and a private PostgreSQL started for the session.

Messages reach the archive queue through retention (`retention`, `archive
yes`) or eviction (`mailbox-idle`); the archiver pulls them into the
database, acks them, and loads a user back with IM.IMPORT. These tests run
on two of the four servers (Redis 7.0 and Valkey 9.1) to keep the run short.

Environment: IM_ARCHIVER (the binary, default target/release/im-archiver),
IM_ARCHIVER_PG_BIN (PostgreSQL's bin directory, default the newest
/usr/lib/postgresql/<version>/bin; installed with apt when missing).
"""

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster

from conftest import REPO, _die_with_parent, free_port
from helpers import as_map, message, wait_for
from cluster import make_cluster

ARCHIVER = Path(os.environ.get("IM_ARCHIVER", REPO / "target" / "release" / "im-archiver")).resolve()
FLAVORS_HERE = ("redis", "valkey9")


@pytest.fixture(autouse=True)
def _archiver_flavors(request):
    """Two servers are enough for the archiver: the module's behaviour on
    each server is the other test files' concern."""
    flavor = request.getfixturevalue("flavor") if "flavor" in request.fixturenames else None
    if flavor is not None and flavor not in FLAVORS_HERE:
        pytest.skip(f"archiver tests run on {', '.join(FLAVORS_HERE)}")
    if not ARCHIVER.exists():
        pytest.fail(f"archiver not built: {ARCHIVER} (cargo build --release -p im-archiver, or set IM_ARCHIVER)")


def require_archive_commands(server):
    """The module's side of the archive (IM.ARCHIVE.PULL and the rest)."""
    info = server.client().execute_command("COMMAND", "INFO", "im.archive.pull", "im.import")
    if not info or any(i is None for i in info):
        pytest.skip("module built without IM.ARCHIVE.PULL / IM.IMPORT")


# ---------------------------------------------------------------- PostgreSQL

def _pg_bin():
    if os.environ.get("IM_ARCHIVER_PG_BIN"):
        return Path(os.environ["IM_ARCHIVER_PG_BIN"])
    root = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name), p / "bin") for p in root.glob("*") if p.name.isdigit() and (p / "bin" / "initdb").exists()) \
        if root.exists() else []
    return versions[-1][1] if versions else None


def _install_postgresql():
    """apt-get install postgresql, without letting its init script start a
    server (as scripts/install-deps does for redis-server)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    finally:
        if added:
            policy.unlink()


class Postgres:
    """A private PostgreSQL: initdb in a temporary directory, a free
    loopback port, trust authentication; as root it runs as `postgres`."""

    def __init__(self):
        self.bin = _pg_bin()
        if self.bin is None:
            _install_postgresql()
            self.bin = _pg_bin()
        assert self.bin is not None, "PostgreSQL not found after installing it"
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="im-archiver-pg"))
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.tool("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        for attempt in range(3):
            self.port = free_port()
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            r = self.tool("pg_ctl", "-D", self.data, "-l", self.dir / "log", "-w", "-o", opts, "start", check=False)
            if r.returncode == 0:
                return
        raise AssertionError("PostgreSQL did not start:\n" + (self.dir / "log").read_text(errors="replace")[-3000:])

    def tool(self, name, *args, check=True):
        argv = [str(self.bin / name), *map(str, args)]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        r = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"{name} failed: {r.stderr}")
        return r

    def psql(self, sql, db="postgres"):
        r = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def new_db(self, name):
        self.psql(f"DROP DATABASE IF EXISTS {name}")
        self.psql(f"CREATE DATABASE {name}")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.stop()


class Database:
    """One archive database of a kind, with a way to count and read rows."""

    def __init__(self, kind, tmp_path, request):
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp_path / "archive.sqlite3"
            self.url = f"sqlite://{self.path}"
        else:
            self.pg = request.getfixturevalue("postgres")
            self.name = "t" + str(abs(hash(request.node.nodeid)) % 10**12)
            self.url = self.pg.new_db(self.name)

    def rows(self, sql):
        """Rows of a query, each a tuple of str."""
        if self.kind == "sqlite":
            if not self.path.exists():
                return []
            with sqlite3.connect(self.path, timeout=30) as c:
                return [tuple(str(x) for x in row) for row in c.execute(sql)]
        out = self.pg.psql(sql, db=self.name)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def count(self):
        try:
            return int(self.rows("SELECT count(*) FROM im_archive")[0][0])
        except (AssertionError, sqlite3.OperationalError):
            return 0  # no table yet

    def duplicates(self):
        return self.rows("SELECT user_key, seq FROM im_archive GROUP BY user_key, seq HAVING count(*) > 1")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    return Database(request.param, tmp_path, request)


# ---------------------------------------------------------------- the program

class Archiver:
    def __init__(self, dir):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs = []

    def run(self, *args, timeout=300, check=True):
        r = subprocess.run([str(ARCHIVER), *map(str, args)], cwd=self.dir, capture_output=True,
                           timeout=timeout, preexec_fn=_die_with_parent)
        if check:
            assert r.returncode == 0, f"im-archiver {args} exited {r.returncode}:\n{r.stderr.decode(errors='replace')[-4000:]}"
        return r

    def start(self, *args, name="run"):
        log = self.dir / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen([str(ARCHIVER), *map(str, args)], cwd=self.dir, stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        p.logfile = log
        self.procs.append(p)
        return p

    @staticmethod
    def log(p):
        return p.logfile.read_text(errors="replace")

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def archiver(tmp_path):
    a = Archiver(tmp_path / "archiver")
    yield a
    a.stop_all()


def url(server):
    return f"redis://127.0.0.1:{server.port}"


# ---------------------------------------------------------------- helpers

RETENTION_ARGS = {"retention": 1000, "archive": "yes", "sweep-interval": 20}


def store_many(r, users, per_user, offline_device=None):
    """per_user messages for each user, pipelined; with offline_device, the
    device is registered and offline first, so that each message is owed to
    it. Returns {(user, seq): (id, ts-range)} as stored."""
    stored = {}
    if offline_device:
        p = r.pipeline(transaction=False)
        for u in users:
            p.execute_command("IM.CONNECT", u, offline_device, "NODE", "n1")
            p.execute_command("IM.DISCONNECT", u, offline_device)
        p.execute()
    before = int(time.time() * 1000)
    for start in range(0, len(users), 50):
        p = r.pipeline(transaction=False)
        chunk = users[start:start + 50]
        for u in chunk:
            for i in range(per_user):
                mid = f"{u}-m{i}"
                p.execute_command("IM.STORE", u, message(mid, body=f"hello {i}"), "FORCE")
        replies = p.execute()
        k = 0
        for u in chunk:
            for i in range(per_user):
                seq, mid = replies[k][0], replies[k][1]
                stored[(u, seq)] = mid.decode()
                k += 1
    return stored, before


def wait_all_queued(r, users, timeout=120):
    """Until retention has put every message of these users in the archive
    queue (IM.INFO: all `messages` are `queued`)."""
    def empty():
        p = r.pipeline(transaction=False)
        for u in users:
            p.execute_command("IM.INFO", u)
        infos = [as_map(x) for x in p.execute()]
        return all(i["messages"] == i["queued"] > 0 for i in infos)

    wait_for(empty, timeout=timeout, interval=0.1, what="retention to queue every message")


def queue_is_empty(client):
    """Pulls with a 1 ms lease: an empty reply means nothing is queued (what
    a non-empty reply leased comes back at once)."""
    return client.execute_command("IM.ARCHIVE.PULL", "COUNT", 1, "LEASE", 1) == []


# ---------------------------------------------------------------- 4. volume and crash

def test_schema_command(archiver):
    sqlite_schema = archiver.run("schema").stdout.decode()
    assert "CREATE TABLE IF NOT EXISTS im_archive" in sqlite_schema and "BLOB" in sqlite_schema
    assert "PRIMARY KEY (user_key, seq)" in sqlite_schema and "im_archive_user_ts" in sqlite_schema
    pg_schema = archiver.run("schema", "--db", "postgres://h/db").stdout.decode()
    assert "BYTEA" in pg_schema and "JSONB" in pg_schema and "PRIMARY KEY (user_key, seq)" in pg_schema
    # The printed schema is the one the program creates.
    db = archiver.dir / "fresh.sqlite3"
    with sqlite3.connect(db) as c:
        c.executescript(sqlite_schema)
    archiver.run("history", "nobody", "--db", db)
    bad = archiver.run("schema", "--db", "mysql://h/db", check=False)
    assert bad.returncode != 0 and b"unknown database URL scheme" in bad.stderr


def test_ten_thousand_messages(make_server, database, archiver):
    server = make_server(module_args=RETENTION_ARGS)
    require_archive_commands(server)
    r = server.client()
    users = [f"user{i}@example.com" for i in range(500)]
    stored, _ = store_many(r, users, 20, offline_device="phone")
    assert len(stored) == 10_000
    wait_all_queued(r, users)

    started = time.monotonic()
    out = archiver.run("run", "--once", "--no-restore", "--redis", url(server), "--db", database.url)
    elapsed = time.monotonic() - started
    print(f"\n{database.kind}: 10,000 messages archived in {elapsed:.2f}s")
    assert database.count() == 10_000
    assert database.duplicates() == []
    assert queue_is_empty(r)
    log = out.stderr.decode()
    assert "batch archived" in log and "status:" in log
    # The rows are the stored messages: user, seq, id; owed to the phone.
    rows = database.rows("SELECT user_key, seq, id, devices FROM im_archive")
    as_text = {(bytes_of(u, database.kind).decode(), int(s)): bytes_of(i, database.kind).decode() for u, s, i, _ in rows}
    assert as_text == stored
    assert all(json.loads(d) == ["phone"] for _, _, _, d in rows)
    # Running again finds nothing and changes nothing.
    archiver.run("run", "--once", "--no-restore", "--redis", url(server), "--db", database.url)
    assert database.count() == 10_000


def bytes_of(value, kind):
    """A BLOB as sqlite3 hands it (str() of bytes) or a BYTEA as psql prints it."""
    if kind == "sqlite":
        return eval(value)  # noqa: S307 - str() of a bytes object from our own query
    assert value.startswith("\\x"), value
    return bytes.fromhex(value[2:])


def test_killed_mid_run(make_server, database, archiver):
    server = make_server(module_args=RETENTION_ARGS)
    require_archive_commands(server)
    r = server.client()
    users = [f"user{i}@example.com" for i in range(500)]
    store_many(r, users, 20)
    wait_all_queued(r, users)

    lease_ms = 2000
    p = archiver.start("run", "--no-restore", "--batch", 20, "--lease", lease_ms,
                       "--redis", url(server), "--db", database.url)
    wait_for(lambda: Archiver.log(p).count("batch archived") >= 10, timeout=60, interval=0.005,
             what="ten batches archived")
    p.send_signal(signal.SIGKILL)
    p.wait()
    at_kill = database.count()
    assert 0 < at_kill < 10_000, f"{at_kill} rows when killed: not in the middle of the run"
    # The batch it had pulled comes out again once its lease has run out.
    time.sleep(lease_ms / 1000 + 0.5)
    archiver.run("run", "--once", "--no-restore", "--redis", url(server), "--db", database.url)
    assert database.count() == 10_000
    assert database.duplicates() == []
    assert queue_is_empty(r)


# ---------------------------------------------------------------- 5. restore

def page_all(r, user, device, count=7):
    out, after = [], 0
    while True:
        cursor, page = r.execute_command("IM.OFFLINE.PAGE", user, device, "AFTER", after, "COUNT", count)
        out += page
        if cursor == 0:
            return out
        after = cursor


def test_restore_brings_messages_back(make_server, archiver, tmp_path):
    server = make_server(module_args=RETENTION_ARGS)
    require_archive_commands(server)
    r = server.client()
    odd = b"\xff\x00odd@example.com"
    users = ["alice@example.com", odd]
    r.execute_command("IM.CONNECT", "alice@example.com", "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", "alice@example.com", "phone")
    r.execute_command("IM.CONNECT", odd, "phone", "NODE", "n1")
    r.execute_command("IM.DISCONNECT", odd, "phone")
    originals = {}
    for u in users:
        for i in range(30):
            seq, mid, _ = r.execute_command("IM.STORE", u, message(f"m{i}", body=f"b{i}"))
            originals.setdefault(u, []).append((seq, mid))
    stored = {u: [(seq, mid) for seq, mid in v] for u, v in originals.items()}
    # The pages a device gets before the messages leave: seq, id, ts, stanza.
    before = {u: page_all(r, u, "phone") for u in users}
    assert [(m[0], m[1]) for m in before["alice@example.com"]] == stored["alice@example.com"]
    wait_all_queued(r, users)
    db = tmp_path / "a.sqlite3"
    archiver.run("run", "--once", "--no-restore", "--redis", url(server), "--db", db)
    assert page_all(r, "alice@example.com", "phone") == []
    assert as_map(r.execute_command("IM.INFO", "alice@example.com"))["messages"] == 0

    # (Restored messages get a fresh retention window; the test keeps them.)
    r.config_set("im.retention", 0)
    out = archiver.run("restore", "alice@example.com", "--redis", url(server), "--db", db)
    assert out.stdout.strip() == b"30"
    out = archiver.run("restore", "--base64", base64.b64encode(odd).decode(), "--redis", url(server), "--db", db)
    assert out.stdout.strip() == b"30"
    for u in users:
        # In seq order, with their seqs, ids, times and stanzas.
        assert page_all(r, u, "phone") == before[u]
        assert as_map(r.execute_command("IM.INFO", u))["messages"] == 30
    # Again, and with --all: nothing twice.
    out = archiver.run("restore", "alice@example.com", "--redis", url(server), "--db", db)
    assert out.stdout.strip() == b"0"
    archiver.run("restore", "alice@example.com", "--all", "--redis", url(server), "--db", db)
    assert page_all(r, "alice@example.com", "phone") == before["alice@example.com"]

    # History for support staff, in time order, text and JSON.
    lines = archiver.run("history", "alice@example.com", "--db", db, "--json").stdout.decode().splitlines()
    hist = [json.loads(x) for x in lines]
    assert [(h["seq"], h["id"].encode()) for h in hist] == stored["alice@example.com"]
    assert [h["ts"] for h in hist] == [m[2] for m in before["alice@example.com"]]
    assert all(h["devices"] == ["phone"] and h["restored_at"] for h in hist)
    since = hist[5]["ts"]
    some = archiver.run("history", "alice@example.com", "--db", db, "--since", since, "--limit", 3)
    text = some.stdout.decode().splitlines()
    want = [h for h in hist if h["ts"] >= since][:3]
    assert [line.split()[2] for line in text] == [f"seq={h['seq']}" for h in want]
    assert all(f"id={h['id']}" in line and f"ts={h['ts']}" in line for h, line in zip(want, text))
    odd_hist = archiver.run("history", "--base64", base64.b64encode(odd).decode(), "--db", db, "--json")
    assert json.loads(odd_hist.stdout.decode().splitlines()[0])["user_base64"] == base64.b64encode(odd).decode()


# ---------------------------------------------------------------- 6. cluster

def test_cluster_every_primary_drained(make_server, archiver, tmp_path):
    nodes = make_cluster(make_server, 3, module_args={"sweep-interval": 0}).primaries
    require_archive_commands(nodes[0])
    for s in nodes:
        c = s.client()
        c.config_set("im.retention", 500)
        c.config_set("im.archive", "yes")
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", nodes[0].port)])
    users = [f"user{i}@example.com" for i in range(60)]
    for u in users:
        for i in range(10):
            rc.execute_command("IM.STORE", u, message(f"m{i}"), "FORCE")
    time.sleep(0.6)
    # The timer is off (sweep-interval 0): each primary's sweep queues its
    # own users' messages.
    queued = {}
    for s in nodes:
        c = s.client()
        total = 0
        while True:
            done = as_map(c.execute_command("IM.SWEEP"))["archived"]
            total += done
            if done == 0:
                break
        queued[s.port] = total
    assert sum(queued.values()) == 600 and all(queued.values()), queued

    db = tmp_path / "c.sqlite3"
    out = archiver.run("run", "--once", "--no-restore", "--redis", url(nodes[1]), "--db", db)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM im_archive").fetchone()[0] == 600
        assert c.execute("SELECT count(DISTINCT user_key) FROM im_archive").fetchone()[0] == 60
    for s in nodes:
        assert queue_is_empty(s.client()), s.port
    log = out.stderr.decode()
    assert all(f"127.0.0.1:{s.port}" in log for s in nodes), log[-3000:]

    # Restore in the cluster: IM.IMPORT goes to each user's slot.
    for s in nodes:
        s.client().config_set("im.retention", 0)
    archiver.run("restore", users[0], "--redis", url(nodes[2]), "--db", db)
    owner = rc.get_node_from_key(users[0]).port
    c = next(s for s in nodes if s.port == owner).client()
    assert as_map(c.execute_command("IM.INFO", users[0]))["messages"] == 10


# ---------------------------------------------------------------- 7. eviction and return

def test_evicted_user_comes_back(make_server, archiver, tmp_path):
    server = make_server(module_args={"mailbox-idle": 1500, "retention": 0, "archive": "yes", "sweep-interval": 20})
    require_archive_commands(server)
    r = server.client()
    users = ["bob@example.com", b"\xfe\xffbin@example.com"]
    before = {}
    for u in users:
        r.execute_command("IM.CONNECT", u, "phone", "NODE", "n1")
        r.execute_command("IM.DISCONNECT", u, "phone")
        for i in range(50):
            r.execute_command("IM.STORE", u, message(f"e{i}", body=f"evicted {i}"))
        before[u] = page_all(r, u, "phone")
        assert len(before[u]) == 50
    db = tmp_path / "e.sqlite3"
    p = archiver.start("run", "--redis", url(server), "--db", db, "--status-interval", 1)
    wait_for(lambda: "listening for restore requests" in Archiver.log(p), timeout=30, what="the archiver to subscribe")

    def archived():
        if not db.exists():
            return False
        with sqlite3.connect(db, timeout=30) as c:
            return c.execute("SELECT count(*) FROM im_archive").fetchone()[0] == 100

    wait_for(archived, timeout=60, interval=0.1, what="both mailboxes evicted and archived")
    assert queue_is_empty(r)
    for u in users:
        reply = as_map(r.execute_command("IM.CONNECT", u, "phone", "NODE", "n2"))
        assert reply.get("archived") == 50, reply

    def restored(u):
        def check():
            page = page_all(r, u, "phone")
            return page if len(page) >= 50 else None
        return check

    for u in users:
        page = wait_for(restored(u), timeout=20, interval=0.1, what=f"{u!r} restored")
        assert page == before[u], "in order, with their seqs, ids, times and stanzas, none twice"
    # SIGTERM: a clean stop.
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    log = Archiver.log(p)
    assert "user restored" in log and "archiver stopped" in log


# ------------------------------------------- retention, eviction, archiver

def test_retention_eviction_and_the_archiver_together_keep_the_budget(make_server, archiver, tmp_path):
    """100,000 messages in 1,000 mailboxes leave for the archive at once
    while the archiver runs: half of the mailboxes hold messages already
    past `retention` (put back by IM.IMPORT with an old time), the other
    half fall idle and are evicted to tombstones. The archiver writes and
    acks every message, and no timer run is longer than `sweep-budget` and
    one visit (a visit is never cut; SPEC §5)."""
    budget = 1000
    server = make_server(module_args={"retention": 60_000, "archive": "yes", "mailbox-idle": 3000,
                                      "sweep-interval": 10, "sweep-budget": budget})
    require_archive_commands(server)
    r = server.client()
    load = r.register_script("""
    for i = 1, tonumber(ARGV[2]) do
      for j = 1, tonumber(ARGV[3]) do
        if ARGV[5] == 'store' then
          redis.call('IM.STORE', ARGV[1] .. i, ARGV[4])
        else
          redis.call('IM.IMPORT', ARGV[1] .. i, ARGV[5], 'm' .. j, ARGV[4])
        end
      end
    end
    return 1
    """)
    stanza = message(None, body="x" * 40)
    old = int(time.time() * 1000) - 120_000
    load(args=["aged:", 500, 100, stanza, old])
    load(args=["idle:", 500, 100, stanza, "store"])
    db = tmp_path / "together.sqlite3"
    archiver.start("run", "--redis", url(server), "--db", db)

    def rows():
        if not db.exists():
            return 0
        with sqlite3.connect(db, timeout=30) as c:
            try:
                return c.execute("SELECT count(*) FROM im_archive").fetchone()[0]
            except sqlite3.OperationalError:  # the table is not there yet
                return 0

    wait_for(lambda: rows() == 100_000, timeout=180, interval=0.5, what="100,000 rows archived")
    wait_for(lambda: queue_is_empty(r), timeout=30, what="the queue acked")
    info = r.info("im")
    print({k: info[k] for k in ("im_archived", "im_archive_queued", "im_evicted", "im_mailboxes")})
    # Every idle mailbox is evicted; an aged one too when it fell idle
    # before the archiver emptied it.
    assert 500 <= info["im_evicted"] <= 1000, info
    assert info["im_messages"] == 0, info
    assert info["im_lost_evicted_messages"] == 0 and info["im_lost_expired_messages"] == 0, info
    assert as_map(r.execute_command("IM.INFO", "idle:7"))["messages"] == 0
    with sqlite3.connect(db, timeout=30) as c:
        assert c.execute("SELECT count(DISTINCT user_key) FROM im_archive").fetchone()[0] == 1000
    longest, cpu, visit = (info["im_sweep_longest_us"], info["im_sweep_longest_cpu_us"],
                           info["im_sweep_longest_visit_us"])
    print(f"longest timer run {longest} µs = {longest / budget:.2f}× the budget ({cpu} µs of CPU), "
          f"longest visit {visit} µs, {info['im_sweep_runs']} runs")
    # On the run's CPU time: the archiver, the server and the test share
    # two cores here, and a run preempted between two visits would count
    # time it did not spend.
    assert cpu <= budget + visit + 100, info
