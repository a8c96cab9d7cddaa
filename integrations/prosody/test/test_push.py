"""XEP-0357 push notifications with mod_redis_im_push (issue 18): Prosody
with mod_redis_im, mod_redis_im_push and mod_cloud_notify from Debian's
prosody-modules; a slixmpp client is the push service (the JID the devices
name in <enable/>): it receives the pubsub publish of each notification and
answers it. Each test asserts what that push service and bob's devices
observe; "exactly one" is checked by waiting a settle window after the
first notification. Every wait is a poll with a deadline."""

import asyncio
import json
import time
from pathlib import Path

import pytest
import slixmpp
from slixmpp.xmlstream import ET

import harness
from harness import HOST, await_until, clients, fresh_users, jid, key, online, run
from conftest import serve

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
ACK_TIMEOUT = 3.0  # the module's ack-timeout in these tests (harness.Stack)
SETTLE = 1.5  # how long "no further notification" is watched for
CLOUD_NOTIFY = "/usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua"


@pytest.fixture(scope="module")
def shared_stack():
    """This module's stack, in place of conftest's (whose `stack` fixture
    checks its logs after each test): Prosody with mod_redis_im,
    mod_cloud_notify and mod_redis_im_push. smacks_max_ack_delay = 1:
    mod_cloud_notify's own push for a session slow to ack would come after
    about 2 s, before ack-timeout (3 s), so a duplicate from that path
    would show."""
    if not Path(CLOUD_NOTIFY).exists():
        pytest.fail(f"no {CLOUD_NOTIFY}: install Debian's prosody-modules (scripts/test-prosody does)")
    yield from serve(extra_modules=("cloud_notify", "redis_im_push"),
                     vhost_options={"smacks_max_ack_delay": 1})


class Notification:
    def __init__(self, iq, t):
        publish = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish")
        self.node = publish.get("node") if publish is not None else None
        self.fields = {}
        for f in iq.xml.iter(f"{{{NS_DATA}}}field"):
            v = f.find(f"{{{NS_DATA}}}value")
            self.fields[f.get("var")] = v.text if v is not None else None
        self.count = self.fields.get("message-count")
        self.sender = str(iq["from"])
        self.t = t


class PushService(harness.Client):
    """The app's push service (XEP-0357 "App Server"): a plain account; each
    pubsub publish it receives is a notification, answered with a result."""

    def __init__(self, user, port):
        super().__init__(user, port, resource="push")
        self.notifications = []
        self.register_handler(slixmpp.Callback(
            "push publish", slixmpp.xmlstream.matcher.MatchXPath(
                f"{{jabber:client}}iq/{{{NS_PUBSUB}}}pubsub"), self._publish))

    def _publish(self, iq):
        if iq["type"] != "set":
            return
        self.notifications.append(Notification(iq, time.monotonic()))
        iq.reply(clear=True).send()

    def to(self, node):
        return [n for n in self.notifications if n.node == node]


async def enable_push(client, service, node):
    """XEP-0357 <enable/> from this device (session) naming the push service."""
    iq = client.make_iq_set()
    iq.append(ET.Element(f"{{{NS_PUSH}}}enable", {"jid": str(service.boundjid), "node": node}))
    reply = await iq.send(timeout=10)
    assert reply["type"] == "result"


async def device_offline(stack, user, device, timeout=10):
    def off():
        return any(d["device"] == device and d["online"] == 0 for d in stack.redis.devices(key(user)))
    await await_until(off, timeout, what=f"{user}/{device} offline in redis-im")


async def exactly(service, node, n, timeout=10):
    """Waits for n notifications to node, then SETTLE more seconds; returns
    them (asserting there are exactly n)."""
    await await_until(lambda: len(service.to(node)) >= n, timeout,
                      what=f"{n} notification(s) to {node}")
    await asyncio.sleep(SETTLE)
    got = service.to(node)
    assert len(got) == n, f"{len(got)} notifications to {node}, expected {n}: " + \
        str([(x.count, x.t) for x in got])
    return got


class FreezingProxy:
    """A TCP relay between a client and Prosody that can go silent: once
    frozen it forwards nothing either way and closes nothing, as a phone
    that lost its radio (Prosody's socket stays open, nothing comes back)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.frozen = False
        self.writers = []

    async def start(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, creader, cwriter):
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [cwriter, swriter]
        await asyncio.gather(self._pipe(creader, swriter), self._pipe(sreader, cwriter),
                             return_exceptions=True)

    async def _pipe(self, reader, writer):
        while True:
            data = await reader.read(65536)
            if self.frozen:
                if not data:
                    await asyncio.Event().wait()  # keep the other side open
                continue  # swallowed
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    def close(self):
        self.server.close()
        for w in self.writers:
            w.close()


async def push_service(cs, stack, svc):
    return await online(cs, PushService(svc, stack.prosody.port))


async def enabled(cs, stack, push, user, device, node):
    """The user's device online, with push enabled to node."""
    client = await online(cs, stack.client(user, device))
    await enable_push(client, push, node)
    return client


async def push_and_phone(cs, stack, svc, bob):
    """The push service, and bob's phone online with push enabled."""
    push = await push_service(cs, stack, svc)
    return push, await enabled(cs, stack, push, bob, "phone", "bob-phone")


async def laptop_away_phone_on(cs, stack, push, bob):
    """bob's laptop enables push and goes offline, then his phone comes
    online with push enabled; returns the phone."""
    laptop = await enabled(cs, stack, push, bob, "laptop", "bob-laptop")
    await laptop.offline()
    phone = await enabled(cs, stack, push, bob, "phone", "bob-phone")
    await device_offline(stack, bob, "laptop")
    return phone


async def one_notification_after_ack_timeout(push, t0):
    """Exactly one notification to bob's phone, no sooner than ack-timeout
    after t0."""
    got = await exactly(push, "bob-phone", 1, timeout=ACK_TIMEOUT + 7)
    after = got[0].t - t0
    assert after >= ACK_TIMEOUT - 0.5, f"notified {after:.2f} s after the message"
    assert got[0].count == "1"


async def phone_back(cs, stack, push, bob, bodies, what):
    """bob's phone logs in again: it gets bodies, and there is still one
    notification a body, no more."""
    phone2 = await online(cs, stack.client(bob, "phone"))
    await await_until(lambda: len(phone2.received) >= len(bodies), 10, what=what)
    await exactly(push, "bob-phone", len(bodies), timeout=1)
    assert phone2.bodies() == bodies


# (a) bob's phone enables push and goes offline: each message from alice
#     produces exactly one notification, with the phone's offline count.
def test_offline_phone_gets_one_notification_per_message(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push, phone = await push_and_phone(cs, stack, svc, bob)
            await phone.offline()
            await device_offline(stack, bob, "phone")
            a = await online(cs, stack.client(alice))
            a.send_chat(jid(bob), "one")
            got = await exactly(push, "bob-phone", 1)
            assert got[0].count == "1"
            assert got[0].sender == HOST  # from the server, as XEP-0357 says
            # mod_cloud_notify's "important" marker (a message with a body),
            # with its default text: no body or sender leaves the server.
            assert got[0].fields.get("last-message-body") == "New Message!"
            assert got[0].fields.get("last-message-sender") is None
            a.send_chat(jid(bob), "two")
            got = await exactly(push, "bob-phone", 2)
            assert [n.count for n in got] == ["1", "2"]
            # The phone wakes up and logs in: both messages, no more pushes.
            await phone_back(cs, stack, push, bob, ["one", "two"], what="the two messages")
            assert not a.errors
    run(main())


# (b) bob's laptop is online and acking, his phone offline; both enabled
#     push: the phone is notified, the laptop never.
def test_online_acking_device_gets_no_notification(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push, phone = await push_and_phone(cs, stack, svc, bob)
            await phone.offline()
            laptop = await enabled(cs, stack, push, bob, "laptop", "bob-laptop")
            await device_offline(stack, bob, "phone")
            a = await online(cs, stack.client(alice))
            for body in ("m1", "m2"):
                a.send_chat(jid(bob), body)
            await await_until(lambda: len(laptop.received) >= 2, 10, what="the laptop's messages")
            got = await exactly(push, "bob-phone", 2)
            assert [n.count for n in got] == ["1", "2"]
            assert push.to("bob-laptop") == []
            assert laptop.bodies() == ["m1", "m2"]
            # The laptop acked them: nothing pending for it in redis-im.
            await await_until(lambda: [d for d in stack.redis.devices(key(bob))
                                       if d["device"] == "laptop"][0]["pending"] == 0, 5,
                              what="the laptop's acks")
    run(main())


# (c) bob's phone has a dead link (stream management on; its connection
#     goes silent without being closed): one notification, after
#     ack-timeout, when redis-im gives up on the session; none before
#     (mod_cloud_notify's own push for a late ack, due at about 2 s here,
#     is not sent).
def test_dead_link_gets_one_notification_after_ack_timeout(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        proxy = await FreezingProxy(stack.prosody.port).start()
        try:
            async with clients() as cs:
                push = await push_service(cs, stack, svc)
                phone = await harness.Client(bob, proxy.port, resource="phone").online()
                await enable_push(phone, push, "bob-phone")
                a = await online(cs, stack.client(alice))
                proxy.frozen = True
                t0 = time.monotonic()
                a.send_chat(jid(bob), "are you there?")
                await one_notification_after_ack_timeout(push, t0)
                assert phone.received == []  # it never got through
                phone.abort()
                await device_offline(stack, bob, "phone")
                # The phone wakes up and logs in: the message, once, and
                # no more pushes.
                await phone_back(cs, stack, push, bob, ["are you there?"], what="the message")
        finally:
            proxy.close()
    run(main())


# The same when the client still reads but no longer acks.
def test_client_that_stops_acking_gets_one_notification_after_ack_timeout(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push, phone = await push_and_phone(cs, stack, svc, bob)
            a = await online(cs, stack.client(alice))
            phone.stop_acking()
            t0 = time.monotonic()
            a.send_chat(jid(bob), "are you there?")
            await await_until(lambda: phone.received, 5, what="the message on the dead link")
            await one_notification_after_ack_timeout(push, t0)
            # Prosody closed the session (the module's kick).
            await asyncio.wait_for(phone.ended.wait(), 10)
            await device_offline(stack, bob, "phone")
            # It logs in again: the message, once, and no more pushes.
            await phone_back(cs, stack, push, bob, ["are you there?"], what="the message again")
    run(main())


# (c') bob's phone loses its connection with a message unacked (the socket
#     is dropped without closing the stream, stream management on): the
#     session hibernates, the message becomes offline in redis-im, and the
#     phone gets one notification (mod_cloud_notify's own push at the start
#     of hibernation is not sent); a message during hibernation, one more.
def test_dropped_connection_hibernates_and_gets_one_notification(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push, phone = await push_and_phone(cs, stack, svc, bob)
            a = await online(cs, stack.client(alice))
            phone.stop_acking()
            a.send_chat(jid(bob), "m1")
            await await_until(lambda: phone.received, 5, what="m1 on the phone")
            phone.drop()
            got = await exactly(push, "bob-phone", 1)
            assert got[0].count == "1"
            a.send_chat(jid(bob), "m2")
            got = await exactly(push, "bob-phone", 2)
            assert [n.count for n in got] == ["1", "2"]
            assert not a.errors
    run(main())


# (d) bob's second device (the laptop) is offline while the first (the
#     phone) reads: one notification for the laptop, none for the phone.
def test_second_device_offline_while_first_reads(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push = await push_service(cs, stack, svc)
            phone = await laptop_away_phone_on(cs, stack, push, bob)
            a = await online(cs, stack.client(alice))
            a.send_chat(jid(bob), "hello")
            await await_until(lambda: phone.received, 5, what="the phone's message")
            got = await exactly(push, "bob-laptop", 1)
            assert got[0].count == "1"
            assert push.to("bob-phone") == []
            # Stock Prosody would push nothing here (a resource is online).
            laptop2 = await online(cs, stack.client(bob, "laptop"))
            await await_until(lambda: laptop2.received, 10, what="the laptop's message")
            assert laptop2.bodies() == ["hello"]
    run(main())


# The device a registration belongs to survives a restart of Prosody
# (it is in mod_cloud_notify's store, with the registration).
def test_registration_survives_prosody_restart(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main_before():
        async with clients() as cs:
            laptop = await online(cs, stack.client(bob, "laptop"))
            phone = await online(cs, stack.client(bob, "phone"))
            push = await push_service(cs, stack, svc)
            await enable_push(phone, push, "bob-phone")
            await enable_push(laptop, push, "bob-laptop")
            await phone.offline()
    run(main_before())
    stack.restart_prosody()  # SIGKILL, then start again

    async def main_after():
        async with clients() as cs:
            push = await push_service(cs, stack, svc)
            laptop = await online(cs, stack.client(bob, "laptop"))
            await device_offline(stack, bob, "phone")
            a = await online(cs, stack.client(alice))
            a.send_chat(jid(bob), "after the restart")
            await await_until(lambda: laptop.received, 5, what="the laptop's message")
            got = await exactly(push, "bob-phone", 1)
            assert got[0].count == "1"
            assert push.to("bob-laptop") == []
    run(main_after())


# A device that disabled push gets no more notifications.
def test_disabled_push_sends_nothing(stack):
    alice, bob, svc = fresh_users(stack, "alice", "bob", "svc")

    async def main():
        async with clients() as cs:
            push, phone = await push_and_phone(cs, stack, svc, bob)
            iq = phone.make_iq_set()
            iq.append(ET.Element(f"{{{NS_PUSH}}}disable", {"jid": str(push.boundjid), "node": "bob-phone"}))
            assert (await iq.send(timeout=10))["type"] == "result"
            await phone.offline()
            await device_offline(stack, bob, "phone")
            a = await online(cs, stack.client(alice))
            a.send_chat(jid(bob), "quiet")
            await await_until(lambda: stack.redis.info(key(bob))["messages"] == 1, 5,
                              what="the message stored")
            await asyncio.sleep(SETTLE)
            assert push.notifications == []
    run(main())


# An offline event handled late (the device came back meanwhile) sends no
# push; the same event delivered twice (as to two Prosody processes serving
# the domain, or a republished hint) sends one. The events are published
# here as the module publishes them.
def test_late_or_repeated_events(stack):
    bob, svc = fresh_users(stack, "bob", "svc")

    def publish(device, seq, count):
        ev = {"event": "offline", "user": jid(bob), "device": device, "seq": seq,
              "id": f"{jid(bob)} x{seq}", "count": count}
        return stack.redis.client.publish("im:events:push", json.dumps(ev))

    async def main():
        async with clients() as cs:
            push = await push_service(cs, stack, svc)
            await laptop_away_phone_on(cs, stack, push, bob)
            assert publish("phone", 11, 1) >= 1  # the phone is online: stale
            assert publish("laptop", 12, 7) >= 1
            assert publish("laptop", 12, 7) >= 1
            got = await exactly(push, "bob-laptop", 1)
            assert got[0].count == "7"
            assert push.to("bob-phone") == []
    run(main())
