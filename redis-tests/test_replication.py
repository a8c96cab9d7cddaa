"""Every write replicates so that the replica's value is the primary's
(SPEC §8): DEBUG DIGEST-VALUE equal on both, key by key."""

import json
import time

from helpers import (
    RawError, Workload, all_keys, as_map, diff_snapshots, message, now_ms, snapshot, wait_for,
    wait_replica_synced,
)

USERS = [f"u{i}@example.com" for i in range(60)]
REPL = {"repl-diskless-sync-delay": 0}


def start_pair(make_server, module_args, replica_args=None):
    primary = make_server(module_args=module_args, extra_conf=REPL, name="primary")
    return primary, lambda: attach(make_server, primary, replica_args or module_args)


def attach(make_server, primary, module_args):
    replica = make_server(module_args=module_args, extra_conf=REPL, replicaof=primary, name="replica")
    rc = replica.client()
    wait_for(lambda: rc.info("replication").get("master_link_status") == "up", timeout=30,
             what="the replica to attach")
    return replica


def assert_replica_equal(primary, replica):
    wait_replica_synced(primary, replica)
    p, r = primary.client(), replica.client()
    keys = all_keys(p)
    assert keys == all_keys(r)
    a, b = snapshot(p), snapshot(r)
    assert a == b, "replica differs:\n" + diff_snapshots(a, b)
    return keys


def test_mixed_workload(make_server):
    # max-messages small enough that some mailboxes fill up (IMFULL: nothing
    # replicated), timer off so that the comparison is of commands only
    args = {"sweep-interval": 0, "max-messages": 25}
    primary, make_replica = start_pair(make_server, args)
    p = primary.client()
    w = Workload(USERS, seed=42)
    w.run(p, 1500)                      # before the replica: reaches it by full sync
    replica = make_replica()
    w.run(p, 3500)                      # after: reaches it as a command stream
    assert not w.errors, w.errors[:5]
    keys = assert_replica_equal(primary, replica)
    assert len(keys) >= 40
    assert sum(len(v) for v in w.stored.values()) > 500
    assert w.rejected > 0, "the workload should fill some mailboxes"


def test_replica_refuses_writes_and_answers_reads(make_server):
    primary, make_replica = start_pair(make_server, {"sweep-interval": 0})
    replica = make_replica()
    p = primary.client()
    p.execute_command("IM.CONNECT", "alice", "phone")
    p.execute_command("IM.STORE", "alice", message("m1"))
    wait_replica_synced(primary, replica)
    raw = replica.raw()
    for cmd in (["IM.STORE", "alice", message("m2")], ["IM.ACK", "alice", "phone", "m1"],
                ["IM.CONNECT", "alice", "laptop"], ["IM.DISCONNECT", "alice", "phone"],
                ["IM.FORGET", "alice", "phone"]):
        reply = raw.call(*cmd)
        assert isinstance(reply, RawError) and str(reply).startswith("READONLY"), (cmd, reply)
    rc = replica.client()
    assert as_map(rc.execute_command("IM.INFO", "alice"))["messages"] == 1
    assert rc.execute_command("IM.OFFLINE.PAGE", "alice", "phone") == [0, []]
    assert_replica_equal(primary, replica)


def test_a_writable_replica_refuses_the_modules_writes_too(make_server):
    """Review: with `replica-read-only no`, IM.STORE on the replica gave its
    mailbox a message under a seq the primary then gave another one; the
    primary's message never reached the replica, which kept apart from its
    primary without a word. Every write a client sends to a replica is now
    refused (READONLY), in a script too; the primary's changes still apply,
    a promoted replica takes writes, and a primary's change to a key that
    holds another type on the replica is logged there."""
    primary, make_replica = start_pair(make_server, {"sweep-interval": 0})
    replica = make_replica()
    p, rc = primary.client(), replica.client()
    p.execute_command("IM.CONNECT", "alice", "phone")
    p.execute_command("IM.STORE", "alice", message("m1"))
    wait_replica_synced(primary, replica)
    rc.config_set("replica-read-only", "no")
    raw = replica.raw()
    for cmd in (["IM.STORE", "alice", message("r1")], ["IM.STORE", "new", message("r2")],
                ["IM.ACK", "alice", "phone", "m1"], ["IM.CONNECT", "alice", "laptop"],
                ["IM.DISCONNECT", "alice", "phone"], ["IM.FORGET", "alice", "phone"],
                ["IM.IMPORT", "alice", "1", "r3", message("r3")], ["IM.ARCHIVE.ACK", "alice", "1"],
                ["EVAL", "return redis.call('IM.STORE', KEYS[1], ARGV[1])", "1", "alice", message("r4")]):
        reply = raw.call(*cmd)
        assert isinstance(reply, RawError) and "READONLY" in str(reply) \
            and "primary only" in str(reply), (cmd, reply)
    assert not rc.exists("new")
    p.execute_command("IM.STORE", "alice", message("m2"))
    assert_replica_equal(primary, replica)
    # A writable replica's own SET on a mailbox's name: the primary's next
    # change to it cannot apply, and the replica says so.
    rc.set("alice", "a string")
    p.execute_command("IM.STORE", "alice", message("m3"))
    wait_replica_synced(primary, replica)
    wait_for(lambda: "the primary changed mailbox 'alice', which holds another type here"
             in replica.log(), what="the replica to log the change it could not apply")
    # Promoted, it takes writes.
    rc.execute_command("REPLICAOF", "NO", "ONE")
    assert rc.execute_command("IM.STORE", "bob", message("b1"))[1] == b"b1"
    assert "panicked" not in replica.log()


def test_replica_with_other_local_limits(make_server):
    """The replica applies what the primary decided, whatever its own settings."""
    primary, make_replica = start_pair(
        make_server, {"sweep-interval": 0, "max-messages": 20, "quota-policy": "drop-oldest",
                      "offline-types": "chat normal headline"},
        replica_args={"sweep-interval": 0, "max-messages": 5, "quota-policy": "reject",
                      "max-stanza-bytes": 200})
    replica = make_replica()
    w = Workload(USERS[:10], seed=5, deletes=False)
    w.run(primary.client(), 1500)
    assert not w.errors, w.errors[:5]
    assert_replica_equal(primary, replica)


def test_timer_changes_replicate(make_server):
    """Resends and expiry run on the primary only, and reach the replica."""
    args = {"sweep-interval": 10, "resend-interval": 50, "ack-timeout": 400}
    primary, make_replica = start_pair(make_server, args)
    replica = make_replica()
    p = primary.client()
    pipe = p.pipeline(transaction=False)
    for u in USERS[:20]:
        pipe.execute_command("IM.CONNECT", u, "phone")
        pipe.execute_command("IM.CONNECT", u, "laptop")
        for i in range(5):
            pipe.execute_command("IM.STORE", u, message(f"m{i}"))
        pipe.execute_command("IM.ACK", u, "laptop", "m0", "m1")
    pipe.execute()

    def expired():
        return all(as_map(p.execute_command("IM.INFO", u))["pending"] == 0 for u in USERS[:20])

    wait_for(expired, timeout=30, what="pending messages to expire")
    u = as_map(p.execute_command("IM.DEVICES", USERS[0])[0])
    assert (u["online"], u["offline"]) == (0, 5), "expiry moves pending offline and marks the device offline"
    assert_replica_equal(primary, replica)


def test_replica_lag_stays_true_while_stores_push_the_eviction_deadline(make_server):
    """A store to a mailbox pushes its `mailbox-idle` deadline later. The
    replica applies the same stores with the same settings, so its schedule
    holds the same deadline as the primary's and its lag stays at 0 while
    the mailbox is kept busy: it must not keep the first, long past,
    deadline (which the primary's timer only moves on a visit that changes
    nothing and so replicates nothing) and report a lag that grows without
    bound."""
    idle = 1000
    args = {"archive": "yes", "mailbox-idle": idle, "sweep-interval": 20}
    primary, make_replica = start_pair(make_server, args)
    replica = make_replica()
    p, rc = primary.client(), replica.client()
    # An offline device: each store leaves the deadlines but the eviction
    # one alone (device-idle and retention are days away).
    p.execute_command("IM.CONNECT", "alice", "phone")
    p.execute_command("IM.DISCONNECT", "alice", "phone")
    start = now_ms()
    lags = []
    i = 0
    # Stores every 100 ms for four times mailbox-idle: the mailbox never
    # falls idle, so nothing is ever due on either node.
    while now_ms() - start < 4 * idle:
        p.execute_command("IM.STORE", "alice", message(f"m{i}"))
        i += 1
        wait_replica_synced(primary, replica)
        lags.append((now_ms() - start, rc.info("im")["im_sweep_lag_ms"]))
        time.sleep(0.1)
    info = as_map(p.execute_command("IM.INFO", "alice"))
    assert info["messages"] == i, "the mailbox stayed busy: nothing was due"
    assert p.info("im")["im_evicted"] == 0
    worst = max(lag for _, lag in lags)
    assert worst < idle, f"the replica's lag grew while nothing was due: {lags[-5:]}"
    doctor = json.loads(rc.execute_command("IM.DOCTOR", "JSON"))
    assert doctor["timer"]["lag_ms"] < idle, doctor["timer"]
