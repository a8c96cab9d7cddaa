"""The archive queue in a cluster (issue 12, SPEC §6 and §8), on Redis 7.0
and Valkey 9.1: queued messages move with their mailboxes when slots move
between primaries, and survive a primary SIGKILLed and replaced by its
replica; in both, every queued message is handed out again by the node
that owns its mailbox now, once, and an ack there removes it for good.

Leases are memory only and node-local (SPEC §6, DESIGN "The archive
queue"): a lease given by `IM.ARCHIVE.PULL` on one node does not
follow its mailbox to another node, nor survive a failover. The new owner
hands the message out at once, whatever lease the old owner gave (the
archiver writes idempotently on `(user, seq)`, so a second copy of a batch
it still holds changes nothing). What the tests count as lost: a queued
message, not acked by the archiver, that no node hands out any more; as
doubled: a message handed out twice by the nodes after a move or a
failover (each node pulls, under a lease longer than the test, until it
hands out nothing, then once more), or handed out at all once acked. Each test prints its figures (run with -s)."""

from collections import Counter

import pytest

from cluster import make_cluster, stanza, wait_migrations_done
from helpers import as_map, digest, expect_error, wait_for, wait_replica_synced

# Messages age into the queue within half a second of being stored.
ARCHIVE = {"archive": "yes", "retention": 300, "sweep-interval": 10}
# Longer than any test: a lease of this length never runs out while the
# test looks.
LONG_LEASE = 600_000
PER_NODE = 6
MESSAGES = 6
SLOTS_PER_MOVE = 300


def cluster_flavor(flavor):
    if flavor not in ("redis", "valkey9"):
        pytest.skip("the cluster reliability tests run on Redis 7.0 and Valkey 9.1")


def pull(server, count=1000, lease=LONG_LEASE):
    """One IM.ARCHIVE.PULL on `server`: [(user, seq, id)]."""
    got = server.client().execute_command("IM.ARCHIVE.PULL", "COUNT", count, "LEASE", lease)
    return [(u.decode(), int(s), i.decode()) for u, s, i, _ts, _stanza, _devs in got]


def pull_all(server, lease=LONG_LEASE):
    """Pulls on `server` until it hands out nothing more (each pull's lease
    hides what it took from the next)."""
    out = []
    while True:
        got = pull(server, lease=lease)
        if not got:
            return out
        out += got


def queue_messages(c, users, n):
    """Each user's device connects and leaves; `n` messages are stored for
    it offline and age into the archive queue. Answers {(user, seq): id}."""
    # Retention off on the replicas before anything is stored, off on the
    # primaries once everything is queued: a message that lost its place in
    # the queue (and is in the mailbox's log still) would otherwise be
    # queued again by the timer, on the owner or a promoted replica, and
    # hide the loss. (A change of a timer setting rebuilds the node's
    # archive index from its keys: on a replica that would hide an index
    # not kept up by the changes it receives.)
    for s in c.replicas:
        s.client().config_set("im.retention", 0)
    queued = {}
    for u in users:
        r = c.owner(u).client()
        r.execute_command("IM.CONNECT", u, "phone", "NODE", "n1")
        r.execute_command("IM.DISCONNECT", u, "phone")
        for i in range(n):
            mid = f"{u}-m{i}"
            seq, _, _ = r.execute_command("IM.STORE", u, stanza(mid))
            queued[(u, int(seq))] = mid
    total = len(users) * n
    wait_for(lambda: sum(s.client().info("im")["im_archive_queue"] for s in c.primaries) == total,
             timeout=30, what="every message to age into the archive queue")
    for u in users:
        info = as_map(c.owner(u).client().execute_command("IM.INFO", u))
        assert info["queued"] == n, (u, info)
    for s in c.primaries:
        s.client().config_set("im.retention", 0)
    return queued


def queued_per_user(c, users, keys):
    """IM.INFO `queued` of each user on its owner, against the count of
    `keys` (user, seq) that should be queued."""
    for u in users:
        info = as_map(c.owner(u).client().execute_command("IM.INFO", u))
        want = sum(1 for uu, _ in keys if uu == u)
        assert info["queued"] == want, (u, info, want)


def ack(server, handed):
    """IM.ARCHIVE.ACK on `server` for [(user, seq, id)], one call per user;
    answers how many it removed."""
    by_user = {}
    for u, s, _ in handed:
        by_user.setdefault(u, []).append(s)
    r = server.client()
    return sum(r.execute_command("IM.ARCHIVE.ACK", u, *seqs) for u, seqs in by_user.items())


def lease_and_ack_some(c, owner_of, queued):
    """On each primary, a pull hands out two thirds of its queued messages
    under a long lease, and every other one of those is acked there at
    once. Answers (leased: handed out and not acked, acked), sets of (user,
    seq)."""
    leased, acked = set(), set()
    for p in c.primaries:
        mine = {k for k in queued if owner_of[k[0]] is p}
        got = pull(p, count=len(mine) * 2 // 3)
        keys = [(u, s) for u, s, _ in got]
        assert len(got) == len(mine) * 2 // 3 and set(keys) <= mine, (p.port, got)
        assert all(queued[(u, s)] == i for u, s, i in got)
        assert len(set(keys)) == len(keys), "a pull handed a message out twice"
        done = got[0::2]
        assert ack(p, done) == len(done)
        acked |= {(u, s) for u, s, _ in done}
        leased |= {(u, s) for u, s, _ in got[1::2]}
    return leased, acked


def check_handed_out_once(c, queued, expected, handed_by):
    """`handed_by` {server: [(user, seq, id)]} from one pull_all on every
    primary: each message of `expected` exactly once, with its id, by the
    owner of its mailbox; nothing else. Answers (lost, doubled,
    by a node that does not own the mailbox)."""
    counts = Counter((u, s) for got in handed_by.values() for u, s, _ in got)
    doubled = sum(n - 1 for n in counts.values() if n > 1)
    lost = len(expected - set(counts))
    unexpected = set(counts) - expected
    not_owner = [(p.port, u, s) for p, got in handed_by.items() for u, s, _ in got if c.owner(u) is not p]
    wrong_id = [(u, s, i) for got in handed_by.values() for u, s, i in got if queued.get((u, s)) != i]
    assert not unexpected, f"handed out, not queued or already acked: {sorted(unexpected)[:5]}"
    assert not wrong_id, wrong_id[:5]
    assert doubled == 0, f"{doubled} messages handed out twice: {[k for k, n in counts.items() if n > 1][:5]}"
    assert lost == 0, f"{lost} queued messages no node hands out: {sorted(expected - set(counts))[:5]}"
    assert not not_owner, f"handed out by a node that does not own the mailbox: {not_owner[:5]}"
    return lost, doubled, len(not_owner)


def ack_everything(c, to_ack):
    """`to_ack` {server: [(user, seq, id)]} acked on each server (their
    owner); then no node holds or hands out anything queued, now or after
    a lease."""
    acked = 0
    for p, got in to_ack.items():
        n = ack(p, got)
        assert n == len(got), (p.port, n, len(got))
        acked += n
    primaries = [s for s in c.nodes if s.alive() and s.client().info("replication")["role"] == "master"]
    for p in primaries:
        assert pull(p, lease=1) == [], "an acked message handed out again"
    for s in c.nodes:
        if s.alive():
            wait_for(lambda: s.client().info("im")["im_archive_queue"] == 0, timeout=10,
                     what=f"node {s.port}'s archive queue to be empty")
    return acked


def check_replicas(c, users):
    """Each replica, once caught up, holds what its primary holds."""
    for p in [s for s in c.nodes if s.alive() and s.client().info("replication")["role"] == "master"]:
        reps = [s for s in c.nodes if s.alive() and s is not p
                and s.client().info("replication").get("master_port") == p.port]
        assert reps, f"primary {p.port} has no replica"
        for rep in reps:
            wait_replica_synced(p, rep)
            for u in users:
                assert digest(p.client(), u) == digest(rep.client(), u), (u, p.port, rep.port)


def test_queued_messages_move_with_their_mailboxes(make_server, flavor):
    """Users on every primary with messages in the archive queue: some
    handed out under a lease and not acked, some acked, some not pulled.
    Their slots move once each, around the primaries (`redis-cli --cluster
    reshard`; on Valkey 9 one move by `CLUSTER MIGRATESLOTS`, held before
    its handover while the target holds the mailboxes and must not hand
    them out). Afterwards each queued message not acked is handed out once,
    by its new owner, leased ones at once; the old owner hands out nothing
    of a mailbox that left and sends an ack for it there; acks on the new
    owner remove them for good."""
    cluster_flavor(flavor)
    c = make_cluster(make_server, 3, replicas=1, module_args=ARCHIVE)
    p = c.primaries
    users = c.users_on_every_node(PER_NODE, lowest=SLOTS_PER_MOVE // 2)
    owner_before = {u: c.owner(u) for u in users}
    queued = queue_messages(c, users, MESSAGES)
    leased, acked = lease_and_ack_some(c, owner_before, queued)
    not_pulled = set(queued) - leased - acked
    assert leased and acked and not_pulled
    # Each primary's users move once: p2's to p0, p1's to p2, p0's to p1
    # (a reshard takes the source's lowest slots, which the users are in).
    leased_during_move = set()
    held_target_pulls = None
    for k, (a, b) in enumerate([(2, 0), (1, 2), (0, 1)]):
        src, dst = p[a], p[b]
        if flavor == "valkey9" and k == 1:
            # Atomic migration, its handover held back: the target holds
            # the mailboxes, the source still owns them.
            moving = [u for u in users if owner_before[u] is src]
            rs = src.client()
            rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 1)
            argv = ["CLUSTER", "MIGRATESLOTS"]
            for first, last in c.lowest_slots(src, SLOTS_PER_MOVE):
                argv += ["SLOTSRANGE", first, last]
            rs.execute_command(*argv, "NODE", c.node_id(dst))
            rd = dst.client()
            wait_for(lambda: rd.info("im")["im_mailboxes"] == len(moving), timeout=30,
                     what="the mailboxes copied to the target")
            # Their queues came along (an atomic migration sends a mailbox
            # as an AOF rewrite writes it).
            in_queue = sum(1 for k2 in queued if owner_before[k2[0]] is src and k2 not in acked)
            wait_for(lambda: rd.info("im")["im_archive_queue"] == in_queue, timeout=30,
                     what="the queues copied to the target")
            held_target_pulls = pull(dst)
            assert held_target_pulls == [], \
                f"the target handed out mailboxes it does not own yet: {held_target_pulls[:5]}"
            # The source still owns them: a pull there leases some more,
            # right before they move.
            got = pull(src, count=3)
            assert len(got) == 3 and all((u, s) in not_pulled for u, s, _ in got), got
            leased_during_move |= {(u, s) for u, s, _ in got}
            rs.execute_command("DEBUG", "SLOTMIGRATION", "PREVENT-PAUSE", 0)
            wait_migrations_done(src)
        else:
            c.reshard(src, dst, SLOTS_PER_MOVE)
        c.wait_converged()
        for u in users:
            if owner_before[u] is src:
                assert c.owner(u) is dst, f"{u} did not move from {src.port} to {dst.port}"
    assert all(c.owner(u) is not owner_before[u] for u in users)
    queued_per_user(c, users, leased | not_pulled)
    # The old owner: an ack for a mailbox that left is redirected, not
    # answered 0 (an archiver that follows it reaches the new owner).
    u0, s0 = sorted(leased)[0]
    err = expect_error(owner_before[u0].raw(), "IM.ARCHIVE.ACK", u0, s0)
    assert err.startswith("MOVED"), err
    # Every node pulls until it hands out nothing more.
    expected = leased | not_pulled
    handed_by = {s: pull_all(s) for s in p}
    lost, doubled, not_owner = check_handed_out_once(c, queued, expected, handed_by)
    handed = {(u, s) for got in handed_by.values() for u, s, _ in got}
    old_owner_handed = sum(1 for s, got in handed_by.items() for u, _, _ in got if owner_before[u] is s)
    assert old_owner_handed == 0
    # Handed out once: a second round hands out nothing.
    again = sum(len(pull(s)) for s in p)
    assert again == 0, f"{again} messages handed out a second time"
    acked_after = ack_everything(c, handed_by)
    for u in users:
        r = c.owner(u).client()
        if r.exists(u):
            info = as_map(r.execute_command("IM.INFO", u))
            assert (info["queued"], info["messages"]) == (0, 0), (u, info)
    check_replicas(c, users)
    figures = {
        "users": len(users), "queued": len(queued), "acked_before_move": len(acked),
        "leased_not_acked": len(leased | leased_during_move), "not_pulled": len(not_pulled - leased_during_move),
        "slot_moves": 3, "slots_moved": 3 * SLOTS_PER_MOVE, "mailboxes_moved": len(users),
        "messages_moved": len(expected), "handed_out_by_new_owners": len(handed),
        "of_them_leased_on_old_owner": len(handed & (leased | leased_during_move)),
        "handed_out_by_old_owners": old_owner_handed, "handed_out_by_non_owners": not_owner,
        "acked_after_move": acked_after, "lost": lost, "doubled": doubled,
    }
    if held_target_pulls is not None:
        figures["handed_out_by_target_before_handover"] = len(held_target_pulls)
    print(f"\nFIGURES archive resharding {flavor}: {figures}")


def test_a_promoted_replica_hands_out_every_queued_message(make_server, flavor):
    """Users on every primary with messages in the archive queue, some
    leased, some acked, some not pulled; one primary is SIGKILLed once its
    replica caught up. The replica takes over and hands out every queued
    message it had (the leases given by the dead node are gone with it),
    once, and none the dead node had acked; acks there remove them. The
    other primaries keep their leases. The killed node comes back as a
    replica holding the same mailboxes."""
    cluster_flavor(flavor)
    c = make_cluster(make_server, 3, replicas=1, node_timeout=1500, module_args=ARCHIVE,
                     extra_conf={"appendonly": "yes"})
    victim, heir = c.primaries[0], c.replicas[0]
    users = c.users_on_every_node(PER_NODE)
    owner_before = {u: c.owner(u) for u in users}
    on_victim = [u for u in users if owner_before[u] is victim]
    queued = queue_messages(c, users, MESSAGES)
    leased, acked = lease_and_ack_some(c, owner_before, queued)
    not_pulled = set(queued) - leased - acked
    wait_replica_synced(victim, heir)
    victim_queue = heir.client().info("im")["im_archive_queue"]
    assert victim_queue == sum(1 for k in queued if owner_before[k[0]] is victim and k not in acked)
    victim.stop(kill=True)
    wait_for(lambda: heir.client().info("replication")["role"] == "master", timeout=60,
             what="the replica to take over")
    c.primaries[0] = heir
    c.wait_converged()
    assert all(c.owner(u) is heir for u in on_victim)
    queued_per_user(c, users, leased | not_pulled)
    handed_by = {s: pull_all(s) for s in c.primaries}
    # The heir: every queued message of the dead primary's users, leased
    # there or not. The others: what they had not handed out (their
    # leases hold).
    expected = {k for k in queued if k not in acked and (owner_before[k[0]] is victim or k in not_pulled)}
    lost, doubled, not_owner = check_handed_out_once(c, queued, expected, handed_by)
    on_heir = {(u, s) for u, s, _ in handed_by[heir]}
    assert len(on_heir) == victim_queue
    leased_on_victim = {k for k in leased if owner_before[k[0]] is victim}
    assert leased_on_victim <= on_heir
    again = sum(len(pull(s)) for s in c.primaries)
    assert again == 0, f"{again} messages handed out a second time"
    # The other primaries' leases hold: what they leased before, not
    # acked, is acked there now with the rest.
    others_leased = [(u, s, queued[(u, s)]) for u, s in leased if owner_before[u] is not victim]
    to_ack = {s: handed_by[s] + [x for x in others_leased if owner_before[x[0]] is s] for s in c.primaries}
    acked_after = ack_everything(c, to_ack)
    victim.start()
    c.replicas[0] = victim
    wait_for(lambda: victim.client().info("replication").get("master_link_status") == "up", timeout=60,
             what="the killed node to come back as a replica")
    for s in c.nodes:
        wait_for(lambda: s.client().info("im")["im_archive_queue"] == 0, timeout=10,
                 what=f"node {s.port}'s archive queue to be empty")
    check_replicas(c, users)
    figures = {
        "users": len(users), "queued": len(queued), "acked_before_kill": len(acked),
        "leased_not_acked": len(leased), "not_pulled": len(not_pulled), "killed": 1,
        "queued_on_the_killed_primary": victim_queue,
        "handed_out_by_new_primary": len(on_heir), "of_them_leased_on_killed_primary": len(leased_on_victim),
        "handed_out_by_others": sum(len(v) for s, v in handed_by.items() if s is not heir),
        "acked_after_kill": acked_after, "lost": lost, "doubled": doubled,
    }
    print(f"\nFIGURES archive failover {flavor}: {figures}")
