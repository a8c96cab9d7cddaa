"""Small helpers shared by the integration tests: reply normalisation, a raw
RESP client that keeps error replies exactly as the server sent them, stanza
builders and polling with a deadline."""

import json
import socket
import time

import redis

# Field names, in the order SPEC.md lists them.
OFFLINE_INFO_FIELDS = ["count", "bytes", "first", "last"]
DEVICE_FIELDS = ["device", "online", "node", "last_seen", "pending", "offline"]
INFO_FIELDS = ["messages", "bytes", "devices", "online", "pending", "first", "last", "next_seq", "queued"]

CHATSTATES = "http://jabber.org/protocol/chatstates"
HINTS = "urn:xmpp:hints"


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def as_map(reply):
    """A map reply as a dict with str keys, whether it came as a RESP3 map
    (a dict from redis-py) or as a RESP2 flat array of field, value."""
    if isinstance(reply, dict):
        return {text(k): v for k, v in reply.items()}
    assert isinstance(reply, list), f"not a map reply: {reply!r}"
    assert len(reply) % 2 == 0, f"map reply with an odd number of items: {reply!r}"
    keys = [text(k) for k in reply[0::2]]
    assert len(set(keys)) == len(keys), f"repeated field in {reply!r}"
    return dict(zip(keys, reply[1::2]))


def map_fields(reply):
    """The field names of a map reply, in the order the server sent them."""
    return list(as_map(reply).keys())


def assert_map_shape(reply, protocol, fields):
    """The raw shape: a RESP3 map, or in RESP2 a flat array of
    bulk-string field names each followed by its value; fields in SPEC order."""
    if protocol == 3:
        assert isinstance(reply, dict), f"RESP3 reply should be a map: {reply!r}"
    else:
        assert isinstance(reply, list), f"RESP2 reply should be a flat array: {reply!r}"
        assert all(isinstance(k, bytes) for k in reply[0::2]), reply
    assert map_fields(reply) == fields, f"fields {map_fields(reply)} != {fields}"


def now_ms():
    return int(time.time() * 1000)


def wait_for(cond, timeout=10.0, interval=0.01, what="condition"):
    """Poll cond() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # the server may still be starting
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------- stanzas

def message(id=None, body="hello", type="chat", to="alice@example.com", extra="", attrs=""):
    """A <message/> stanza as bytes. id=None leaves the id attribute out,
    type=None the type attribute, body=None the <body/>."""
    a = f" to='{to}' from='bob@example.com/pc'"
    if id is not None:
        a += f" id='{id}'"
    if type is not None:
        a += f" type='{type}'"
    inner = "" if body is None else f"<body>{body}</body>"
    return f"<message{a}{attrs}>{inner}{extra}</message>".encode()


def chat_state(id, state="composing", body=None):
    return message(id, body=body, extra=f"<{state} xmlns='{CHATSTATES}'/>")


# ---------------------------------------------------------------- raw RESP

class RawError(Exception):
    """An error reply, with its text exactly as sent (including ERR, ...)."""


class RawClient:
    """A minimal RESP2/RESP3 client: enough to see error replies verbatim
    (redis-py strips the ERR prefix) and the exact reply types."""

    def __init__(self, port, protocol=2, host="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if protocol == 3:
            self.call("HELLO", "3")

    def close(self):
        self.sock.close()

    def call(self, *args, internal_error_expected=False):
        """Send a command; return the reply, or the RawError for an error
        reply. An "internal error" (a panic answered) fails the test unless
        the test causes it on purpose."""
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, int):
                a = str(a)
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        reply = self._read()
        # An "internal error" is a panic answered: never a good answer.
        assert internal_error_expected or not (
            isinstance(reply, RawError) and "internal error" in str(reply).lower()), \
            f"{args!r} answered {reply}"
        return reply

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RawError(rest.decode(errors="replace"))
        if t == b"!":
            return RawError(self._exact(int(rest)).decode(errors="replace"))
        if t in (b":", b"("):
            return int(rest)
        if t == b",":
            return float(rest)
        if t == b"#":
            return rest == b"t"
        if t == b"_":
            return None
        if t in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        if t == b"%":
            n = int(rest)
            return {self._read(): self._read() for _ in range(n)}
        if t == b"|":  # attribute: skip it, return the value it annotates
            n = int(rest)
            for _ in range(2 * n):
                self._read()
            return self._read()
        raise ValueError(f"unknown RESP type {line!r}")


# ---------------------------------------------------------------- server checks

def expect_error(rawclient, *args):
    """Run a command that must fail; return the error text as sent."""
    reply = rawclient.call(*args)
    assert isinstance(reply, RawError), f"{args!r} should fail, replied {reply!r}"
    assert "internal error" not in str(reply).lower(), f"{args!r}: {reply}"
    return str(reply)


def digest(r, key):
    """DEBUG DIGEST-VALUE of one key, as a hex str."""
    reply = r.execute_command("DEBUG", "DIGEST-VALUE", key)
    if isinstance(reply, list):
        reply = reply[0]
    return reply.decode() if isinstance(reply, bytes) else reply


def all_keys(r):
    return sorted(r.scan_iter(count=1000))


def wait_replica_synced(primary, replica, timeout=30):
    """Until the replica's processed offset equals the primary's."""
    p, rp = primary.client(), replica.client()

    def synced():
        off = p.info("replication")["master_repl_offset"]
        info = rp.info("replication")
        if info.get("master_link_status") != "up":
            return False
        roff = info.get("slave_repl_offset", info.get("replica_repl_offset"))
        return roff == off and p.info("replication")["master_repl_offset"] == off

    wait_for(synced, timeout=timeout, what="replica offset to match the primary's")


def assert_digests_equal(primary, replica, keys):
    """Once the replica caught up, each key's DEBUG DIGEST-VALUE is the
    same on both."""
    wait_replica_synced(primary, replica)
    p, r = primary.client(), replica.client()
    for k in keys:
        assert digest(p, k) == digest(r, k), k


# ---------------------------------------------------------------- mixed traffic

class Workload:
    """Random, valid IM.* traffic over many users, sent in pipelines. It keeps
    a rough model (ids and seqs stored, devices it believes online) so that
    acks name real messages and DEVICES names live sessions. Deterministic
    for a given seed."""

    DEVICES = ["phone", "laptop", "tablet", "watch"]
    KINDS = [  # (weight, type, extra child, FORCE)
        (70, "chat", "", False),
        (8, None, "", False),
        (5, "groupchat", "", False),
        (4, "headline", "", False),
        (4, "chat", f"<composing xmlns='{CHATSTATES}'/>", False),
        (3, "chat", f"<no-store xmlns='{HINTS}'/>", False),
        (3, "groupchat", f"<store xmlns='{HINTS}'/>", False),
        (3, "headline", "", True),
    ]

    def __init__(self, users, seed=1, use_devices_option=True, deletes=True):
        import random

        self.rng = random.Random(seed)
        self.users = list(users)
        self.stored = {u: [] for u in self.users}   # (seq, id) per user
        self.online = {u: set() for u in self.users}
        self.n = 0
        self.use_devices_option = use_devices_option
        self.deletes = deletes
        self.errors = []       # unexpected error replies: (command, error)
        self.rejected = 0      # allowed error replies (IMFULL)

    def _stanza(self, mid):
        rng = self.rng
        weights = [k[0] for k in self.KINDS]
        _, mtype, extra, force = rng.choices(self.KINDS, weights)[0]
        size = rng.choice([5, 20, 80, 300]) if rng.random() < 0.98 else 6000
        body = None if "composing" in extra else "".join(rng.choice("abcdefgh ") for _ in range(size))
        return message(mid, body=body, type=mtype, extra=extra), force

    def command(self):
        rng, u = self.rng, self.rng.choice(self.users)
        dev = rng.choice(self.DEVICES)
        x = rng.random()
        if x < 0.45:
            self.n += 1
            known = self.stored[u]
            if known and rng.random() < 0.05:
                mid = rng.choice(known)[1].decode()          # a retry: duplicate
            else:
                mid = f"w{self.n}"
            stanza, force = self._stanza(mid)
            args = ["IM.STORE", u, stanza]
            if rng.random() < 0.1:
                args += ["ID", f"opt{self.n}"]
            live = sorted(self.online[u])
            if self.use_devices_option and live and rng.random() < 0.15:
                chosen = rng.sample(live, rng.randint(1, len(live)))
                args += ["DEVICES", len(chosen), *chosen]
            if force:
                args.append("FORCE")
            return args
        if x < 0.57:
            self.online[u].add(dev)
            if rng.random() < 0.5:
                return ["IM.CONNECT", u, dev, "NODE", f"node-{rng.randint(1, 3)}"]
            return ["IM.CONNECT", u, dev]
        if x < 0.65:
            self.online[u].discard(dev)
            return ["IM.DISCONNECT", u, dev]
        if x < 0.78:
            known = self.stored[u]
            ids = [rng.choice(known)[1] for _ in range(rng.randint(1, 4))] if known else [b"none"]
            return ["IM.ACK", u, dev, *ids]
        if x < 0.84:
            known = self.stored[u]
            seq = rng.choice(known)[0] if known else 1
            return ["IM.ACK", u, dev, "UPTO", seq]
        if x < 0.87:
            self.online[u].discard(dev)
            return ["IM.FORGET", u, dev]
        if x < 0.90:
            return ["IM.OFFLINE.PAGE", u, dev, "COUNT", 5]
        if x < 0.93:
            return ["IM.OFFLINE.INFO", u, dev, "IDS", "LIMIT", 3]
        if x < 0.96:
            return ["IM.INFO", u]
        if x < 0.97 and self.deletes:
            self.online[u].clear()
            self.stored[u].clear()
            return ["DEL", u]
        return ["IM.DEVICES", u]

    def run(self, r, n, batch=250, allowed_errors=("IMFULL",)):
        """Send n commands; return the replies. Errors other than those
        allowed are collected in self.errors."""
        out = []
        for start in range(0, n, batch):
            cmds = [self.command() for _ in range(min(batch, n - start))]
            pipe = r.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            replies = pipe.execute(raise_on_error=False)
            for c, rep in zip(cmds, replies):
                if isinstance(rep, Exception):
                    if str(rep).startswith(allowed_errors):
                        self.rejected += 1
                    else:
                        self.errors.append((c[0], str(rep)))
                elif c[0] == "IM.STORE" and rep:
                    self.stored[c[1]].append((rep[0], rep[1]))
            out += replies
        return out


def snapshot(r):
    """Everything observable about the mailboxes: each key's digest, the
    dataset digest, and every mailbox's INFO, DEVICES and offline pages."""
    keys = all_keys(r)
    snap = {"DEBUG DIGEST": r.execute_command("DEBUG", "DIGEST")}
    for k in keys:
        snap[(k, "digest")] = digest(r, k)
        if r.type(k) != b"none" and r.type(k) not in (b"string", b"list", b"set", b"hash", b"zset"):
            snap[(k, "info")] = r.execute_command("IM.INFO", k)
            devs = r.execute_command("IM.DEVICES", k)
            snap[(k, "devices")] = devs
            for d in devs:
                name = as_map(d)["device"]
                snap[(k, name, "page")] = r.execute_command("IM.OFFLINE.PAGE", k, name, "COUNT", 1000)
    return snap


def diff_snapshots(a, b):
    """A short description of how two snapshots differ ('' if equal)."""
    out = []
    for k in sorted(set(a) | set(b), key=repr):
        if a.get(k) != b.get(k):
            out.append(f"{k!r}: {repr(a.get(k))[:200]} != {repr(b.get(k))[:200]}")
    return "\n".join(out[:20])


EVENT_PREFIX = "im:events:"


class Events:
    """A subscriber on the channels of some nodes. Keeps every event it
    received as a dict (the JSON fields, plus `_node`: the node whose channel
    carried it, and `_t`: time.time() at arrival)."""

    def __init__(self, server, *nodes, prefix=EVENT_PREFIX):
        self.prefix = prefix
        self.conn = redis.Redis(port=server.port, socket_timeout=30)
        self.ps = self.conn.pubsub()
        self.channels = channels = [prefix + n for n in nodes]
        self.ps.subscribe(*channels)
        # wait for the confirmations, so that nothing published after this
        # returns can be missed
        confirmed = 0
        deadline = time.monotonic() + 10
        while confirmed < len(channels):
            assert time.monotonic() < deadline, "SUBSCRIBE not confirmed"
            m = self.ps.get_message(timeout=1.0)
            if m and m["type"] == "subscribe":
                confirmed += 1
        self.got = []

    def close(self):
        try:
            self.ps.close()
            self.conn.close()
        except Exception:
            pass

    def _read(self, timeout):
        m = self.ps.get_message(timeout=timeout)
        while m is not None:
            if m["type"] == "message":
                e = json.loads(m["data"])
                channel = m["channel"].decode()
                e["_node"] = channel[len(self.prefix):]
                e["_t"] = time.time()
                self.got.append(e)
            m = self.ps.get_message(timeout=0)

    def mark(self, r):
        """Publishes a marker on the first channel through client `r` and
        reads up to it: answers how many events came before it. Everything
        published after a command `r` ran (on any connection of that server)
        comes after the marker, whenever it is read."""
        self.marks = getattr(self, "marks", 0) + 1
        token = f"mark-{self.marks}"
        r.publish(self.channels[0], json.dumps({"event": "_mark", "token": token}))
        n = len(self.got)
        deadline = time.monotonic() + 10
        while True:
            for i in range(n, len(self.got)):
                if self.got[i].get("token") == token:
                    del self.got[i]
                    return i
            n = len(self.got)
            assert time.monotonic() < deadline, "the marker did not come back"
            self._read(0.05)

    def wait(self, cond, timeout=5.0, what="events"):
        """Read until cond(self.got) is truthy; fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._read(0)
            if cond(self.got):
                return self.got
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.got!r}")
            self._read(min(left, 0.05))

    def watch(self, seconds):
        """Read for `seconds`; answer the events that arrived meanwhile."""
        n = len(self.got)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read(min(left, 0.05))
        self._read(0)
        return self.got[n:]

    def of(self, event=None, user=None, device=None, node=None):
        return [e for e in self.got
                if (event is None or e["event"] == event)
                and (user is None or e.get("user") == user)
                and (device is None or e.get("device") == device)
                and (node is None or e["_node"] == node)]

    def has(self, event, user=None, device=None, n=1):
        return lambda got: len(self.of(event, user, device)) >= n


# The module's codec (src/codec.rs), for payloads no command writes:
# LEB128 varints, zigzag for signed values.
def varint(v):
    """`v` (0 to 2^64 - 1) as an unsigned LEB128 varint."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def zigzag(v):
    """`v` (an i64) zigzag-encoded as a varint, so small negatives stay short."""
    return varint(((v << 1) ^ (v >> 63)) & (2**64 - 1))
