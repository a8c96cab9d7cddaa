"""Runs Redis with the redis-im module and Prosody (Debian's package) on
free loopback ports in temporary directories, and drives them with slixmpp
clients. Used by the end-to-end tests and by bench.py."""

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import slixmpp

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent  # integrations/prosody
REPO = INTEGRATION.parent.parent
HOST = "localhost"


def jid(user):
    return f"{user}@{HOST}"


def key(user):
    """The user's mailbox key in Redis."""
    return jid(user).encode()


def run(coro, timeout=60):
    """Runs a test's coroutine to the end, within timeout seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


_names = itertools.count(1)


def fresh_users(stack, *prefixes):
    """Registers fresh users with these prefixes on the stack's Prosody
    (a number common to them makes them new) and returns their names."""
    n = next(_names)
    names = [f"{p}{n}" for p in prefixes]
    stack.prosody.register(names)
    return names


@contextlib.asynccontextmanager
async def clients():
    """Yields a list; clients appended to it are disconnected at the end."""
    made = []
    try:
        yield made
    finally:
        for c in made:
            if c.is_connected():
                with contextlib.suppress(Exception):
                    await c.offline(timeout=5)


async def online(made, client):
    """Connects the client and appends it to made (the list from clients())."""
    c = await client.online()
    made.append(c)
    return c


def module_path():
    return os.environ.get("IM_MODULE", str(REPO / "target" / "release" / "libredis_im.so"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_port(port, timeout=10.0, proc=None):
    def up():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    wait_until(up, timeout, what=f"port {port}")


def as_map(r):
    """A map reply as a dict with str keys (redis-py may or may not have
    made the dict already)."""
    if isinstance(r, dict):
        items = r.items()
    else:
        items = zip(r[0::2], r[1::2])
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in items}


class RedisServer:
    """redis-server with the module; settings are module settings
    (name, value pairs after the module path)."""

    def __init__(self, workdir, settings=None, appendonly=False, tls=None, password=None):
        """tls: (cert, key, ca) files: the port is then a TLS port."""
        self.dir = Path(workdir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.settings = settings or {}
        self.appendonly = appendonly
        self.tls = tls
        self.password = password
        self.proc = None

    def start(self):
        if self.tls:
            cert, key, ca = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                      "--tls-auth-clients", "no"]
            client_kw = {"ssl": True, "ssl_ca_certs": str(ca)}
        else:
            listen = ["--port", str(self.port)]
            client_kw = {}
        if self.password:
            listen += ["--requirepass", self.password]
            client_kw["password"] = self.password
        args = ["redis-server", *listen, "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--logfile", str(self.dir / "redis.log"),
                "--loadmodule", module_path()]
        for k, v in self.settings.items():
            args += [k, str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        self.client = redis.Redis(port=self.port, decode_responses=False, **client_kw)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def info(self, user):
        return as_map(self.client.execute_command("IM.INFO", user))

    def devices(self, user):
        out = []
        for d in self.client.execute_command("IM.DEVICES", user):
            m = as_map(d)
            m["device"] = m["device"].decode()
            out.append(m)
        return out

    def log(self):
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""


CONFIG = """\
-- Written by integrations/prosody/test/harness.py
daemonize = false
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {level} = "{dir}/prosody.log" }}
plugin_paths = {{ "{plugins}", "{test_plugins}" }}
modules_enabled = {{ {modules} }}
modules_disabled = {{ {disabled} }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
smacks_hibernation_time = {hibernation}
network_settings = {{ read_timeout = {read_timeout}; nagle = {nagle}; }}
limits = {{ c2s = {{ rate = "100mb/s" }} }}
{extra_global}
VirtualHost "{host}"
{vhost}
"""


class ProsodyServer:
    def __init__(self, workdir, redis_port=None, redis_im=True, vhost_options=None,
                 hibernation=3, read_timeout=840, extra_modules=(), debug_log=None, nagle=True,
                 probe=False):
        self.dir = Path(workdir) / "prosody"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.redis_port = redis_port
        self.redis_im = redis_im
        self.proc = None
        if debug_log is None:
            debug_log = bool(os.environ.get("PROSODY_DEBUG_LOG"))
        modules = ["roster", "saslauth", "disco", "ping", "smacks", "carbons", "register"] + list(extra_modules)
        disabled = []
        vhost = dict(vhost_options or {})
        if redis_im:
            modules.append("redis_im")
            if probe:
                modules.append("redis_im_probe")  # test/plugins/
            disabled.append("offline")
            vhost.setdefault("im_redis_port", redis_port)
            vhost.setdefault("im_redis_reconnect_max", 0.5)
        vhost_lines = "\n".join(f"    {k} = {lua(v)}" for k, v in vhost.items())
        self.config_path = self.dir / "prosody.cfg.lua"
        self.config_path.write_text(CONFIG.format(
            dir=self.dir, level="debug" if debug_log else "info", plugins=INTEGRATION,
            test_plugins=HERE / "plugins",
            modules=", ".join(f'"{m}"' for m in modules),
            disabled=", ".join(f'"{m}"' for m in disabled),
            port=self.port, hibernation=hibernation, read_timeout=read_timeout,
            nagle="true" if nagle else "false",
            extra_global="", host=HOST, vhost=vhost_lines))

    def register(self, users, password="pw"):
        """Writes the accounts (internal_plain's files) directly: one
        prosodyctl call per user costs a fraction of a second."""
        acc = self.dir / "data" / HOST.replace(".", "%2e") / "accounts"
        acc.mkdir(parents=True, exist_ok=True)
        for u in users:
            (acc / f"{u}.dat").write_text(f'return {{\n\t["password"] = "{password}";\n}};\n')

    def prosodyctl_register(self, user, password="pw"):
        subprocess.run(["prosodyctl", "--config", str(self.config_path), "register", user, HOST, password],
                       check=True, capture_output=True, timeout=30)

    def start(self):
        self.logfile = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(["prosody", "--config", str(self.config_path), "-F"],
                                     stdout=self.logfile, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, timeout=20, proc=self.proc)
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logfile", None):
            self.logfile.close()
            self.logfile = None

    def kill(self):
        self.stop(signal.SIGKILL)

    def log(self):
        try:
            return (self.dir / "prosody.log").read_text(errors="replace")
        except OSError:
            return ""

    def errors(self):
        """Lines of the log at level error (Lua tracebacks included)."""
        return [l for l in self.log().splitlines() if "\terror\t" in l]


def make_tls_files(directory, name="localhost"):
    """A CA and a certificate for name signed by it: (cert, key, ca)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
         "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    ossl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
         "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(d / "server.crt"))
    return d / "server.crt", d / "server.key", d / "ca.crt"


def lua(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + "; ".join(f"{k} = {lua(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua(x) for x in v) + " }"
    raise TypeError(v)


class Received:
    def __init__(self, msg, t):
        self.id = msg["id"]
        self.body = msg["body"]
        self.sender = str(msg["from"])
        self.xml = str(msg)
        self.delays = len(msg.xml.findall("{urn:xmpp:delay}delay"))
        self.chatstate = msg.xml.find("{http://jabber.org/protocol/chatstates}composing") is not None
        self.t = t


class Client(slixmpp.ClientXMPP):
    """A slixmpp client on plain TCP that records the messages it gets.

    sm: enable XEP-0198 stream management; ack: answer the server's <r>
    (False: a client that has stopped acking); receipts: send XEP-0184
    receipts for messages that ask for them."""

    def __init__(self, user, port, resource="phone", password="pw", sm=True, receipts=False):
        super().__init__(f"{user}@{HOST}/{resource}", password)
        self.port = port
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0203")
        if sm:
            self.register_plugin("xep_0198")
            # Answer every <r> and ask for acks often (the defaults would
            # not matter to the server, which asks itself).
            self.plugin["xep_0198"].window = 1
        if receipts:
            self.register_plugin("xep_0184")
            self.plugin["xep_0184"].auto_ack = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.received = []
        self.errors = []
        self.started = asyncio.Event()
        self.resumed = asyncio.Event()
        self.ended = asyncio.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        # The server reflects the initial presence once it has processed it.
        self.available = asyncio.Event()
        self.add_event_handler("presence_available", self._presence)
        # Every message stanza (slixmpp's "message" event wants a body).
        self.register_handler(slixmpp.Callback(
            "every message", slixmpp.xmlstream.matcher.MatchXPath("{jabber:client}message"),
            self._message))
        self.add_event_handler("disconnected", lambda _: self.ended.set())
        self.add_event_handler("connection_failed", lambda _: self.ended.set())

    def _presence(self, p):
        if p["from"] == self.boundjid:
            self.available.set()

    async def _start(self, _):
        self.send_presence()
        self.started.set()

    def _message(self, msg):
        if msg["type"] == "error":
            self.errors.append(msg)
        elif msg["type"] in ("chat", "normal") and (msg["body"] or msg.xml.find(
                "{http://jabber.org/protocol/chatstates}composing") is not None):
            self.received.append(Received(msg, time.monotonic()))

    def stop_acking(self):
        """From now on the client ignores the server's ack requests (a
        client whose link died without the TCP connection noticing)."""
        self.remove_handler("Stream Management Request Ack")

    def resume_acking(self):
        self.register_handler(slixmpp.Callback(
            "Stream Management Request Ack",
            slixmpp.xmlstream.matcher.MatchXPath("{urn:xmpp:sm:3}r"),
            self.plugin["xep_0198"]._handle_request_ack, instream=True))

    def drop(self):
        """Loses the connection without closing the stream (XEP-0198
        hibernation on the server)."""
        self.abort()

    async def resume(self, timeout=10):
        """Connects again, resuming the stream."""
        self.ended.clear()
        self.resumed.clear()
        self.connect(host="127.0.0.1", port=self.port)
        await asyncio.wait_for(self.resumed.wait(), timeout)
        return self

    async def online(self, timeout=10):
        """Connects, sends the initial presence and waits until the server
        has processed it."""
        self.ended.clear()
        self.started.clear()
        self.available.clear()
        self.connect(host="127.0.0.1", port=self.port)
        await asyncio.wait_for(self.started.wait(), timeout)
        await asyncio.wait_for(self.available.wait(), timeout)
        return self

    async def offline(self, timeout=10):
        self.disconnect()
        await asyncio.wait_for(self.ended.wait(), timeout)

    def bodies(self):
        return [m.body for m in self.received]

    def send_chat(self, to, body, mid=None, state=None):
        m = self.make_message(mto=to, mbody=body, mtype="chat")
        if mid:
            m["id"] = mid
        if state:
            m.append(slixmpp.xmlstream.ET.Element(f"{{http://jabber.org/protocol/chatstates}}{state}"))
        m.send()
        return m


def quiet_slixmpp():
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class Stack:
    """Redis (with the module) and Prosody (with mod_redis_im) in one
    temporary directory; stock=True gives Prosody with mod_offline and
    no Redis."""

    def __init__(self, settings=None, stock=False, vhost_options=None, redis_kw=None, **prosody_kw):
        self.tmp = tempfile.mkdtemp(prefix="im-prosody-")
        self.stock = stock
        self.allowed_errors = []  # substrings of error lines the test expects
        self.redis = None
        if not stock:
            s = {"ack-timeout": 3000, "resend-interval": 0, "sweep-interval": 50}
            s.update(settings or {})
            self.redis = RedisServer(self.tmp, s, **(redis_kw or {})).start()
        self.prosody = ProsodyServer(self.tmp, redis_port=self.redis.port if self.redis else None,
                                     redis_im=not stock, vhost_options=vhost_options, **prosody_kw)

    def start(self, users=("alice", "bob", "carol")):
        self.prosody.register(users)
        self.prosody.start()
        return self

    def client(self, user, resource="phone", **kw):
        return Client(user, self.prosody.port, resource=resource, **kw)

    def restart_prosody(self, sig=signal.SIGKILL):
        self.prosody.stop(sig)
        self.prosody.start()

    def close(self, keep=False):
        self.prosody.stop()
        if self.redis:
            self.redis.stop()
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
