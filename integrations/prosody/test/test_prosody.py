"""Prosody with mod_redis_im, driven by slixmpp clients (issue 11's cases
1-5 and the paths around them). Every wait is a poll with a deadline."""

import asyncio
import subprocess
import time


from harness import HOST, await_until, clients, jid, key, run, wait_until
import harness


async def drained(stack, user, timeout=10):
    """Waits until the user's mailbox holds no message."""
    await await_until(lambda: stack.redis.info(key(user))["messages"] == 0, timeout,
                      what=f"{user}'s mailbox to empty")


async def quiet(seconds=0.3):
    """A short pause after the last expected message, so that a duplicate
    arriving late would be seen (not used for correctness)."""
    await asyncio.sleep(seconds)


def assert_once_in_order(client, expected, stamps=None):
    got = client.bodies()
    assert got == expected, f"{client.boundjid}: got {got}"
    if stamps is not None:
        assert [m.delays for m in client.received] == [stamps] * len(expected)


# 1. bob is offline; alice sends 25 messages; bob logs in and receives all
#    25, in order, once, each with a <delay> stamp; Redis then holds none.
def test_offline_messages_delivered_once_in_order_with_delay(stack, new_users):
    alice, bob = new_users("alice", "bob")
    expected = [f"m{i}" for i in range(25)]

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            for i, body in enumerate(expected):
                a.send_chat(jid(bob), body, mid=f"a{i}")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 25, 10,
                              what="25 stored messages")
            b = await stack.client(bob).online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 25, 10, what="25 messages at bob")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(b, expected, stamps=1)
            assert all(m.sender == f"{jid(alice)}/phone" for m in b.received)
            assert not a.errors
            info = stack.redis.info(key(bob))
            assert info["messages"] == 0 and info["pending"] == 0
    run(main())


# 2. bob has two devices; one is offline while alice writes; each device
#    ends up with every message exactly once.
def test_two_devices_each_get_every_message_once(stack, new_users):
    alice, bob = new_users("alice", "bob")
    first = [f"p{i}" for i in range(10)]   # laptop offline
    second = [f"q{i}" for i in range(10)]  # phone offline
    both = [f"r{i}" for i in range(5)]     # both online

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            # The laptop has been used once: a registered device.
            laptop = await stack.client(bob, "laptop").online()
            await laptop.offline()
            phone = await stack.client(bob, "phone").online()
            cs.append(phone)
            for i, body in enumerate(first):
                a.send_chat(jid(bob), body, mid=f"p{i}")
            await await_until(lambda: len(phone.received) >= 10, 10, what="phone's 10")
            # The laptop comes online and the phone goes away.
            laptop = await stack.client(bob, "laptop").online()
            cs.append(laptop)
            await await_until(lambda: len(laptop.received) >= 10, 10, what="laptop's first 10")
            await phone.offline()
            for i, body in enumerate(second):
                a.send_chat(jid(bob), body, mid=f"q{i}")
            await await_until(lambda: len(laptop.received) >= 20, 10, what="laptop's 20")
            phone = await stack.client(bob, "phone").online()
            cs.append(phone)
            await await_until(lambda: len(phone.received) >= 10, 10, what="phone's missed 10")
            for i, body in enumerate(both):
                a.send_chat(jid(bob), body, mid=f"r{i}")
            await await_until(lambda: len(phone.received) >= 15 and len(laptop.received) >= 25, 10,
                              what="both devices' last 5")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(phone, second + both)
            assert_once_in_order(laptop, first + second + both)
            # The messages each device got from its offline store carry one stamp.
            assert [m.delays for m in phone.received] == [1] * 10 + [0] * 5
            assert [m.delays for m in laptop.received] == [1] * 10 + [0] * 15
            # phone's first session got `first` live
            assert not a.errors
    run(main())


# 3. bob's client stops acking; after ack-timeout Prosody closes his
#    session, and the unacked messages reach him when he logs in again.
def test_client_that_stops_acking_is_closed_and_gets_messages_later(stack, new_users):
    alice, bob = new_users("alice", "bob")
    expected = [f"m{i}" for i in range(10)]

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            dead = await stack.client(bob).online()
            cs.append(dead)
            dead.stop_acking()
            t0 = time.monotonic()
            for i, body in enumerate(expected):
                a.send_chat(jid(bob), body, mid=f"d{i}")
            await await_until(lambda: len(dead.received) >= 10, 10, what="the dead link's copies")
            # All unacked: pending, or offline for those that were routed
            # before bob's initial presence (they came with his offline ones).
            dev = stack.redis.devices(key(bob))[0]
            assert dev["pending"] + dev["offline"] == 10 and dev["pending"] > 0
            # ack-timeout is 3 s in these tests: the module kicks, Prosody closes.
            await asyncio.wait_for(dead.ended.wait(), 10)
            closed_after = time.monotonic() - t0
            assert 2.5 < closed_after < 8, closed_after
            await await_until(lambda: stack.redis.devices(key(bob))[0]["online"] == 0, 5,
                              what="bob's device offline")
            info = stack.redis.info(key(bob))
            assert info["messages"] == 10 and info["pending"] == 0
            b = await stack.client(bob).online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 10, 10, what="the 10 again")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(b, expected, stamps=1)
            assert not a.errors  # nothing bounced to the sender
    run(main())


# 4. a chat-state-only message to an offline user is not stored.
def test_chat_state_to_offline_user_is_not_stored(stack, new_users):
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            a.send_chat(jid(bob), None, mid="cs1", state="composing")
            a.send_chat(jid(bob), "after the chat state", mid="body1")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 1, 10,
                              what="the message with a body stored")
            b = await stack.client(bob).online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 1, 10, what="bob's message")
            await drained(stack, bob)
            await quiet()
            assert b.bodies() == ["after the chat state"]
            assert not any(r.chatstate for r in b.received)
            assert not a.errors
            # Online, a chat state is delivered (tracked until acked).
            a.send_chat(jid(bob), None, mid="cs2", state="composing")
            await await_until(lambda: any(r.chatstate for r in b.received), 10,
                              what="the chat state while online")
            await drained(stack, bob)
    run(main())


# 5. Prosody is killed while bob has unacked messages: after it comes back
#    and bob logs in, he receives each of them exactly once.
def test_prosody_killed_with_unacked_messages(own_stack):
    # A long ack-timeout: the messages are still pending (not expired) when
    # Prosody comes back, the harder case.
    st = own_stack(settings={"ack-timeout": 60000})
    expected = [f"m{i}" for i in range(10)]

    async def before():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            b = await st.client("bob").online()
            cs.append(b)
            b.stop_acking()
            for i, body in enumerate(expected):
                a.send_chat(jid("bob"), body, mid=f"k{i}")
            await await_until(lambda: len(b.received) >= 10, 10, what="the unacked copies")
            dev = st.redis.devices(key("bob"))[0]
            assert dev["pending"] + dev["offline"] == 10 and dev["pending"] > 0
            st.prosody.kill()
            await asyncio.wait_for(b.ended.wait(), 10)
            await asyncio.wait_for(a.ended.wait(), 10)
    run(before())
    assert st.redis.info(key("bob"))["messages"] == 10
    st.prosody.start()

    async def after():
        async with clients() as cs:
            b = await st.client("bob").online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 10, 10, what="the 10 after the restart")
            await drained(st, "bob")
            await quiet()
            assert_once_in_order(b, expected, stamps=1)
    run(after())


# The same, after the messages' ack-timeout expired while Prosody was down
# (the kick event has no subscriber then).
def test_prosody_killed_and_messages_expire_meanwhile(own_stack):
    st = own_stack(settings={"ack-timeout": 1000})
    expected = [f"m{i}" for i in range(5)]

    async def before():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            b = await st.client("bob").online()
            cs.append(b)
            b.stop_acking()
            for i, body in enumerate(expected):
                a.send_chat(jid("bob"), body, mid=f"e{i}")
            await await_until(lambda: len(b.received) >= 5, 10, what="the unacked copies")
            st.prosody.kill()
    run(before())
    wait_until(lambda: st.redis.info(key("bob"))["pending"] == 0, 10, what="expiry")
    st.prosody.start()

    async def after():
        async with clients() as cs:
            b = await st.client("bob").online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 5, 10, what="the 5 after the restart")
            await drained(st, "bob")
            await quiet()
            assert_once_in_order(b, expected, stamps=1)
    run(after())


def test_quota_error_is_resource_constraint(own_stack):
    st = own_stack(settings={"max-messages": 3, "max-stanza-bytes": 2000})

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            for i in range(5):
                a.send_chat(jid("bob"), f"m{i}", mid=f"q{i}")
            await await_until(lambda: len(a.errors) >= 2, 10, what="two errors")
            await quiet()
            assert len(a.errors) == 2
            for e in a.errors:
                assert e["error"]["condition"] == "resource-constraint"
                assert e["error"]["type"] == "wait"
            assert sorted(e["id"] for e in a.errors) == ["q3", "q4"]
            # Too large to be stored at all.
            a.send_chat(jid("carol"), "x" * 3000, mid="big")
            await await_until(lambda: len(a.errors) >= 3, 10, what="the large one's error")
            assert a.errors[2]["id"] == "big"
            # (slixmpp's list of conditions predates policy-violation)
            assert a.errors[2].xml.find(
                "{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation") is not None
            b = await st.client("bob").online()
            cs.append(b)
            await await_until(lambda: len(b.received) >= 3, 10, what="the 3 stored")
            await drained(st, "bob")
            await quiet()
            assert_once_in_order(b, ["m0", "m1", "m2"], stamps=1)
    run(main())


def test_receipts_ack_for_a_client_that_does_not_ack_stream_management(stack, new_users):
    """XEP-0184 receipts are a second path: a session whose stream
    management acks stopped is not kicked while it sends receipts."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice, receipts=True).online()
            cs.append(a)
            b = await stack.client(bob, receipts=True).online()
            cs.append(b)
            b.stop_acking()
            for i in range(5):
                m = a.make_message(mto=jid(bob), mbody=f"m{i}", mtype="chat")
                m["id"] = f"rc{i}"
                m["request_receipt"] = True
                m.send()
            await await_until(lambda: len(b.received) >= 5, 10, what="bob's 5")
            await drained(stack, bob)
            await asyncio.sleep(3.5)  # past ack-timeout: no kick
            assert b.is_connected() and not b.ended.is_set()
            assert b.bodies() == [f"m{i}" for i in range(5)]
    run(main())


def test_client_without_stream_management(stack, new_users):
    """A client that cannot ack: a message counts as acknowledged once
    written to its connection (as with stock Prosody)."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            a.send_chat(jid(bob), "offline one", mid="n0")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 1, 10, what="stored")
            b = await stack.client(bob, sm=False).online()
            cs.append(b)
            a.send_chat(jid(bob), "online one", mid="n1")
            await await_until(lambda: len(b.received) >= 2, 10, what="bob's 2")
            await drained(stack, bob)
            await asyncio.sleep(3.5)
            assert b.is_connected()
            assert_once_in_order(b, ["offline one", "online one"])
    run(main())


def test_carbons_count_as_delivery(stack, new_users):
    """A message to bob's phone (full JID) reaches his laptop as a carbon
    (XEP-0280); the laptop's ack covers it, so it is not offered again."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            phone = await stack.client(bob, "phone").online()
            cs.append(phone)
            laptop = harness.Client(bob, stack.prosody.port, resource="laptop")
            laptop.register_plugin("xep_0280")
            carbons = []
            laptop.add_event_handler("carbon_received", lambda m: carbons.append(m["carbon_received"]["body"]))
            await laptop.online()
            cs.append(laptop)
            await laptop.plugin["xep_0280"].enable()
            for i in range(5):
                a.send_chat(f"{jid(bob)}/phone", f"m{i}", mid=f"c{i}")
            await await_until(lambda: len(phone.received) >= 5 and len(carbons) >= 5, 10,
                              what="5 direct and 5 carbons")
            await drained(stack, bob)
            await laptop.offline()
            laptop2 = await stack.client(bob, "laptop").online()
            cs.append(laptop2)
            await quiet(0.5)
            assert laptop2.received == []
            assert carbons == [f"m{i}" for i in range(5)]
            assert_once_in_order(phone, [f"m{i}" for i in range(5)])
    run(main())


def test_second_session_of_a_device_replaces_the_first(stack, new_users):
    """A device logging in again while its old session hangs: the old
    session is closed (resource conflict), what it had not acked goes to
    the new one, once."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            old = await stack.client(bob).online()
            cs.append(old)
            old.stop_acking()
            for i in range(5):
                a.send_chat(jid(bob), f"m{i}", mid=f"s{i}")
            await await_until(lambda: len(old.received) >= 5, 10, what="the old session's copies")
            new = await stack.client(bob).online()
            cs.append(new)
            await await_until(lambda: len(new.received) >= 5, 10, what="the new session's copies")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(new, [f"m{i}" for i in range(5)], stamps=1)
    run(main())


def test_stream_resumption(stack, new_users):
    """XEP-0198 resumption: while bob's session hibernates his device is
    offline in redis-im; when he resumes, what he had received but not
    acked is acked by his <resume h=.../>, and what arrived meanwhile
    comes from the offline store."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            b = await stack.client(bob).online()
            cs.append(b)
            for i in range(3):
                a.send_chat(jid(bob), f"a{i}", mid=f"a{i}")
            await await_until(lambda: len(b.received) >= 3, 10, what="first 3")
            await drained(stack, bob)
            b.stop_acking()
            for i in range(3):
                a.send_chat(jid(bob), f"b{i}", mid=f"b{i}")
            await await_until(lambda: len(b.received) >= 6, 10, what="3 unacked")
            b.drop()
            await asyncio.wait_for(b.ended.wait(), 5)
            await await_until(lambda: stack.redis.devices(key(bob))[0]["online"] == 0, 5,
                              what="bob's device offline while hibernating")
            for i in range(2):
                a.send_chat(jid(bob), f"c{i}", mid=f"c{i}")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 5, 5,
                              what="5 messages held")
            b.resume_acking()
            await b.resume()
            await await_until(lambda: len(b.received) >= 8, 10, what="the 2 sent while hibernating")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(b, ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1"])
            assert [m.delays for m in b.received[6:]] == [1, 1]
            assert stack.redis.devices(key(bob))[0]["online"] == 1
            assert not a.errors
    run(main())


def test_hibernation_times_out(stack, new_users):
    """A session that hibernates and never resumes: mod_smacks destroys it
    after smacks_hibernation_time (3 s here) without bouncing what it held
    to the sender; it all comes with the next login, once."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            b = await stack.client(bob).online()
            cs.append(b)
            b.stop_acking()
            for i in range(3):
                a.send_chat(jid(bob), f"h{i}", mid=f"h{i}")
            await await_until(lambda: len(b.received) >= 3, 10, what="3 unacked")
            b.drop()
            await asyncio.wait_for(b.ended.wait(), 5)
            a.send_chat(jid(bob), "h3", mid="h3")
            # Hibernation ends after 3 s (checked once a second).
            await asyncio.sleep(5)
            assert not a.errors
            b2 = await stack.client(bob).online()
            cs.append(b2)
            await await_until(lambda: len(b2.received) >= 4, 10, what="the 4 at the next login")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(b2, ["h0", "h1", "h2", "h3"], stamps=1)
            assert not a.errors
    run(main())


def test_unavailable_then_available_again(stack, new_users):
    """A session that goes unavailable (presence) stays connected but is
    not a recipient; when it is available again it gets what it missed."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            b = await stack.client(bob).online()
            cs.append(b)
            a.send_chat(jid(bob), "one", mid="u0")
            await await_until(lambda: len(b.received) >= 1, 10, what="the first")
            b.send_presence(ptype="unavailable")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 0, 5, what="acked")
            await asyncio.sleep(0.3)
            a.send_chat(jid(bob), "two", mid="u1")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 1, 5, what="stored offline")
            b.send_presence()
            await await_until(lambda: len(b.received) >= 2, 10, what="the one missed")
            await drained(stack, bob)
            await quiet()
            assert_once_in_order(b, ["one", "two"])
            assert [m.delays for m in b.received] == [0, 1]
    run(main())


def test_deleted_account_takes_its_mailbox(stack, new_users):
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            for i in range(3):
                a.send_chat(jid(bob), f"m{i}", mid=f"del{i}")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 3, 5, what="3 stored")
            b = await stack.client(bob).online()
            b.register_plugin("xep_0077")
            await b.plugin["xep_0077"].cancel_registration()
            await asyncio.wait_for(b.ended.wait(), 10)
            await await_until(lambda: not stack.redis.client.exists(key(bob)), 5, what="the mailbox deleted")
    run(main())


def test_redis_restart_reconnects(own_stack):
    """Redis restarts (AOF on): Prosody reconnects; a message sent while
    Redis is down waits for it (within im_redis_timeout) and is delivered."""
    st = own_stack(vhost_options={"im_redis_timeout": 8})
    st.redis.stop()
    st.redis.appendonly = True
    st.redis.start()

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            b = await st.client("bob").online()
            cs.append(b)
            a.send_chat(jid("bob"), "before", mid="x0")
            await await_until(lambda: len(b.received) >= 1, 10, what="the first message")
            await drained(st, "bob")
            st.redis.stop()
            a.send_chat(jid("bob"), "while down", mid="x1")
            await asyncio.sleep(1.0)
            st.redis.start()
            await await_until(lambda: len(b.received) >= 2, 15, what="the message sent while Redis was down")
            a.send_chat(jid("bob"), "after", mid="x2")
            await await_until(lambda: len(b.received) >= 3, 10, what="the message after the restart")
            await drained(st, "bob")
            await quiet()
            assert_once_in_order(b, ["before", "while down", "after"])
            assert not a.errors
    run(main())


def test_redis_down_too_long_answers_the_sender(own_stack):
    st = own_stack(vhost_options={"im_redis_timeout": 1})

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            st.redis.stop()
            a.send_chat(jid("bob"), "lost?", mid="y0")
            await await_until(lambda: len(a.errors) >= 1, 10, what="an error to the sender")
            assert a.errors[0]["error"]["condition"] == "internal-server-error"
            assert a.errors[0]["error"]["type"] == "wait"
    run(main())


def test_redis_over_tls_with_password_and_db(own_stack, tmp_path):
    """TLS (certificate checked against a CA and the name), AUTH and
    SELECT, on both connections (commands and events)."""
    cert, key_file, ca = harness.make_tls_files(tmp_path)
    st = own_stack(redis_kw={"tls": (cert, key_file, ca), "password": "s3cret pass"},
                   vhost_options={"im_redis_tls": {"cafile": str(ca)}, "im_redis_tls_name": "localhost",
                                  "im_redis_password": "s3cret pass", "im_redis_db": 3})
    db3 = harness.redis.Redis(port=st.redis.port, ssl=True, ssl_ca_certs=str(ca), password="s3cret pass", db=3)

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            b = await st.client("bob").online()
            cs.append(b)
            dead = await st.client("carol").online()
            cs.append(dead)
            dead.stop_acking()
            for i in range(3):
                a.send_chat(jid("bob"), f"m{i}", mid=f"m{i}")
                a.send_chat(jid("carol"), f"m{i}", mid=f"m{i}")
            await await_until(lambda: len(b.received) >= 3, 10, what="bob's 3")
            await await_until(lambda: harness.as_map(db3.execute_command("IM.INFO", key("bob")))["messages"] == 0,
                              10, what="bob's mailbox (db 3) empty")
            assert st.redis.client.execute_command("DBSIZE") == 0  # nothing in db 0
            # The kick comes through the TLS subscriber connection.
            await asyncio.wait_for(dead.ended.wait(), 10)
            assert b.bodies() == ["m0", "m1", "m2"] and not a.errors
    run(main())


def test_redis_tls_name_mismatch_is_refused(own_stack, tmp_path):
    cert, key_file, ca = harness.make_tls_files(tmp_path)
    st = own_stack(redis_kw={"tls": (cert, key_file, ca)},
                   vhost_options={"im_redis_tls": {"cafile": str(ca)}, "im_redis_tls_name": "redis.example",
                                  "im_redis_timeout": 1})

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            a.send_chat(jid("bob"), "never stored", mid="n0")
            await await_until(lambda: len(a.errors) >= 1, 10, what="the sender's error")
    run(main())
    assert "certificate is not for redis.example" in st.prosody.log()
    st.allowed_errors.append("TLS certificate not accepted")
    assert st.redis.info(key("bob"))["messages"] == 0


def test_stock_prosody_loses_the_second_device(own_stack):
    """The bar: stock Prosody (mod_offline, no redis-im) gives a second
    device nothing of what the first one read (prosody-stock.md, row 2)."""
    st = own_stack(stock=True)

    async def main():
        async with clients() as cs:
            a = await st.client("alice").online()
            cs.append(a)
            laptop = await st.client("bob", "laptop").online()
            await laptop.offline()
            phone = await st.client("bob", "phone").online()
            cs.append(phone)
            for i in range(5):
                a.send_chat(jid("bob"), f"m{i}", mid=f"t{i}")
            await await_until(lambda: len(phone.received) >= 5, 10, what="phone's 5")
            laptop = await st.client("bob", "laptop").online()
            cs.append(laptop)
            await quiet(0.5)
            assert laptop.received == []
    run(main())


def test_api_for_other_modules(stack, new_users):
    """What mod_redis_im offers other modules (issue 18's push module will
    use it): call_wait inside a stanza handler's async runner, and one
    more Pub/Sub channel (test/plugins/mod_redis_im_probe.lua)."""
    alice, bob = new_users("alice", "bob")

    async def main():
        async with clients() as cs:
            a = await stack.client(alice).online()
            cs.append(a)
            for i in range(2):
                a.send_chat(jid(bob), f"m{i}", mid=f"p{i}")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 2, 5, what="2 stored")
            before = await probe(a, bob)
            stack.redis.client.publish("im:test:probe", '{"probe": true}')
            stack.redis.client.publish("im:test:probe", '{"probe": true}')
            async def seen():
                return int((await probe(a, bob))["seen"]) - int(before["seen"])
            deadline = time.monotonic() + 5
            while await seen() < 2:
                assert time.monotonic() < deadline, "the probe channel's messages"
                await asyncio.sleep(0.05)
            assert before["messages"] == "2" and before["devices"] == "0"
    run(main())


async def probe(client, user):
    iq = client.make_iq_get(ito=HOST)
    q = harness.slixmpp.xmlstream.ET.Element("{urn:x-redis-im:probe}query", {"user": user})
    iq.append(q)
    res = await iq.send(timeout=5)
    return dict(res.xml.find("{urn:x-redis-im:probe}query").attrib)


def test_resp_parser():
    """The Lua RESP encoder and parser, on their own (test_resp.lua)."""
    out = subprocess.run(["lua5.4", str(harness.HERE / "test_resp.lua")],
                         capture_output=True, text=True, timeout=30, cwd=harness.HERE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout
