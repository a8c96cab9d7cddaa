"""`WATCH` and client-side caching see a mailbox key as modified when, and
only when, a command or the timer changed it: a refused command changes
nothing (SPEC §8), nor does one that finds nothing to do."""

import pytest
import redis

from helpers import wait_for

STANZA = "<message xmlns='jabber:client' to='a@example.com' type='chat' id='{}'><body>hi</body></message>"


def transaction_survives(server, key, action):
    """WATCH `key` on one connection, run `action(other_connection)`, then
    EXEC a transaction on the first: True when EXEC ran (the key was not
    signalled as modified)."""
    watcher = server.client()
    other = server.client()
    pipe = watcher.pipeline(transaction=True)
    pipe.watch(key)
    action(other)
    pipe.multi()
    pipe.set("side", "1")
    try:
        pipe.execute()
        return True
    except redis.WatchError:
        return False
    finally:
        pipe.reset()


def refused(c, *cmd):
    with pytest.raises(redis.ResponseError):
        c.execute_command(*cmd)


@pytest.mark.parametrize("existing", [False, True], ids=["absent", "mailbox"])
def test_refused_store_leaves_a_watch_alone(server, existing):
    r = server.client()
    if existing:
        r.execute_command("IM.CONNECT", "w", "phone")
        r.execute_command("IM.STORE", "w", STANZA.format("m1"))
    assert transaction_survives(server, "w", lambda c: refused(c, "IM.STORE", "w", "<message"))
    assert transaction_survives(server, "w", lambda c: refused(c, "IM.STORE", "w", "<message><body></message>"))
    assert transaction_survives(server, "w", lambda c: refused(c, "IM.STORE", "w", STANZA.format("m2"), "NOPE"))
    assert r.exists("w") == (1 if existing else 0)


def test_commands_that_change_nothing_leave_a_watch_alone(server):
    r = server.client()
    r.execute_command("IM.CONNECT", "w", "phone")
    r.execute_command("IM.STORE", "w", STANZA.format("m1"))
    # (An ack always changes the mailbox: it registers the device or
    # records when it was last seen.)
    assert transaction_survives(server, "w", lambda c: c.execute_command("IM.DISCONNECT", "w", "tablet"))
    assert transaction_survives(server, "w", lambda c: c.execute_command("IM.FORGET", "w", "tablet"))
    assert transaction_survives(server, "w", lambda c: c.execute_command("IM.INFO", "w"))
    assert transaction_survives(server, "w", lambda c: c.execute_command("IM.OFFLINE.PAGE", "w", "phone"))


def test_changes_abort_a_watch(server):
    r = server.client()
    assert not transaction_survives(server, "w", lambda c: c.execute_command("IM.CONNECT", "w", "phone"))
    assert not transaction_survives(server, "w", lambda c: c.execute_command("IM.STORE", "w", STANZA.format("m1")))
    assert not transaction_survives(server, "w", lambda c: c.execute_command("IM.ACK", "w", "phone", "m1"))
    assert not transaction_survives(server, "w", lambda c: c.execute_command("IM.DISCONNECT", "w", "phone"))
    # The last device forgotten with nothing left: the key is deleted.
    assert not transaction_survives(server, "w", lambda c: c.execute_command("IM.FORGET", "w", "phone"))
    assert r.exists("w") == 0


@pytest.mark.module_args("resend-interval", "100", "ack-timeout", "600000", "sweep-interval", "10")
def test_a_timer_change_aborts_a_watch(server):
    r = server.client()
    r.execute_command("IM.CONNECT", "w", "phone")
    r.execute_command("IM.STORE", "w", STANZA.format("m1"))
    watcher = server.client()
    pipe = watcher.pipeline(transaction=True)
    pipe.watch("w")
    # The timer resends the pending message (its attempt count changes).
    wait_for(lambda: int(r.info("im")["im_resent"]) >= 1, what="a resend")
    pipe.multi()
    pipe.set("side", "1")
    with pytest.raises(redis.WatchError):
        pipe.execute()
    pipe.reset()


def test_client_side_cache_is_invalidated_only_by_a_change(server):
    r = server.client()
    r.execute_command("IM.CONNECT", "trk", "phone")
    tracker = server.client()
    listener = server.client()
    pubsub = listener.pubsub()
    pubsub.subscribe("__redis__:invalidate")
    wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, what="subscribed")
    subscribed = [c["id"] for c in r.client_list() if c.get("cmd") == "subscribe"]
    assert len(subscribed) == 1
    tracker.execute_command("CLIENT", "TRACKING", "on", "REDIRECT", subscribed[0])

    def invalidations(action):
        tracker.execute_command("IM.INFO", "trk")
        action()
        got = []
        msg = pubsub.get_message(timeout=0.5)
        while msg is not None:
            if msg["type"] == "message":
                got.append(msg["data"])
            msg = pubsub.get_message(timeout=0.2)
        return got

    assert invalidations(lambda: refused(r, "IM.STORE", "trk", "<message")) == []
    assert invalidations(lambda: r.execute_command("IM.DISCONNECT", "trk", "tablet")) == []
    changed = invalidations(lambda: r.execute_command("IM.STORE", "trk", STANZA.format("m1")))
    assert changed == [[b"trk"]]
