"""A primary with nowhere to send its changes (no AOF, no replica, no
replication backlog) does not build the replicated form of each write. Every
way a write can get somewhere to go later must still see every change made
before and after it (SPEC §8)."""

import threading
import time

import pytest
import redis

from helpers import Workload, message, snapshot, wait_for
from test_durability import aof_idle, assert_same
from test_replication import USERS, assert_replica_equal

QUIET = {"sweep-interval": 0}


def assert_only_effects_replicated(replica):
    """A replica receives every change as IM.APPLY (or IM.LOAD from a
    sync): a client's command itself reaching it would be replayed with the
    replica's clock."""
    stats = replica.client().info("commandstats")
    writes = ("store", "ack", "connect", "disconnect", "forget", "sweep")
    forwarded = sorted(k for k in stats if k.removeprefix("cmdstat_im.") in writes)
    assert not forwarded, f"commands replicated as sent: {forwarded}"


def test_writes_count_for_save_points(make_server):
    s = make_server(module_args=QUIET)
    r = s.client()
    assert r.info("replication")["repl_backlog_active"] == 0
    assert r.info("persistence")["aof_enabled"] == 0
    before = r.info("persistence")["rdb_changes_since_last_save"]
    r.execute_command("IM.CONNECT", "alice", "phone")
    r.execute_command("IM.STORE", "alice", message("m1"))
    r.execute_command("IM.ACK", "alice", "phone", "m1")
    assert r.info("persistence")["rdb_changes_since_last_save"] == before + 3
    # a refused command changes nothing and counts nothing
    with pytest.raises(redis.ResponseError):
        r.execute_command("IM.STORE", "alice", "<message")
    assert r.info("persistence")["rdb_changes_since_last_save"] == before + 3


@pytest.mark.parametrize("diskless", ["yes", "no"], ids=["diskless-sync", "disk-sync"])
def test_replica_attaching_while_writes_run(make_server, diskless):
    # A diskless sync waits two seconds for more replicas before it forks:
    # writes go on meanwhile, and after.
    conf = {"repl-diskless-sync": diskless, "repl-diskless-sync-delay": 2}
    primary = make_server(module_args=QUIET, extra_conf=conf, name="primary")
    p = primary.client()
    w = Workload(USERS, seed=7)
    w.run(p, 1000)
    assert p.info("replication")["repl_backlog_active"] == 0
    replica = make_server(module_args=QUIET, extra_conf=conf, replicaof=primary, name="replica")
    rc = replica.client()
    deadline = time.monotonic() + 30
    while rc.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not attach"
        w.run(p, 50)
    w.run(p, 1000)
    assert not w.errors, w.errors[:5]
    assert_replica_equal(primary, replica)
    assert_only_effects_replicated(replica)


def test_aof_turned_on_at_runtime(make_server):
    s = make_server(module_args=QUIET)
    r = s.client()
    w = Workload(USERS, seed=9)
    w.run(r, 1000)
    r.config_set("appendonly", "yes")
    w.run(r, 500)  # while the first rewrite runs
    wait_for(lambda: aof_idle(r), timeout=60, what="the AOF rewrite")
    w.run(r, 500)
    assert not w.errors, w.errors[:5]
    before = snapshot(r)
    s.extra_conf += ["appendonly", "yes"]
    s.restart()
    assert_same(before, snapshot(s.client()))


def test_promoted_replica_propagates(make_server):
    """A replica made primary gets a replica of its own: writes after the
    promotion reach it."""
    primary = make_server(module_args=QUIET, name="primary")
    replica = make_server(module_args=QUIET, replicaof=primary, name="replica")
    rc = replica.client()
    wait_for(lambda: rc.info("replication").get("master_link_status") == "up", timeout=30,
             what="the replica to attach")
    w = Workload(USERS, seed=3)
    w.run(primary.client(), 500)
    rc.replicaof("no", "one")
    primary.stop()
    w.run(rc, 500)
    second = make_server(module_args=QUIET, replicaof=replica, name="second")
    w.run(rc, 500)
    assert not w.errors, w.errors[:5]
    sc = second.client()
    wait_for(lambda: sc.info("replication").get("master_link_status") == "up", timeout=30,
             what="the second replica to attach")
    w.run(rc, 500)
    assert not w.errors, w.errors[:5]
    assert_replica_equal(replica, second)
    assert_only_effects_replicated(second)


def test_replica_resyncing_from_the_backlog(make_server):
    """A replica that loses its link comes back by partial resync, from the
    backlog alone (no fork): the writes made while it was away are there."""
    primary = make_server(module_args=QUIET, name="primary")
    replica = make_server(module_args=QUIET, replicaof=primary, name="replica")
    p, rc = primary.client(), replica.client()
    wait_for(lambda: rc.info("replication").get("master_link_status") == "up", timeout=30,
             what="the replica to attach")
    w = Workload(USERS, seed=13)
    w.run(p, 500)
    partial = p.info("stats")["sync_partial_ok"]
    forks = p.info("stats")["total_forks"]
    # The replica sleeps through the writes, so the primary has no replica
    # while they run: only the backlog keeps them.
    asleep = threading.Thread(target=lambda: replica.client().execute_command("DEBUG", "SLEEP", 3))
    asleep.start()
    time.sleep(0.3)
    p.execute_command("CLIENT", "KILL", "TYPE", "replica")
    assert p.info("replication")["connected_slaves"] == 0
    w.run(p, 1000)
    assert p.info("replication")["connected_slaves"] == 0
    asleep.join()
    wait_for(lambda: p.info("stats")["sync_partial_ok"] > partial, timeout=30,
             what="the replica's partial resync")
    w.run(p, 500)
    assert not w.errors, w.errors[:5]
    assert p.info("stats")["total_forks"] == forks, "the resync should not need a fork"
    assert_replica_equal(primary, replica)
    assert_only_effects_replicated(replica)
