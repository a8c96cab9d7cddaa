"""A real Redis Cluster (or Valkey cluster) for the tests: primaries with
an optional replica each, the module loaded on every node, slots split
evenly; and the ways slots move between primaries: `redis-cli --cluster
reshard` (MIGRATE, with MOVED and ASK on the way) and, on Valkey 9,
`CLUSTER MIGRATESLOTS` (atomic slot migration).

    c = make_cluster(make_server, primaries=3, replicas=1, module_args={...})
    rc = c.client()                       # redis-py RedisCluster
    users = c.users_on_every_node(10)     # 10 users owned by each primary
    c.reshard(c.primaries[0], c.primaries[1], 500)   # legacy, redis-cli
    c.migrate_slots(c.primaries[0], c.primaries[1], [(0, 99)])  # Valkey 9
"""

import shutil
import threading
import subprocess
import time

import redis
from redis.backoff import ConstantBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from conftest import free_port
from helpers import as_map, wait_for, wait_replica_synced

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class Cluster:
    def __init__(self, primaries, replicas):
        self.primaries = primaries
        self.replicas = replicas

    @property
    def nodes(self):
        return self.primaries + self.replicas

    def client(self, **kw):
        """A redis-py RedisCluster that rides out moves and failovers."""
        kw.setdefault("retry", Retry(ConstantBackoff(0.05), 40))
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", s.port) for s in self.primaries], **kw)

    def node_id(self, server):
        return server.client().execute_command("CLUSTER", "MYID").decode()

    def keyslot(self, key):
        return self.primaries[0].client().execute_command("CLUSTER", "KEYSLOT", key)

    def slot_owners(self, via=None):
        """slot -> port of its primary, as `via` (default: the first
        primary alive) sees the cluster."""
        via = via or next(s for s in self.nodes if s.alive())
        owners = {}
        for entry in via.client().execute_command("CLUSTER", "SLOTS"):
            first, last, master = entry[0], entry[1], entry[2]
            for slot in range(first, last + 1):
                owners[slot] = master[1]
        return owners

    def owner(self, key):
        """The primary (a Server) that owns `key` now."""
        port = self.slot_owners()[self.keyslot(key)]
        return next(s for s in self.nodes if s.port == port)

    def slots_of(self, server):
        owners = self.slot_owners()
        return sorted(s for s, p in owners.items() if p == server.port)

    def users_on_every_node(self, per_node, prefix="user", servers=None, lowest=None):
        """`per_node` user names owned by each of `servers` (default: every
        primary), in a list that alternates between them; with `lowest`,
        only users in the lowest `lowest` slots of their primary (the ones
        `redis-cli --cluster reshard` moves first)."""
        servers = servers or self.primaries
        owners = self.slot_owners()
        ports = [s.port for s in servers]
        by_port = {p: [] for p in ports}
        low = {p: set(sorted(x for x, o in owners.items() if o == p)[:lowest or 16384]) for p in ports}
        i = 0
        c = self.primaries[0].client()
        while any(len(v) < per_node for v in by_port.values()):
            u = f"{prefix}{i}@example.com"
            i += 1
            slot = c.execute_command("CLUSTER", "KEYSLOT", u)
            p = owners[slot]
            if p in by_port and len(by_port[p]) < per_node and slot in low[p]:
                by_port[p].append(u)
        return [u for group in zip(*by_port.values()) for u in group]

    def reshard(self, src, dst, slots, wait=True, pipeline=10, timeout=300):
        """`redis-cli --cluster reshard`: moves `slots` slots from `src` to
        `dst` (MIGRATE, key by key, with ASK for keys already moved). With
        wait=False answers the running process."""
        argv = [
            REDIS_CLI, "--cluster", "reshard", f"127.0.0.1:{src.port}",
            "--cluster-from", self.node_id(src), "--cluster-to", self.node_id(dst),
            "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", str(pipeline),
        ]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait:
            return p
        return finish_reshard(p, timeout)

    def migrate_slots(self, src, dst, ranges, timeout=120):
        """Valkey 9's atomic slot migration of `ranges` [(first, last)] from
        `src` to `dst`; waits until it succeeded (fails if it failed)."""
        argv = ["CLUSTER", "MIGRATESLOTS"]
        for first, last in ranges:
            argv += ["SLOTSRANGE", first, last]
        argv += ["NODE", self.node_id(dst)]
        src.client().execute_command(*argv)
        wait_migrations_done(src, timeout)

    def wait_converged(self, timeout=60):
        """Every node sees the same owner for every slot, and the cluster is ok."""
        def same():
            views = [self.slot_owners(via=s) for s in self.nodes if s.alive()]
            return all(v == views[0] for v in views) and len(views[0]) == 16384 and all(
                b"cluster_state:ok" in s.client().execute_command("CLUSTER", "INFO")
                for s in self.nodes if s.alive())

        wait_for(same, timeout=timeout, interval=0.1, what="every node to agree on the slots")

    def lowest_slots(self, server, n):
        """The lowest `n` slots `server` owns, as ranges [(first, last)]."""
        slots = self.slots_of(server)[:n]
        ranges = []
        for x in slots:
            if ranges and ranges[-1][1] == x - 1:
                ranges[-1] = (ranges[-1][0], x)
            else:
                ranges.append((x, x))
        return ranges

    def redirections(self):
        """MOVED and ASK replies the primaries sent so far (`INFO errorstats`)."""
        moved = ask = 0
        for s in self.primaries:
            if not s.alive():
                continue
            stats = s.client().info("errorstats")
            moved += stats.get("errorstat_MOVED", {}).get("count", 0)
            ask += stats.get("errorstat_ASK", {}).get("count", 0)
        return moved, ask


def finish_reshard(p, timeout=300):
    out, _ = p.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert p.returncode == 0, f"redis-cli --cluster reshard failed ({p.returncode}):\n{text[-3000:]}"
    return text


def wait_migrations_done(server, timeout=120):
    """Until every atomic slot migration `server` knows has ended; fails
    when one failed or was cancelled."""
    def done():
        jobs = server.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")
        states = []
        for job in jobs:
            d = dict(zip(job[0::2], job[1::2])) if isinstance(job, list) else job
            states.append((d.get(b"state", b"").decode(), d.get(b"message", b"").decode()))
        bad = [s for s in states if s[0] in ("failed", "cancelled")]
        assert not bad, f"slot migration ended badly: {bad}"
        return all(s[0] == "success" for s in states)

    wait_for(done, timeout=timeout, interval=0.05, what="the slot migration to finish")


def make_cluster(make_server, primaries=3, replicas=0, module_args=None, extra_conf=None, node_timeout=3000):
    """`primaries` primaries with `replicas` replicas each; slots split
    evenly; waits until every node knows every other, the state is ok and
    the replicas are in sync."""
    n = primaries * (1 + replicas)
    bus = [free_port() for _ in range(n)]
    conf = {"cluster-enabled": "yes", "cluster-node-timeout": node_timeout}
    conf.update(extra_conf or {})
    nodes = [
        make_server(module_args=module_args, extra_conf={**conf, "cluster-port": bus[i]}, name=f"node{i}")
        for i in range(n)
    ]
    prim, reps = nodes[:primaries], nodes[primaries:]
    per = 16384 // primaries
    for i, s in enumerate(prim):
        first, last = i * per, (16383 if i == primaries - 1 else (i + 1) * per - 1)
        s.client().execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    for s in nodes[1:]:
        nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", s.port, s.cluster_port())

    def known():
        return all(len(s.client().execute_command("CLUSTER", "NODES").splitlines()) == n for s in nodes)

    wait_for(known, timeout=30, what="every node to know every other")
    for i, rep in enumerate(reps):
        p = prim[i % primaries]
        node_id = p.client().execute_command("CLUSTER", "MYID")
        wait_for(lambda: rep.client().execute_command("CLUSTER", "REPLICATE", node_id),
                 timeout=30, what="CLUSTER REPLICATE")

    def ready():
        return all(b"cluster_state:ok" in s.client().execute_command("CLUSTER", "INFO") for s in nodes) \
            and all(r.client().info("replication").get("master_link_status") == "up" for r in reps)

    wait_for(ready, timeout=60, what="cluster state ok with replicas in sync")
    c = Cluster(prim, reps)
    c.wait_converged()
    return c


def retrying(f, timeout=30, what="a call"):
    """f(), retried while the cluster is moving (connection errors,
    TRYAGAIN, CLUSTERDOWN) until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return f()
        except (redis.exceptions.ConnectionError, redis.exceptions.ClusterError,
                redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                redis.exceptions.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --------------------------------------------------------- a checked workload

def stanza(mid):
    return f"<message to='u@example.com' id='{mid}' type='chat'><body>{mid}</body></message>"


class UserLoad:
    """One user's traffic, one cycle at a time, with what the replies said.

    A cycle: the device `phone` connects; a message is stored, pending on
    it; a third of the time a second message is stored for it offline and
    never acked (`kept`); then either the device acks the pending message
    at once, or it is left to the timer: its delivery expires (one kick
    event is due, `expect_kick`) and the device acks it from offline. A
    call that raised (a connection lost while a node died or slots moved)
    is sent again: a store carries its id, so a retry stores nothing new;
    an ack sent again may answer 0 when the first one took effect."""

    def __init__(self, user, rng):
        self.user = user
        self.rng = rng
        self.cycle = 0
        self.kept = {}          # id -> seq: stored, owed to phone, never acked
        self.acked = {}         # id -> seq: acked by phone
        self.expect_kick = set()
        self.ops = 0
        self.problems = []
        self.busy = False

    def call(self, rc, *args, timeout=60):
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            try:
                self.ops += 1
                return rc.execute_command(*args), tries
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.ClusterError, redis.exceptions.TryAgainError,
                    redis.exceptions.ClusterDownError, redis.exceptions.MovedError,
                    redis.exceptions.AskError, redis.exceptions.ReadOnlyError) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{args[0]} {self.user}: no answer for {timeout}s ({e})")
                time.sleep(0.05)
            except redis.exceptions.ResponseError as e:
                # Mid-failover a node may answer that it is loading or a
                # replica; anything else is a fault of the module.
                if not str(e).startswith(("LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def one_cycle(self, rc, expire_wait=15):
        u = self.user
        self.cycle += 1
        c = self.cycle
        self.call(rc, "IM.CONNECT", u, "phone", "NODE", "n1")
        mid = f"c{c}"
        (seq, id_, pending), _ = self.call(rc, "IM.STORE", u, stanza(mid))
        if id_.decode() != mid:
            self.problems.append(f"{u}: store of {mid} answered id {id_!r}")
        if self.rng.random() < 0.34:
            kid = f"k{c}"
            (kseq, _, _), _ = self.call(rc, "IM.STORE", u, stanza(kid), "DEVICES", 0)
            self.kept[kid] = kseq
        if pending != [b"phone"]:
            # The session was replaced meanwhile (a retried CONNECT): the
            # message is offline; ack it from there.
            self.ack(rc, mid, seq)
            return
        if self.rng.random() < 0.5:
            self.ack(rc, mid, seq)
            return
        self.expect_kick.add(mid)
        deadline = time.monotonic() + expire_wait
        while True:
            info, _ = self.call(rc, "IM.INFO", u)
            if as_map(info)["pending"] == 0:
                break
            if time.monotonic() > deadline:
                self.problems.append(f"{u}: {mid} still pending {expire_wait}s after it was due")
                break
            time.sleep(0.05)
        self.ack(rc, mid, seq)
        if self.rng.random() < 0.2:
            self.check_page(rc)

    def ack(self, rc, mid, seq):
        n, tries = self.call(rc, "IM.ACK", self.user, "phone", mid)
        if n != 1 and not (n == 0 and tries > 1):
            self.problems.append(f"{self.user}: ack of {mid} answered {n}")
        self.acked[mid] = seq

    def check_page(self, rc):
        (cursor, items), _ = self.call(rc, "IM.OFFLINE", "PAGE", self.user, "phone", "COUNT", 1000)
        got = {i[1].decode(): int(i[0]) for i in items}
        if got != self.kept:
            self.problems.append(f"{self.user}: page {sorted(got.items())[:5]}... != kept {sorted(self.kept.items())[:5]}...")


def run_load(c, users, stop, threads=8, seed=1, hold=None):
    """Cycles of UserLoad over `users`, `threads` threads each with its own
    RedisCluster client, until `stop` is set; users in the set `hold` get
    no new cycle meanwhile. Answers the UserLoads, the threads and the
    errors the threads met."""
    import random

    loads = [UserLoad(u, random.Random(f"{seed}-{u}")) for u in users]
    errors = []
    hold = hold if hold is not None else set()

    def worker(mine):
        rc = c.client()
        try:
            while not stop.is_set():
                idle = True
                for load in mine:
                    if stop.is_set():
                        break
                    if load.user in hold:
                        continue
                    idle = False
                    load.busy = True
                    try:
                        load.one_cycle(rc)
                    finally:
                        load.busy = False
                if idle:
                    time.sleep(0.02)
        except Exception as e:
            errors.append(e)
            stop.set()
        finally:
            rc.close()

    ts = [threading.Thread(target=worker, args=(loads[i::threads],), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    return loads, ts, errors


def check_final(c, loads, events=None, digests=True):
    """Every message stored and not acked is owed to the device, on the
    user's owner and nowhere else; nothing acked is left; each expired
    delivery was kicked once; replicas hold what their primary holds.
    Answers the figures."""
    problems = [p for load in loads for p in load.problems]
    assert not problems, problems[:10]
    primaries = [s for s in c.nodes if s.alive() and s.client().info("replication")["role"] == "master"]
    total = sum(s.client().dbsize() for s in primaries)
    checked = existing = 0
    for load in loads:
        owner = c.owner(load.user)
        r = owner.client()
        existing += r.exists(load.user)
        cursor, items = r.execute_command("IM.OFFLINE.PAGE", load.user, "phone", "COUNT", 1000)
        got = {i[1].decode(): int(i[0]) for i in items}
        assert cursor == 0 and got == load.kept, (load.user, sorted(got.items())[:5], sorted(load.kept.items())[:5])
        info = as_map(r.execute_command("IM.INFO", load.user)) if r.exists(load.user) else {}
        assert info.get("messages", 0) == len(load.kept), (load.user, info)
        assert info.get("pending", 0) == 0, (load.user, info)
        checked += len(load.kept) + len(load.acked)
    # Each mailbox is on its owner only.
    assert total == existing, f"{total} keys on the primaries, {existing} mailboxes on their owners"
    kicks_expected = sum(len(l.expect_kick) for l in loads)
    figures = {"users": len(loads), "cycles": sum(l.cycle for l in loads), "operations": sum(l.ops for l in loads),
               "messages_checked": checked, "kept": sum(len(l.kept) for l in loads),
               "acked": sum(len(l.acked) for l in loads), "expiries": kicks_expected}
    if events is not None:
        want = sorted((l.user, m) for l in loads for m in l.expect_kick)
        events.wait(lambda got: len([e for e in got if e.get("event") == "kick"]) >= len(want),
                    timeout=30, what="a kick per expired delivery")
        events.watch(1.0)
        kicks = sorted((e["user"], e["id"]) for e in events.got if e.get("event") == "kick")
        doubled = len(kicks) - len(set(kicks))
        assert doubled == 0, f"{doubled} deliveries expired twice"
        assert kicks == want, (f"kicks differ: missing {sorted(set(want) - set(kicks))[:5]}, "
                               f"unexpected {sorted(set(kicks) - set(want))[:5]}")
        figures["kicks"] = len(kicks)
    if digests:
        for p in primaries:
            reps = [s for s in c.nodes if s.alive() and s is not p
                    and s.client().info("replication").get("master_port") == p.port]
            for rep in reps:
                wait_for(lambda: rep.client().info("replication").get("master_link_status") == "up",
                         timeout=30, what="replica link up")
                wait_replica_synced(p, rep)
                for k in p.client().keys("*"):
                    assert p.client().execute_command("DEBUG", "DIGEST-VALUE", k) == \
                        rep.client().execute_command("DEBUG", "DIGEST-VALUE", k), (k, p.dir.name, rep.dir.name)
    figures["lost"] = 0
    figures["doubled"] = 0
    return figures
