"""Reliability when one machine is not enough (issue 12), on Redis 7.0 and
Valkey 9.1: mailboxes move between primaries while clients keep storing,
acking and paging; the timer acts on a mailbox on its owner only, on both
sides of a move; a primary SIGKILLed is replaced by its replica, which
keeps what it had and runs the timer.

The workload (`cluster.UserLoad`) checks every reply as it comes and, at
the end, every mailbox against what the replies said: each message stored
and not acked is owed to the device, on the user's owner and nowhere else;
nothing acked is left; each delivery left to expire was kicked exactly
once; replicas hold what their primary holds (`DEBUG DIGEST-VALUE`). Each
test prints its figures (run with -s)."""

import signal
import threading
import time

import pytest

from cluster import check_final, make_cluster, run_load, stanza, wait_migrations_done
from helpers import as_map, wait_for, wait_replica_synced

FAST = {"ack-timeout": 300, "resend-interval": 0, "sweep-interval": 10}
MOVE_FOR_S = 8
SLOTS_PER_MOVE = 300


def cluster_flavor(flavor):
    if flavor not in ("redis", "valkey9"):
        pytest.skip("the cluster reliability tests run on Redis 7.0 and Valkey 9.1")


def stop_load(stop, threads, errors):
    stop.set()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client thread hangs"
    assert not errors, errors


def test_mailboxes_move_while_clients_store_ack_and_page(make_server, flavor, subscribe):
    """Slots move around the ring of primaries for a while (`redis-cli
    --cluster reshard`; on Valkey 9 also `CLUSTER MIGRATESLOTS`) while
    clients store, ack and page for users on every primary, in the slots
    that move, with deliveries expiring all the while."""
    cluster_flavor(flavor)
    c = make_cluster(make_server, 3, replicas=1, module_args=FAST)
    p = c.primaries
    users = c.users_on_every_node(8, lowest=SLOTS_PER_MOVE // 2)
    events = subscribe(p[0], "n1")
    stop = threading.Event()
    loads, threads, errors = run_load(c, users, stop, threads=8)
    slots_moved = mailbox_moves = moves = 0
    deadline = time.monotonic() + MOVE_FOR_S
    k = 0
    try:
        while time.monotonic() < deadline and not stop.is_set():
            src, dst = p[k % 3], p[(k + 1) % 3]
            before = {u: c.keyslot(u) for u in users}
            owners = c.slot_owners()
            if flavor == "valkey9" and k % 2 == 1:
                ranges = c.lowest_slots(src, SLOTS_PER_MOVE)
                c.migrate_slots(src, dst, ranges)
            else:
                c.reshard(src, dst, SLOTS_PER_MOVE)
            c.wait_converged()
            after = c.slot_owners()
            slots_moved += SLOTS_PER_MOVE
            mailbox_moves += sum(1 for u, slot in before.items() if owners[slot] != after[slot])
            moves += 1
            k += 1
    finally:
        time.sleep(1)
        stop_load(stop, threads, errors)
    figures = check_final(c, loads, events)
    figures.update(moves=moves, slots_moved=slots_moved, mailbox_moves=mailbox_moves)
    # A mailbox that moved away is not counted as deleted on its old node.
    deleted = sum(s.client().info("im")["im_deleted_mailboxes"] for s in c.nodes)
    assert deleted == 0, f"{deleted} mailboxes counted as deleted by an operator"
    assert mailbox_moves >= len(users), figures
    assert figures["expiries"] > 0, figures
    print(f"\nFIGURES resharding {flavor}: {figures}")


def test_atomic_migration_target_leaves_the_timer_to_the_owner(make_server, flavor, subscribe):
    """Valkey 9: while `CLUSTER MIGRATESLOTS` streams a slot to its target,
    the target holds the mailboxes before it owns them. Deliveries that
    fall due then are the source's: the target skips them (its source's
    timer is off meanwhile, so the target's restraint is what is tested),
    the source expires each once; after the handover, deliveries that fall
    due are the target's, once."""
    if flavor != "valkey9":
        pytest.skip("atomic slot migration is Valkey 9's")
    c = make_cluster(make_server, 3, module_args={"ack-timeout": 500, "resend-interval": 0, "sweep-interval": 10})
    src, dst = c.primaries[0], c.primaries[1]
    ranges = c.lowest_slots(src, 1000)
    users = c.users_on_every_node(20, servers=[src], lowest=1000)
    events = subscribe(c.primaries[2], "n1")
    rs = src.client()
    for u in users:
        rs.execute_command("IM.CONNECT", u, "phone", "NODE", "n1")
    rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 1)
    argv = ["CLUSTER", "MIGRATESLOTS"]
    for a, b in ranges:
        argv += ["SLOTSRANGE", a, b]
    rs.execute_command(*argv, "NODE", c.node_id(dst))
    rd = dst.client()
    # The target hides the keys of slots it imports (MOVED to clients);
    # its INFO im counts them.
    wait_for(lambda: rd.info("im")["im_mailboxes"] == len(users), timeout=30,
             what="the mailboxes copied to the target")
    # The source's timer off: what is due waits for it.
    rs.config_set("im.sweep-interval", 0)
    for i, u in enumerate(users):
        rs.execute_command("IM.STORE", u, stanza(f"a{i}"))
    wait_for(lambda: rd.info("im")["im_pending"] == len(users), timeout=10,
             what="the stores streamed to the target")
    time.sleep(1.0)  # every delivery is overdue now
    assert rd.info("im")["im_expired"] == 0, "the target acted on mailboxes it does not own"
    assert rd.info("im")["im_sweep_not_owned"] > 0
    assert rd.info("im")["im_pending"] == len(users)
    rs.config_set("im.sweep-interval", 10)
    wait_for(lambda: rs.info("im")["im_expired"] == len(users), timeout=10, what="the source to expire")
    rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 0)
    wait_migrations_done(src)
    c.wait_converged()
    # Now the target's: new deliveries expire there.
    for i, u in enumerate(users):
        assert c.owner(u) is dst
        rd.execute_command("IM.CONNECT", u, "phone", "NODE", "n1")
        rd.execute_command("IM.STORE", u, stanza(f"b{i}"))
    wait_for(lambda: rd.info("im")["im_expired"] == len(users), timeout=10, what="the target to expire")
    events.wait(lambda got: len([e for e in got if e["event"] == "kick"]) >= 2 * len(users), timeout=10)
    events.watch(1.0)
    kicks = sorted((e["user"], e["id"]) for e in events.got if e["event"] == "kick")
    want = sorted([(u, f"a{i}") for i, u in enumerate(users)] + [(u, f"b{i}") for i, u in enumerate(users)])
    assert kicks == want, "each delivery expired once, on its owner"
    assert rs.info("im")["im_expired"] == len(users)
    print(f"\nFIGURES atomic migration: {len(users)} mailboxes, {sum(b - a + 1 for a, b in ranges)} slots, "
          f"target skipped {rd.info('im')['im_sweep_not_owned']} due visits, {len(kicks)} kicks, doubled 0")


def test_primary_killed_its_replica_keeps_the_mail_and_runs_the_timer(make_server, flavor, subscribe):
    """Clients store and ack on every primary; one primary's users stop,
    its replica catches up, each of them gets a delivery pending for
    later, and the primary is SIGKILLed. The replica takes over: every
    message it had is there, the pending deliveries expire on it once,
    and clients carry on through it. The killed node comes back as a
    replica and holds the same mailboxes."""
    cluster_flavor(flavor)
    c = make_cluster(make_server, 3, replicas=1, node_timeout=1500,
                     module_args={"ack-timeout": 2500, "resend-interval": 0, "sweep-interval": 10},
                     extra_conf={"appendonly": "yes"})
    victim, heir = c.primaries[0], c.replicas[0]
    users = c.users_on_every_node(6)
    on_victim = [u for u in users if c.owner(u) is victim]
    events = subscribe(c.primaries[1], "n1")
    stop, hold = threading.Event(), set()
    loads, threads, errors = run_load(c, users, stop, threads=6, hold=hold)
    try:
        time.sleep(2)
        hold.update(on_victim)
        wait_for(lambda: not any(l.busy for l in loads if l.user in hold), timeout=60,
                 what="the victim's users to finish their cycles")
        # A delivery due after the kill, for each of the victim's users.
        # The victim does not expire them itself however slow the machine:
        # a kick it published and did not replicate before the kill would
        # be published again by its heir (replication is asynchronous).
        # The heir keeps its own 2.5 s; a deadline follows the setting.
        rv = victim.client()
        rv.config_set("im.ack-timeout", 600_000)
        last = {}
        for l in loads:
            if l.user in hold:
                l.cycle += 1
                mid = f"p{l.cycle}"
                rv.execute_command("IM.CONNECT", l.user, "phone", "NODE", "n1")
                rv.execute_command("IM.STORE", l.user, stanza(mid))
                l.expect_kick.add(mid)
                last[l.user] = mid
        wait_replica_synced(victim, heir)
        victim.stop(kill=True)
        wait_for(lambda: heir.client().info("replication")["role"] == "master", timeout=60,
                 what="the replica to take over")
        c.primaries[0] = heir
        c.wait_converged()
        rh = heir.client()
        wait_for(lambda: all(as_map(rh.execute_command("IM.INFO", u))["pending"] == 0 for u in on_victim),
                 timeout=30, what="the pending deliveries to expire on the new primary")
        assert rh.info("im")["im_expired"] >= len(on_victim)
        rc = c.client()
        for l in loads:
            if l.user in last:
                l.ack(rc, last[l.user], None)
        rc.close()
        hold.clear()
        time.sleep(2)
    finally:
        stop_load(stop, threads, errors)
    victim.start()
    c.replicas[0] = victim
    wait_for(lambda: victim.client().info("replication").get("master_link_status") == "up", timeout=60,
             what="the killed node to come back as a replica")
    figures = check_final(c, loads, events)
    figures.update(killed=1, moved_users=len(on_victim))
    print(f"\nFIGURES failover {flavor}: {figures}")


def test_a_killed_primary_restarting_after_its_replica_took_over_expires_nothing(make_server, flavor, subscribe):
    """A primary SIGKILLed restarts believing it is still the primary of
    its slots (its nodes.conf says so), with deliveries in its AOF that its
    heir has expired already. While the rest of the cluster cannot tell it
    otherwise (every other node stopped), its cluster state is down, and
    its timer does nothing; once the cluster makes it a replica it never
    expires anything: each delivery is kicked once, by the heir."""
    cluster_flavor(flavor)
    c = make_cluster(make_server, 3, replicas=1, node_timeout=1500,
                     module_args={"ack-timeout": 2500, "resend-interval": 0, "sweep-interval": 10},
                     extra_conf={"appendonly": "yes"})
    victim, heir = c.primaries[0], c.replicas[0]
    users = c.users_on_every_node(4, servers=[victim])
    events = subscribe(c.primaries[1], "n1")
    rv = victim.client()
    # Due only on the heir (2.5 s): the victim keeps them for 10 minutes.
    rv.config_set("im.ack-timeout", 600_000)
    for u in users:
        rv.execute_command("IM.CONNECT", u, "phone", "NODE", "n1")
        rv.execute_command("IM.STORE", u, stanza("due"))
    wait_replica_synced(victim, heir)
    victim.stop(kill=True)
    wait_for(lambda: heir.client().info("replication")["role"] == "master", timeout=60,
             what="the replica to take over")
    rh = heir.client()
    wait_for(lambda: all(as_map(rh.execute_command("IM.INFO", u))["pending"] == 0 for u in users),
             timeout=30, what="the deliveries to expire on the heir")
    others = [s for s in c.nodes if s is not victim]
    for s in others:
        s.proc.send_signal(signal.SIGSTOP)
    try:
        # Restarted with its own 2.5 s: every delivery in its AOF is due.
        victim.start()
        rv = victim.client()
        assert rv.info("replication")["role"] == "master", "the restarted node should think it is the primary"
        # Well inside the 2 s the server keeps a restarted primary down
        # for (its own timer, unchecked, expires within a run or two).
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            assert b"cluster_state:fail" in rv.execute_command("CLUSTER", "INFO")
            assert rv.info("im")["im_expired"] == 0, "the restarted primary expired what its heir had"
            time.sleep(0.05)
        assert rv.info("im")["im_sweeps_cluster_down"] > 0, "no timer run met the cluster down"
    finally:
        for s in others:
            s.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: victim.client().info("replication").get("master_link_status") == "up", timeout=60,
             what="the restarted node to become the heir's replica")
    assert victim.client().info("im")["im_expired"] == 0
    events.watch(1.0)
    kicks = sorted((e["user"], e["id"]) for e in events.got if e.get("event") == "kick")
    assert kicks == sorted((u, "due") for u in users), kicks
    for u in users:
        info = as_map(rh.execute_command("IM.INFO", u))
        assert info["pending"] == 0 and info["messages"] == 1, (u, info)
