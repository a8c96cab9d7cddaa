"""The timer while the server pauses writes (SPEC §5, §8): `CLIENT PAUSE
WRITE`, `FAILOVER`, `CLUSTER FAILOVER` and a `SHUTDOWN` waiting for its
replicas all ask modules to keep the replication stream still
(`RedisModule_AvoidReplicaTraffic`). The timer then writes nothing; what
fell due meanwhile is done once, right after, by whichever node is then
the primary.

Each test runs as production does: a replica attached (and the AOF on where
it matters), on every server of the suite. A server that writes during the
pause aborts on its own assertion, which the fixtures find in its log."""

import signal
import threading
import time

import redis
from redis.backoff import ConstantBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from cluster import make_cluster
from helpers import as_map, assert_digests_equal, digest, message, wait_for, wait_replica_synced

# Deliveries fall due 300 ms after they are stored; the timer looks every 10 ms.
ARGS = {"ack-timeout": 300, "sweep-interval": 10, "resend-interval": 0}
N = 20


def store_pending(r, users, node="n1"):
    """One delivery pending on each user's device; in one round trip, so
    that a pause that follows comes well before the first deadline
    (300 ms) however slow the machine."""
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.execute_command("IM.CONNECT", u, "phone", "NODE", node)
        pipe.execute_command("IM.STORE", u, message(f"m-{u}"))
    pipe.execute()


def pending(r, u):
    return as_map(r.execute_command("IM.INFO", u))["pending"]


def offline(r, u):
    return as_map(r.execute_command("IM.OFFLINE.INFO", u, "phone"))["count"]


def kicks(events):
    return [e for e in events.got if e["event"] == "kick"]


def test_client_pause_write_holds_the_timer_until_it_ends(make_server, subscribe):
    primary = make_server(module_args=ARGS, extra_conf={"appendonly": "yes"})
    replica = make_server(module_args=ARGS, replicaof=primary)
    wait_replica_synced(primary, replica)
    r = primary.client()
    events = subscribe(primary, "n1")
    users = [f"u{i}" for i in range(N)]
    store_pending(r, users)
    pause_ms = 1500
    paused_at = time.monotonic()
    r.execute_command("CLIENT", "PAUSE", pause_ms, "WRITE")
    # Every delivery falls due 300 ms in; until the pause ends nothing
    # expires (reads go on during a write pause).
    while time.monotonic() < paused_at + pause_ms / 1000 - 0.2:
        assert r.ping()
        assert [pending(r, u) for u in users] == [1] * N
        time.sleep(0.05)
    events._read(0)
    assert kicks(events) == [], "a delivery expired during the pause"
    # Right after: each expires, once.
    for u in users:
        wait_for(lambda: pending(r, u) == 0, timeout=10, what=f"{u} to expire after the pause")
        assert offline(r, u) == 1
    ended = paused_at + pause_ms / 1000
    events.wait(lambda got: len(kicks(events)) >= N, what="one kick per device")
    events.watch(0.5)
    assert sorted(e["user"] for e in kicks(events)) == sorted(users)
    assert all(e["_t"] >= ended - 0.05 for e in kicks(events))
    info = r.info("im")
    assert info["im_expired"] == N and info["im_kicked"] == N, info
    assert info["im_sweeps_paused"] > 0, info
    assert_digests_equal(primary, replica, users)


def test_client_pause_write_on_a_primary_with_only_the_aof(make_server, subscribe):
    """No replica, but the AOF: the change would still be propagated (to
    the AOF) during the pause."""
    s = make_server(module_args=ARGS, extra_conf={"appendonly": "yes"})
    r = s.client()
    users = [f"u{i}" for i in range(N)]
    store_pending(r, users)
    # Deliveries fall due 300 ms after their store; the check below must
    # still fall within the pause on a slow machine.
    r.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    time.sleep(0.6)
    assert r.ping() and [pending(r, u) for u in users] == [1] * N
    for u in users:
        wait_for(lambda: pending(r, u) == 0, timeout=10, what=f"{u} to expire after the pause")
    # The AOF replays to the same state.
    before = {u: digest(r, u) for u in users}
    r.execute_command("DEBUG", "LOADAOF")
    assert {u: digest(r, u) for u in users} == before


def test_im_sweep_waits_for_the_pause_to_end(make_server):
    """IM.SWEEP is a write command: the server holds it during a write
    pause and runs it after."""
    s = make_server(module_args={**ARGS, "sweep-interval": 0})
    r = s.client()
    store_pending(r, ["u"])
    time.sleep(0.35)
    # Timed from before the pause: the time until the pause command ran
    # can only lengthen what is measured, never shorten it.
    started = time.monotonic()
    r.execute_command("CLIENT", "PAUSE", 500, "WRITE")
    swept = as_map(s.client().execute_command("IM.SWEEP"))
    assert time.monotonic() - started >= 0.45, "IM.SWEEP ran during the pause"
    assert swept["expired"] == 1 and swept["kicked"] == 1


def test_failover_while_deliveries_fall_due(make_server, subscribe):
    """`FAILOVER` pauses the primary's writes until its replica has caught
    up; here the replica is stopped for a second, so the deliveries fall due
    during the pause. The old primary lives and follows; the new one
    expires each delivery once."""
    # Due 600 ms after their store: well inside the pause, and far enough
    # from the stores that a busy machine does not expire any before it.
    args = {**ARGS, "ack-timeout": 600}
    old = make_server(module_args=args, extra_conf={"appendonly": "yes"})
    new = make_server(module_args=args, replicaof=old)
    wait_replica_synced(old, new)
    r = old.client()
    users = [f"u{i}" for i in range(N)]
    events_old = subscribe(old, "n1")
    events_new = subscribe(new, "n1")
    store_pending(r, users)
    assert r.execute_command("WAIT", 1, 10000) == 1
    new.proc.send_signal(signal.SIGSTOP)
    # A write the stopped replica has not acknowledged, so that FAILOVER
    # waits for it and the pause lasts until it runs again: a replica that
    # had acknowledged everything is "synced", and the primary hands over
    # at once and is a replica before the deliveries fall due.
    r.set("unacknowledged", "1")
    try:
        r.execute_command("FAILOVER")
        time.sleep(1.0)
        assert old.alive()
        assert [pending(r, u) for u in users] == [1] * N, "expired during the pause"
    finally:
        new.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: new.client().info("replication")["role"] == "master", timeout=30,
             what="the replica to be promoted")
    wait_for(lambda: old.client().info("replication")["role"] == "slave", timeout=30,
             what="the old primary to follow")
    rn = new.client()
    for u in users:
        wait_for(lambda: pending(rn, u) == 0, timeout=10, what=f"{u} to expire on the new primary")
        assert offline(rn, u) == 1, u
    events_new.wait(lambda got: len(kicks(events_new)) >= N, what="a kick per device")
    events_new.watch(0.5)
    events_old._read(0)
    assert sorted(e["user"] for e in kicks(events_new)) == sorted(users)
    assert kicks(events_old) == [], "the old primary expired during the failover"
    assert rn.info("im")["im_expired"] == N
    old_info = old.client().info("im")
    assert old_info["im_expired"] == 0 and old_info["im_sweeps_paused"] > 0, old_info
    assert_digests_equal(new, old, users)


def test_shutdown_waiting_for_a_replica(make_server):
    """`SHUTDOWN` on a primary whose replica lags pauses writes and waits up
    to `shutdown-timeout` for it; deliveries falling due meanwhile are left
    for the next primary, and the server exits cleanly."""
    primary = make_server(module_args=ARGS, extra_conf={"shutdown-timeout": 3})
    replica = make_server(module_args=ARGS, replicaof=primary)
    wait_replica_synced(primary, replica)
    r = primary.client()
    users = [f"u{i}" for i in range(N)]
    store_pending(r, users)
    # The replica holds every delivery before it stops.
    assert r.execute_command("WAIT", 1, 10000) == 1
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        r.set("lag", "x")  # the stopped replica never acks this
        try:
            r.execute_command("SHUTDOWN")
        except redis.exceptions.ConnectionError:
            pass
        assert primary.proc.wait(30) == 0, "the primary did not exit cleanly"
    finally:
        replica.proc.send_signal(signal.SIGCONT)
    log = primary.log()
    assert "ready to exit" in log, log[-2000:]
    # The replica kept every delivery pending; promoted, it expires them.
    rr = replica.client()
    rr.execute_command("REPLICAOF", "NO", "ONE")
    for u in users:
        wait_for(lambda: pending(rr, u) == 0, timeout=10, what=f"{u} to expire on the replica")
        assert offline(rr, u) == 1


# ------------------------------------------------------------ cluster

def make_cluster_with_replicas(make_server, n=3, module_args=None):
    """n primaries with a replica each, the AOF on; slots split evenly."""
    c = make_cluster(make_server, n, replicas=1, module_args=module_args,
                     extra_conf={"appendonly": "yes"})
    return c.primaries, c.replicas


# The old primary keeps overdue work at hand: one mailbox per 5 ms run.
SLOW = {"ack-timeout": 300, "resend-interval": 0, "sweep-interval": 5, "sweep-budget": 1}


def test_cluster_failover_while_deliveries_fall_due(make_server, subscribe):
    """`CLUSTER FAILOVER` on a replica whose primary holds due deliveries,
    clients storing meanwhile. The old primary's timer visits one overdue
    mailbox every 5 ms, so the pause of the manual failover falls on its
    runs: no node aborts, each delivery expires once (on the old primary
    before the switch or on the new one after), and every store that got
    an answer is kept."""
    primaries, replicas = make_cluster_with_replicas(make_server, module_args=SLOW)
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", primaries[0].port)])
    old, new = primaries[0], replicas[0]
    n = 300
    users = []
    i = 0
    while len(users) < n:
        u = f"user{i}"
        i += 1
        if rc.get_node_from_key(u).port == old.port:
            users.append(u)
    # Pub/Sub crosses the cluster bus: one subscriber hears every node.
    events = subscribe(primaries[1], "n1")
    store_pending(rc, users)
    stop = threading.Event()
    acknowledged = []

    def keep_storing():
        c = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", primaries[1].port)],
                         retry=Retry(ConstantBackoff(0.05), 20))
        k = 0
        while not stop.is_set():
            u = users[k % n]
            mid = f"w{k}"
            try:
                c.execute_command("IM.STORE", u, message(mid), "DEVICES", 0)
                acknowledged.append((u, mid))
            except redis.exceptions.RedisError:
                time.sleep(0.05)
            k += 1
        c.close()

    writer = threading.Thread(target=keep_storing, daemon=True)
    writer.start()
    wait_for(lambda: old.client().info("im")["im_expired"] > 0, timeout=10,
             what="the old primary to start expiring")
    assert old.client().info("im")["im_expired"] < n // 2, "too quick to fail over in time"
    new.client().execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: new.client().info("replication")["role"] == "master", timeout=30,
             what="the replica to take over")
    rn = new.client()
    rn.config_set("im.sweep-budget", 100_000)
    for u in users:
        wait_for(lambda: pending(rn, u) == 0, timeout=15, what=f"{u} to expire on the new primary")
    time.sleep(0.3)
    stop.set()
    writer.join(30)
    events.wait(lambda got: len(kicks(events)) >= n, timeout=10, what="one kick per device")
    events.watch(0.5)
    assert sorted(e["user"] for e in kicks(events)) == sorted(users), "each delivery expires once"
    old_info, new_info = old.client().info("im"), rn.info("im")
    assert old_info["im_expired"] + new_info["im_expired"] == n
    assert new_info["im_expired"] > 0
    assert old_info["im_sweeps_paused"] > 0, "the pause did not meet a timer run"
    assert old.client().info("replication")["role"] == "slave"
    for s in primaries + replicas:
        assert s.alive(), s.dir.name
    # Every acknowledged store is there, once, on the owner.
    assert acknowledged, "no store got an answer"
    for u in users:
        ids = [it[1].decode() for it in
               rn.execute_command("IM.OFFLINE.PAGE", u, "phone", "COUNT", 1000)[1]]
        assert len(ids) == len(set(ids)), u
        mine = {mid for (x, mid) in acknowledged if x == u}
        missing = mine - set(ids)
        assert not missing, (u, sorted(missing)[:5])
    rc.close()
