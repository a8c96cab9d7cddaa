"""The timer across restarts, replication, failover and keyspace changes
(SPEC §5, §8): deadlines survive SAVE+restart and AOF replay and expire on
time afterwards; replicas never sweep and hold the same value as the
primary while the timer works; a promoted replica carries on; DEL, SET,
FLUSHALL leave no deadline behind; RENAME, COPY, MOVE and RESTORE keep
the deadlines under the new name.

Intervals are tens or hundreds of ms, set at load time; waits poll with a
deadline.
"""

import time

import pytest
import redis

from helpers import as_map, digest, message, wait_for, wait_replica_synced

SLACK = 0.015
SWEEP_FIELDS = {"resent", "expired", "kicked", "archived", "dropped", "forgotten", "next", "lag"}


# ---------------------------------------------------------------- helpers

def devices(r, user):
    return {as_map(d)["device"].decode(): as_map(d) for d in r.execute_command("IM.DEVICES", user)}


def offline_seqs(r, user, device):
    _cursor, items = r.execute_command("IM.OFFLINE.PAGE", user, device, "COUNT", 1000)
    return [it[0] for it in items]


def sweep(r):
    reply = as_map(r.execute_command("IM.SWEEP"))
    assert set(reply) == SWEEP_FIELDS, reply
    return reply


def state(r, users):
    """What the commands show of some mailboxes (the timer's effects included)."""
    out = {}
    for u in users:
        out[u] = (
            as_map(r.execute_command("IM.INFO", u)),
            devices(r, u),
            {d: offline_seqs(r, u, d) for d in devices(r, u)},
        )
        for d in out[u][1].values():
            d.pop("last_seen", None)
    return out


def wait_bgrewrite(r):
    def done():
        p = r.info("persistence")
        return p["aof_rewrite_in_progress"] == 0 and p["aof_rewrite_scheduled"] == 0
    wait_for(done, timeout=20, what="BGREWRITEAOF to finish")
    assert r.info("persistence")["aof_last_bgrewrite_status"] == "ok"


def no_crash(server):
    assert server.alive()
    assert server.client().ping()
    assert server.crash_lines() == []


# ---------------------------------------------------------------- 6a. deadlines survive a restart

# resend every 200 ms; expiry at 6 s, long enough to restart in between
# (the test restarts within RESTART_BY s, leaving the rest for the restart
# itself, AOF replay included, on a busy machine).
ACK_TIMEOUT = 6.0
RESTART_BY = 2.0
SLOW = {"resend-interval": 200, "ack-timeout": int(ACK_TIMEOUT * 1000), "sweep-interval": 20}
RESTARTS = {
    "rdb": {},
    "aof": {"appendonly": "yes", "appendfsync": "always"},
    "aof-rewritten": {"appendonly": "yes", "appendfsync": "always", "aof-use-rdb-preamble": "no"},
    "aof-rewritten-preamble": {"appendonly": "yes", "appendfsync": "always", "aof-use-rdb-preamble": "yes"},
}


@pytest.mark.parametrize("how", list(RESTARTS))
def test_deadlines_survive_restart(make_server, subscribe, how):
    s = make_server(module_args=SLOW, extra_conf=RESTARTS[how])
    r = s.client()
    r.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-a")
    ev = subscribe(s, "node-a")
    stanza = message("m1")
    t0 = time.time()
    seq = r.execute_command("IM.STORE", "alice", stanza)[0]
    ev.wait(ev.has("resend"), what="the first resend")
    if how.startswith("aof-rewritten"):
        r.bgrewriteaof()
        wait_bgrewrite(r)
        # and one more timer change appended after the rewrite
        ev.wait(ev.has("resend", n=2), what="a resend after the rewrite")
    if how == "rdb":
        r.save()
    before = max(e["attempt"] for e in ev.of("resend"))
    ev.close()
    assert time.time() - t0 < RESTART_BY, "too slow to restart before the deadline"
    s.restart()  # SIGTERM; with save "" no RDB is written at shutdown
    restarted = time.time()

    r = s.client()
    d = devices(r, "alice")["phone"]
    if d["pending"] == 1:  # else the kick already happened while we reconnected
        assert d["online"] == 1
    ev = subscribe(s, "node-a")
    ev.wait(ev.has("kick"), timeout=ACK_TIMEOUT + 5, what="the kick after the restart")
    kick = ev.of("kick")[0]
    assert (kick["user"], kick["device"], kick["seq"], kick["id"], kick["reason"]) == \
        ("alice", "phone", seq, "m1", "ack-timeout")
    # on time: not before the deadline, and soon after it
    assert kick["_t"] - t0 >= ACK_TIMEOUT - SLACK, "kicked before ack-timeout"
    assert kick["_t"] <= max(t0 + ACK_TIMEOUT, restarted) + 1.0, "kicked late"
    # the resends go on from the attempts saved, not from 2
    resends = ev.of("resend")
    assert resends, "no resend after the restart"
    attempts = [e["attempt"] for e in resends]
    assert attempts == sorted(set(attempts)) and attempts[0] > before, (before, attempts)
    assert all(e["stanza"] == stanza.decode() and e["seq"] == seq for e in resends)

    d = devices(r, "alice")["phone"]
    assert (d["online"], d["pending"], d["offline"]) == (0, 0, 1)
    assert offline_seqs(r, "alice", "phone") == [seq]
    assert ev.watch(0.2) == []


RELOADS = {
    "rdb": {},
    "aof": {"appendonly": "yes", "appendfsync": "always"},
    "aof-rewritten": {"appendonly": "yes", "appendfsync": "always", "aof-use-rdb-preamble": "no"},
}


@pytest.mark.parametrize("how", list(RELOADS))
def test_timer_changes_reload_identically(make_server, how):
    """With the timer driven by IM.SWEEP only, nothing moves between the
    snapshot and the restart: the reloaded values, resends and expiries
    included, are identical (DEBUG DIGEST-VALUE), and the deadlines go on."""
    mod = {"resend-interval": 50, "ack-timeout": 300, "sweep-interval": 0,
           "device-idle": 0, "retention": 0}
    s = make_server(module_args=mod, extra_conf=RELOADS[how])
    r = s.client()
    r.execute_command("IM.CONNECT", "bob", "phone", "NODE", "node-b")
    bob = r.execute_command("IM.STORE", "bob", message("b1"))[0]
    time.sleep(0.32)
    rep = sweep(r)
    assert (rep["expired"], rep["kicked"], rep["resent"]) == (1, 1, 0), rep  # bob
    # alice's stores come after that sweep: a sweep between them and their
    # first resend (50 ms) would be a race on a slow machine
    r.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-a")
    r.execute_command("IM.CONNECT", "alice", "laptop", "NODE", "node-b")
    t_alice = time.time()
    alice = [r.execute_command("IM.STORE", "alice", message(f"a{i}"))[0] for i in range(2)]
    time.sleep(0.06)
    rep = sweep(r)
    assert (rep["resent"], rep["expired"]) == (4, 0), rep  # alice: 2 messages x 2 devices
    assert r.execute_command("IM.ACK", "alice", "laptop", "a0") == 1
    users = ["alice", "bob"]
    digests = {u: digest(r, u) for u in users}
    shown = state(r, users)
    if how == "aof-rewritten":
        r.bgrewriteaof()
        wait_bgrewrite(r)
    elif how == "rdb":
        r.save()

    s.restart()
    r = s.client()
    assert {u: digest(r, u) for u in users} == digests
    assert state(r, users) == shown
    assert r.info("im")["im_pending"] == 3

    # the deadlines held: alice's devices expire at 300 ms, not earlier
    # (the restart may take longer than that: then the first sweep does it)
    early = time.time() - t_alice < 0.29
    rep = sweep(r)
    if early:
        assert rep["expired"] == 0, rep
    time.sleep(max(0.0, t_alice + 0.32 - time.time()))
    rep2 = sweep(r)
    assert (rep["expired"] + rep2["expired"], rep["kicked"] + rep2["kicked"]) == (3, 2), (rep, rep2)
    assert offline_seqs(r, "alice", "phone") == alice
    assert offline_seqs(r, "alice", "laptop") == alice[1:]
    assert offline_seqs(r, "bob", "phone") == [bob]


# ---------------------------------------------------------------- 6b. replication and failover

# a full sync at once (Redis 7.0 waits 5 s for more replicas by default)
PRIMARY = {"repl-diskless-sync-delay": 0}

def test_replica_follows_timer_and_takes_over_when_promoted(make_server, subscribe):
    # Expiry at 5 s: before it the test starts a replica, syncs it, compares
    # digests and kills the primary, which took 2.4 s on a loaded machine.
    ack_timeout = 5.0
    mod = {"resend-interval": 100, "ack-timeout": int(ack_timeout * 1000), "sweep-interval": 20}
    primary = make_server(module_args=mod, extra_conf=PRIMARY)
    p = primary.client()
    p.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-a")
    p.execute_command("IM.CONNECT", "bob", "phone", "NODE", "node-a")
    p.execute_command("IM.CONNECT", "carol", "laptop", "NODE", "node-a")
    p.execute_command("IM.DISCONNECT", "carol", "laptop")
    evp = subscribe(primary, "node-a")
    t0 = time.time()
    alice = [p.execute_command("IM.STORE", "alice", message(f"a{i}"))[0] for i in range(2)]
    p.execute_command("IM.STORE", "bob", message("b1"))
    p.execute_command("IM.STORE", "carol", message("c1"))
    # the replica joins after the timer changed things: the full sync
    # carries them, the stream carries the rest
    evp.wait(evp.has("resend", "alice"), what="the first resend on the primary")
    replica = make_server(module_args=mod, replicaof=primary)
    rr = replica.client()
    evr = subscribe(replica, "node-a")
    wait_replica_synced(primary, replica)
    assert p.execute_command("IM.ACK", "bob", "phone", "b1") == 1
    evp.wait(evp.has("resend", "alice", n=6), what="more resends on the primary")

    # while the timer works, a synced replica holds exactly the primary's values
    users = ["alice", "bob", "carol"]

    def same_digests():
        wait_replica_synced(primary, replica)
        off = p.info("replication")["master_repl_offset"]
        dp = {u: digest(p, u) for u in users}
        dr = {u: digest(rr, u) for u in users}
        stable = p.info("replication")["master_repl_offset"] == off
        roff = rr.info("replication")["slave_repl_offset"]
        if not stable or roff != off:
            return False  # the timer moved meanwhile: try again
        assert dp == dr, f"primary {dp} != replica {dr} at offset {off}"
        return dp

    dp = wait_for(same_digests, timeout=5, what="a quiet moment to compare digests")
    assert len(set(dp.values())) == 3 and "0" * 40 not in dp.values()
    # the timer's changes reached it: pending stays pending, attempts in the digest
    d = devices(rr, "alice")["phone"]
    assert (d["online"], d["pending"]) == (1, 2)

    # a replica never sweeps
    assert evr.got == [] and evr.watch(0.15) == []
    info = rr.info("im")
    assert (info["im_sweep_runs"], info["im_resent"], info["im_kicked"]) == (0, 0, 0), info
    with pytest.raises(redis.ResponseError):
        rr.execute_command("IM.SWEEP")

    # failover: the primary dies, the replica is promoted and carries on
    last_attempt = max(e["attempt"] for e in evp.of("resend", "alice"))
    assert time.time() - t0 < ack_timeout - 0.5, "too slow to promote before the deadline"
    primary.stop(kill=True)
    promoted = time.time()
    rr.execute_command("REPLICAOF", "NO", "ONE")
    evr.wait(evr.has("kick", "alice"), timeout=ack_timeout + 5, what="the kick from the promoted replica")
    evr.watch(0.2)
    resends = evr.of("resend", "alice")
    assert resends, "no resend from the promoted replica"
    assert all(e["_t"] >= promoted for e in evr.got)
    attempts = [e["attempt"] for e in resends]
    # each of a0 and a1 goes on from where the primary left it
    assert min(attempts) >= last_attempt - 1 and min(attempts) > 2, (last_attempt, attempts)
    kicks = evr.of("kick")
    assert [(k["user"], k["seq"]) for k in kicks] == [("alice", alice[0])], kicks
    assert kicks[0]["_t"] - t0 >= ack_timeout - SLACK, "the promoted replica kicked before the deadline"
    assert evr.of(user="bob") == [] and evr.of(user="carol") == []
    d = devices(rr, "alice")["phone"]
    assert (d["online"], d["pending"], d["offline"]) == (0, 0, 2)
    assert offline_seqs(rr, "alice", "phone") == alice
    info = rr.info("im")
    assert info["im_sweep_runs"] > 0 and info["im_kicked"] == 1
    no_crash(replica)


def test_replica_applies_kicks_and_idle_forgetting(make_server):
    mod = {"resend-interval": 0, "ack-timeout": 200, "sweep-interval": 20, "device-idle": 400}
    primary = make_server(module_args=mod, extra_conf=PRIMARY)
    replica = make_server(module_args=mod, replicaof=primary)
    wait_replica_synced(primary, replica)
    p, rr = primary.client(), replica.client()
    p.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-a")
    p.execute_command("IM.CONNECT", "alice", "laptop", "NODE", "node-b")
    p.execute_command("IM.STORE", "alice", message("m1"))
    # expiry at 200 ms, then both devices idle-forgotten 400 ms after
    wait_for(lambda: devices(p, "alice") == {}, timeout=5, what="the devices forgotten on the primary")
    wait_replica_synced(primary, replica)
    assert devices(rr, "alice") == {}
    assert digest(p, "alice") == digest(rr, "alice")
    assert as_map(rr.execute_command("IM.INFO", "alice")) == as_map(p.execute_command("IM.INFO", "alice"))
    assert rr.info("im")["im_forgotten"] == 0 and p.info("im")["im_forgotten"] == 2


# ---------------------------------------------------------------- 7. the keyspace under the timer

FAST = {"resend-interval": 100, "ack-timeout": 500, "sweep-interval": 20}


def with_pending(r, user, node="node-a", id="m1"):
    r.execute_command("IM.CONNECT", user, "phone", "NODE", node)
    return r.execute_command("IM.STORE", user, message(id))[0]


def test_deleted_and_overwritten_mailboxes_have_no_deadlines(make_server, subscribe):
    s = make_server(module_args=FAST)
    r = s.client()
    ev = subscribe(s, "node-a")
    for u in ("deleted", "unlinked", "overwritten", "expired-key", "renewed", "control"):
        with_pending(r, u)
    ev.wait(lambda got: {e["user"] for e in ev.of("resend")} >= {"deleted", "control"},
            what="the timer at work on every mailbox")
    assert r.delete("deleted") == 1
    assert r.unlink("unlinked") == 1
    assert r.set("overwritten", "plain string")
    r.pexpire("expired-key", 1)
    assert r.delete("renewed") == 1
    # a new mailbox under an old name: no device, nothing pending
    renewed = r.execute_command("IM.STORE", "renewed", message("r1"))
    assert renewed[2] == []
    wait_for(lambda: r.exists("expired-key") == 0, timeout=2, what="the key to expire")
    n = ev.mark(r)  # what comes after was published after the keys were gone

    rep = sweep(r)
    assert (rep["expired"], rep["kicked"]) == (0, 0), rep
    ev.wait(ev.has("kick", "control"), what="the control mailbox's kick")
    ev.watch(0.3)
    sweep(r)
    dead = [e for e in ev.got[n:] if e["user"] != "control"]
    assert dead == [], f"events for mailboxes that are gone: {dead}"
    assert [k["user"] for k in ev.of("kick")] == ["control"]

    assert r.get("overwritten") == b"plain string"
    info = as_map(r.execute_command("IM.INFO", "renewed"))
    assert (info["messages"], info["pending"], info["devices"]) == (1, 0, 0)
    i = r.info("im")
    assert (i["im_mailboxes"], i["im_pending"], i["im_kicked"]) == (2, 0, 1), i
    no_crash(s)


@pytest.mark.parametrize("how", ["FLUSHALL", "FLUSHALL ASYNC", "FLUSHDB"])
def test_flushed_mailboxes_have_no_deadlines(make_server, subscribe, how):
    # the deadline at 2 s: a busy machine still flushes before any kick
    s = make_server(module_args={**FAST, "ack-timeout": 2000})
    r = s.client()
    ev = subscribe(s, "node-a")
    for i in range(50):
        with_pending(r, f"user{i}")
    ev.wait(ev.has("resend"), what="the timer at work")
    assert ev.of("kick") == []
    r.execute_command(*how.split())
    wait_for(lambda: r.info("im")["im_mailboxes"] == 0, timeout=3, what="the flush")
    n = ev.mark(r)
    rep = sweep(r)
    assert (rep["resent"], rep["expired"], rep["kicked"], rep["next"]) == (0, 0, 0, -1), rep
    ev.watch(0.7)
    assert ev.got[n:] == [], "events after the flush"
    i = r.info("im")
    assert (i["im_pending"], i["im_schedule_size"], i["im_kicked"]) == (0, 0, 0), i
    assert n == len(ev.got)
    # the timer still works for a new mailbox
    with_pending(r, "after")
    ev.wait(ev.has("kick", "after"), timeout=10, what="a kick after the flush")
    assert {e["user"] for e in ev.got[n:]} == {"after"}
    no_crash(s)


@pytest.mark.parametrize("how", ["RENAME", "COPY", "MOVE", "RESTORE", "SWAPDB"])
def test_moved_mailbox_keeps_its_deadlines(make_server, subscribe, how):
    s = make_server(module_args=FAST)
    r = s.client()
    ev = subscribe(s, "node-a")
    t0 = time.time()
    seq = with_pending(r, "alice")
    ev.wait(ev.has("resend", "alice"), what="the first resend")
    if how == "RENAME":
        assert r.rename("alice", "alice2")
        expect, gone = {"alice2"}, {"alice"}
    elif how == "COPY":
        assert r.execute_command("COPY", "alice", "alice2") == 1
        expect, gone = {"alice", "alice2"}, set()
    elif how == "MOVE":
        assert r.move("alice", 1)
        expect, gone = {"alice"}, set()
    elif how == "SWAPDB":
        assert r.execute_command("SWAPDB", 0, 1)
        expect, gone = {"alice"}, set()
    else:
        dump = r.dump("alice")
        assert r.delete("alice") == 1
        assert r.restore("alice2", 0, dump)
        expect, gone = {"alice2"}, {"alice"}
    n = ev.mark(r)
    ev.wait(lambda got: {k["user"] for k in ev.of("kick")} >= expect, what=f"kicks for {expect}")
    ev.watch(0.3)
    kicks = ev.of("kick")
    assert sorted(k["user"] for k in kicks) == sorted(expect), kicks
    for k in kicks:
        assert (k["device"], k["seq"], k["id"], k["reason"]) == ("phone", seq, "m1", "ack-timeout")
        # the deadline is the one from the store, not reset by the move
        assert 0.5 - SLACK <= k["_t"] - t0 <= 0.5 + 1.0, k
    assert [e for e in ev.got[n:] if e["user"] in gone] == []
    # resends kept counting under the new name
    for u in expect:
        # the first resend (attempt 2) was done before the move
        later = [e["attempt"] for e in ev.got[n:] if e["event"] == "resend" and e["user"] == u]
        assert later == sorted(set(later)) and all(a >= 3 for a in later), (u, later)
    target = s.client(db=1) if how in ("MOVE", "SWAPDB") else r
    for u in expect:
        d = devices(target, u)["phone"]
        assert (d["online"], d["pending"], d["offline"]) == (0, 0, 1)
        assert offline_seqs(target, u, "phone") == [seq]
    no_crash(s)
