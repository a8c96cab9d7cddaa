"""Redis Cluster: every command that names a user declares it as its key,
so a cluster client routes it to the node that owns the user's slot; the
keyless IM.SWEEP acts on the node it is sent to."""

import redis
from redis.cluster import ClusterNode, RedisCluster

from cluster import make_cluster
from helpers import as_map, message


def test_key_positions_are_declared(server):
    c = server.raw()
    for cmd in (
        ["IM.STORE", "alice", "<message/>"],
        ["IM.ACK", "alice", "phone", "m1"],
        ["IM.CONNECT", "alice", "phone", "NODE", "n1"],
        ["IM.OFFLINE.PAGE", "alice", "phone", "COUNT", "5"],
        ["IM.INFO", "alice"],
    ):
        assert c.call("COMMAND", "GETKEYS", *cmd) == [b"alice"]


def test_commands_route_in_a_real_cluster(make_server):
    nodes = make_cluster(make_server, 3, module_args={"sweep-interval": 0}).primaries
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", nodes[0].port)])
    users = [f"user{i}@example.com" for i in range(30)]
    for u in users:
        rc.execute_command("IM.CONNECT", u, "phone", "NODE", "xmpp1")
        rc.execute_command("IM.DISCONNECT", u, "phone")
        rc.execute_command("IM.STORE", u, message(f"m-{u}"))
    # Each mailbox lives on the node that owns its slot, and only there.
    owners = {}
    for s in nodes:
        for k in s.client().keys("*"):
            owners[k.decode()] = s.port
    assert sorted(owners) == sorted(users)
    assert len(set(owners.values())) == len(nodes), "users spread over every node"
    for u in users:
        slot = rc.keyslot(u)
        assert rc.get_node_from_key(u).port == owners[u], (u, slot)
        # redis-py's cluster client refuses command names with two dots:
        # the container spelling (IM.OFFLINE INFO) routes like any command.
        info = as_map(rc.execute_command("IM.OFFLINE", "INFO", u, "phone"))
        assert info["count"] == 1
        cursor, page = rc.execute_command("IM.OFFLINE", "PAGE", u, "phone")
        assert cursor == 0 and page[0][1] == f"m-{u}".encode()
        assert rc.execute_command("IM.ACK", u, "phone", f"m-{u}") == 1
    # A node answers a user it does not own with a redirection.
    u = users[0]
    other = next(s for s in nodes if s.port != owners[u])
    try:
        other.client().execute_command("IM.INFO", u)
        raise AssertionError("a node answered for a slot it does not own")
    except redis.exceptions.MovedError as e:
        assert str(e).split()[1] == f"127.0.0.1:{owners[u]}"
    # The keyless IM.SWEEP runs on the node it is sent to: every node holds
    # offline devices and nothing pending, so each has nothing due now and
    # its next work is forgetting those devices, `device-idle` (30 days)
    # after they were last seen.
    day = 24 * 3600 * 1000
    for s in nodes:
        swept = as_map(s.client().execute_command("IM.SWEEP"))
        assert swept["resent"] == swept["expired"] == swept["forgotten"] == 0, swept
        assert 29 * day < swept["next"] <= 30 * day, swept
