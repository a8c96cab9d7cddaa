"""Every IM.* command that names a user, through each cluster client people
use, while slots move between the primaries (issue 17).

A three-primary cluster; users owned by every primary. Each client calls
the same rounds of commands (below) for every user, as an application
would, with no patch and no workaround:

- redis-py 8.1 `RedisCluster`, sync and asyncio (it refuses a command
  name with two dots: the container spelling `IM.OFFLINE PAGE` is used);
- node-redis `createCluster` (`sendCommand(key, readonly, args)`) and
  ioredis `Cluster` (`call(...)`), from the npm registry;
- redis-rs `ClusterClient` (crates.io), which routes a command it does not
  know by its first argument: for `IM.OFFLINE PAGE user` that is `PAGE`,
  so the call reaches the user's node by a MOVED redirection;
- `redis-cli -c`.

The clients that take both spellings call the dotted one in odd rounds and
the container one in even rounds. While they call: first one slot per
primary is held half-migrated with its user's mailbox already moved (so
the calls meet ASK), then `redis-cli --cluster reshard` moves 150 slots at a time
around the ring of primaries, users' slots among them (MOVED). Every call
must answer what the round expects, and afterwards each mailbox holds
exactly what the replies said: the messages stored and not acked, with
the seqs the replies gave, on the node that owns it and nowhere else.
"""

import asyncio
import json
import subprocess
import threading
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode

from cluster import REDIS_CLI, make_cluster

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
NODE_DRIVER = CLIENTS_DIR / "node" / "driver.mjs"
RUST_DRIVER = CLIENTS_DIR / "rust" / "target" / "release" / "im-cluster-client"
TS = 1_700_000_000_000
MOVED_SLOTS = 150

CLIENTS = ["redis-py", "redis-py-asyncio", "node-redis", "ioredis", "redis-rs", "redis-cli"]
# Clients that take the dotted names (redis-py's cluster client refuses a
# name with more than one dot).
DOTTED_OK = {"node-redis", "ioredis", "redis-rs", "redis-cli"}


def stanza(mid):
    return f"<message to='u@example.com' id='{mid}' type='chat'><body>{mid}</body></message>"


def names(dotted):
    if dotted:
        return {"info": ["IM.OFFLINE.INFO"], "page": ["IM.OFFLINE.PAGE"], "aack": ["IM.ARCHIVE.ACK"]}
    return {"info": ["IM.OFFLINE", "INFO"], "page": ["IM.OFFLINE", "PAGE"], "aack": ["IM.ARCHIVE", "ACK"]}


def plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):  # a RESP3 map: as RESP2's flat array
        return [plain(x) for kv in v.items() for x in kv]
    return v


def as_dict(m):
    """A map reply, as a RESP2 flat array or as a map (node-redis gives an
    object)."""
    if isinstance(m, dict):
        return m
    return dict(zip(m[0::2], m[1::2]))


class Model:
    """What each user's mailbox must hold, from the replies: the seqs of
    the messages stored and not acked (by id), and the round number."""

    def __init__(self, users):
        self.kept = {u: {} for u in users}

    def round_calls(self, u, r, dotted):
        """The calls of round `r` for user `u`, each (args, check)."""
        n = names(dotted)
        kept = self.kept[u]
        got = {}

        def connect_phone(rep):
            assert as_dict(rep)["count"] == len(kept), rep

        def stored(mid, pending):
            def check(rep):
                seq, id_, devices = rep
                assert id_ == mid and devices == pending, rep
                got[mid] = seq
            return check

        def imported(rep):
            seq, id_ = rep
            assert id_ == f"{r}.3" and seq > got[f"{r}.2"] > got[f"{r}.1"], rep
            got[f"{r}.3"] = seq

        def info(rep):
            d = as_dict(rep)
            assert d["count"] == len(kept) + 3 and d["last"] == got[f"{r}.3"], rep

        def page(rep):
            cursor, items = rep
            want = sorted(list(kept.items()) + list(got.items()), key=lambda kv: kv[1])
            assert cursor == 0 and [(i[1], i[0]) for i in items] == want, (rep, want)
            assert all(i[3] == stanza(i[1]) for i in items), rep

        def acked(rep):
            assert rep == 2, rep
            kept[f"{r}.3"] = got[f"{r}.3"]

        def devices(rep):
            assert [as_dict(d)["device"] for d in rep] == ["phone"], rep
            assert as_dict(rep[0])["online"] == 0, rep

        def mailbox_info(rep):
            d = as_dict(rep)
            assert d["messages"] == len(kept) and d["devices"] == 1, rep

        return [
            (["IM.CONNECT", u, "phone", "NODE", "n1"], connect_phone),
            (["IM.STORE", u, stanza(f"{r}.1")], stored(f"{r}.1", ["phone"])),
            (["IM.STORE", u, stanza(f"{r}.2"), "DEVICES", "0"], stored(f"{r}.2", [])),
            (["IM.IMPORT", u, str(TS), f"{r}.3", stanza(f"{r}.3")], imported),
            (["IM.DISCONNECT", u, "phone"], lambda rep: rep == 1 or pytest.fail(rep)),
            (n["info"] + [u, "phone"], info),
            (n["page"] + [u, "phone", "COUNT", "1000"], page),
            (["IM.ACK", u, "phone", f"{r}.1", f"{r}.2"], acked),
            (["IM.DEVICES", u], devices),
            (["IM.INFO", u], mailbox_info),
            (["IM.CONNECT", u, "tablet", "NODE", "n2"], lambda rep: as_dict(rep)["count"] == 0 or pytest.fail(rep)),
            (["IM.FORGET", u, "tablet"], lambda rep: rep == 0 or pytest.fail(rep)),
            (n["aack"] + [u, lambda: str(got[f"{r}.3"])], lambda rep: rep == 0 or pytest.fail(rep)),
        ]


# ------------------------------------------------------------- drivers

class PyDriver:
    def __init__(self, port):
        self.rc = redis.RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)])

    def call(self, key, args):
        try:
            return {"ok": plain(self.rc.execute_command(*args))}
        except redis.exceptions.RedisError as e:
            return {"error": str(e)}

    def close(self):
        self.rc.close()


class PyAsyncDriver:
    def __init__(self, port):
        self.loop = asyncio.new_event_loop()
        self.rc = self.loop.run_until_complete(self._make(port))

    async def _make(self, port):
        rc = AsyncRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)])
        await rc.initialize()
        return rc

    def call(self, key, args):
        try:
            return {"ok": plain(self.loop.run_until_complete(self.rc.execute_command(*args)))}
        except redis.exceptions.RedisError as e:
            return {"error": str(e)}

    def close(self):
        self.loop.run_until_complete(self.rc.aclose())
        self.loop.close()


class ProcDriver:
    """A client program that reads one call per line on its standard input
    and answers one JSON line per call."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, key, args):
        self.p.stdin.write("\t".join([key] + args) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, f"the client program exited ({self.p.poll()})"
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(30)


class CliDriver:
    """`redis-cli -c`, one process per call, started on the first primary."""

    def __init__(self, port):
        self.port = port

    def call(self, key, args):
        p = subprocess.run([REDIS_CLI, "-2", "--json", "-c", "-p", str(self.port), *args],
                           capture_output=True, text=True, timeout=30)
        out = p.stdout.strip()
        if p.returncode != 0 or out.startswith("(error)") or not out:
            return {"error": out + p.stderr}
        # Redirections are printed before the reply in cluster mode.
        return {"ok": json.loads(out.splitlines()[-1])}

    def close(self):
        pass


def make_driver(client, port):
    if client == "redis-py":
        return PyDriver(port)
    if client == "redis-py-asyncio":
        return PyAsyncDriver(port)
    if client in ("node-redis", "ioredis"):
        if not (CLIENTS_DIR / "node" / "node_modules").exists():
            pytest.fail("the Node.js clients are not installed: run scripts/test (npm ci in redis-tests/clients/node)")
        return ProcDriver(["node", str(NODE_DRIVER), client, str(port)])
    if client == "redis-rs":
        if not RUST_DRIVER.exists():
            pytest.fail("the Rust client is not built: run scripts/test (cargo build in redis-tests/clients/rust)")
        return ProcDriver([str(RUST_DRIVER), str(port)])
    return CliDriver(port)


# ------------------------------------------------------------- the test

def open_migration(c, slot, src, dst, key):
    """What `redis-cli --cluster reshard` does for one slot, stopped after
    the key moved: the slot is MIGRATING on `src`, IMPORTING on `dst`, so a
    call for `key` at `src` is answered ASK."""
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", c.node_id(src))
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", c.node_id(dst))
    assert src.client().execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", key) == b"OK"


def close_migration(c, slot, dst):
    for s in c.primaries:
        s.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", c.node_id(dst))


@pytest.mark.parametrize("client", CLIENTS)
def test_every_command_through_a_cluster_client_while_slots_move(make_server, flavor, client):
    if flavor not in ("redis", "valkey9"):
        pytest.skip("cluster clients are tested on Redis 7.0 and Valkey 9.1")
    c = make_cluster(make_server, 3, module_args={"ack-timeout": 600_000, "resend-interval": 0})
    p = c.primaries
    # Users whose slots the reshard moves (the lowest of each primary) and
    # users it leaves where they are, on every primary.
    owners = c.slot_owners()
    # redis-cli moves a source's lowest slots; the order of the moves below
    # keeps each source's lowest slots its own until it moves them.
    lowest = {s.port: sorted(x for x, o in owners.items() if o == s.port)[:MOVED_SLOTS - 50] for s in p}
    moving, staying = [], []
    i = 0
    while len(moving) < 2 * len(p) or len(staying) < 2 * len(p):
        u = f"user{i}@example.com"
        i += 1
        slot = c.keyslot(u)
        group = moving if slot in lowest[owners[slot]] else staying
        if sum(1 for v in group if owners[c.keyslot(v)] == owners[slot]) < 2:
            group.append(u)
    users = moving + staying
    model = Model(users)
    driver = make_driver(client, p[0].port)
    calls = 0
    rounds = [0]

    def run_round(dotted):
        nonlocal calls
        rounds[0] += 1
        r = rounds[0]
        for u in users:
            for args, check in model.round_calls(u, r, dotted):
                args = [a() if callable(a) else a for a in args]
                reply = driver.call(u, args)
                calls += 1
                assert "ok" in reply, (client, args, reply)
                check(reply["ok"])

    def dotted():
        return client in DOTTED_OK and rounds[0] % 2 == 0

    try:
        run_round(dotted())
        moved0, ask0 = c.redirections()
        # ASK: one slot per primary half-migrated to the next primary.
        held = []
        for k, src in enumerate(p):
            u = next(x for x in staying if c.owner(x) is src)
            slot, dst = c.keyslot(u), p[(k - 1) % len(p)]
            open_migration(c, slot, src, dst, u)
            held.append((slot, dst))
        run_round(dotted())
        for slot, dst in held:
            close_migration(c, slot, dst)
        c.wait_converged()
        ask = c.redirections()[1] - ask0
        assert ask >= len(p), f"the calls met {ask} ASK redirections"
        # MOVED: redis-cli --cluster reshard around the ring, while calling.
        done = threading.Event()
        errors = []
        seen = []

        def reshard_ring():
            try:
                for k in reversed(range(len(p))):
                    c.reshard(p[k], p[(k + 1) % len(p)], MOVED_SLOTS)
                    seen.append(c.slot_owners())
            except Exception as e:  # reported by the test thread
                errors.append(e)
            finally:
                done.set()

        t = threading.Thread(target=reshard_ring, daemon=True)
        t.start()
        during = 0
        while not done.is_set() or during == 0:
            run_round(dotted())
            during += 1
        t.join()
        assert not errors, errors
        c.wait_converged()
        run_round(dotted())
        moved = c.redirections()[0] - moved0
        assert moved > 0, "the calls met no MOVED redirection"
    finally:
        driver.close()
    # Each mailbox is on its owner only and holds what the replies said.
    for u in moving:
        slot = c.keyslot(u)
        assert any(o[slot] != owners[slot] for o in seen), f"the reshard did not move {u}"
    total = sum(s.client().dbsize() for s in p)
    assert total == len(users), f"{total} keys on the primaries for {len(users)} users"
    for u in users:
        owner = c.owner(u)
        assert owner.client().exists(u) == 1
        cursor, items = owner.client().execute_command("IM.OFFLINE.PAGE", u, "phone", "COUNT", 1000)
        got = [(int(i[0]), i[1].decode()) for i in items]
        want = sorted((seq, mid) for mid, seq in model.kept[u].items())
        assert cursor == 0 and got == want, (u, got, want)
        assert len(want) == rounds[0]
    print(f"{client} on {flavor}: {calls} calls in {rounds[0]} rounds ({during} during the reshard), "
          f"{len(users)} users, {MOVED_SLOTS * len(p)} slots resharded, ASK {ask}, MOVED {moved}")
