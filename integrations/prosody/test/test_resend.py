"""The `resend` path of mod_redis_im (node_events.resend), end to end: the
module's timer with `resend-interval` on (every other test runs with it
off), real Prosody, real Redis, slixmpp clients.

What a `resend` event does in Prosody (docs/prosody.md, "Choices where the
contract is silent"):
- for a message the session holds (it was handed to the session and is
  counted by XEP-0198), it is an ack request (<r/>) to the client, not a
  second copy: the stanza either arrives or the session ends;
- for a message pending on the device that the session does not hold, it
  sends the stanza (once: the session holds it from then on);
- for a message the session has just acked (Redis may not have seen the
  ack when it published the event), it sends nothing.

Each test watches the events on the node's channel with redis-py, so that
what the client sees is tied to the events that caused it. "No more" is a
settle window after the last expected thing. Every wait is a poll with a
deadline."""

import asyncio
import contextlib
import json
import threading
import time

import pytest
import slixmpp
from slixmpp.plugins.xep_0198 import stanza as sm_stanza

from harness import HOST, await_until, clients, jid, key, online, run

RESEND = 0.5       # resend-interval, s
ACK_TIMEOUT = 5.0  # ack-timeout, s: well after a few resends
SETTLE = 1.5       # three resend intervals: "no further resend"
CHANNEL = f"im:events:{HOST}"  # the node is the host name


@pytest.fixture
def resend_stack(own_stack):
    return own_stack(settings={"resend-interval": int(RESEND * 1000),
                               "ack-timeout": int(ACK_TIMEOUT * 1000)})


class Events:
    """The events published on the node's channel, as (monotonic time,
    decoded event), read by a redis-py thread."""

    def __init__(self, redis_client):
        self.items = []
        self._lock = threading.Lock()
        self._pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{CHANNEL: self._on})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _on(self, msg):
        ev = json.loads(msg["data"])
        with self._lock:
            self.items.append((time.monotonic(), ev))

    def resends(self, sid, since=0.0):
        with self._lock:
            return [ev for t, ev in self.items
                    if t >= since and ev.get("event") == "resend" and ev.get("id") == sid]

    def close(self):
        self._thread.stop()  # the thread closes the pubsub connection
        self._thread.join(5)


@contextlib.asynccontextmanager
async def watching(stack):
    """Yields (events, clients); clients appended are disconnected at the end."""
    events = Events(stack.redis.client)
    try:
        async with clients() as made:
            yield events, made
    finally:
        events.close()


class AckControl:
    """Takes over a slixmpp client's answers to the server's <r/>: each is
    recorded, and answered either honestly (h = the stanzas it handled) or,
    while withholding, with the h it had when it started withholding (a
    client that has the stanzas but has not processed them yet). An <a/>
    that answers the request keeps mod_smacks from asking again for the same
    count, so any later <r/> about those stanzas comes from somebody else."""

    def __init__(self, client):
        self.client = client
        self.requests = []  # monotonic time of each <r/>
        self.frozen = None
        self.silent = False
        client.remove_handler("Stream Management Request Ack")
        client.register_handler(slixmpp.Callback(
            "ack control", slixmpp.xmlstream.matcher.MatchXPath("{urn:xmpp:sm:3}r"),
            self._request, instream=True))

    def withhold(self):
        self.frozen = self.client.plugin["xep_0198"].handled

    def go_silent(self):
        """No more answers at all (a link that died without TCP noticing)."""
        self.silent = True

    def release(self):
        self.frozen = None

    def requests_since(self, t):
        return [r for r in self.requests if r >= t]

    def _request(self, _):
        self.requests.append(time.monotonic())
        if self.silent:
            return
        sm = self.client.plugin["xep_0198"]
        ack = sm_stanza.Ack(self.client)
        ack["h"] = sm.handled if self.frozen is None else self.frozen
        self.client.send_raw(str(ack))


def copies(client, mid):
    return [m for m in client.received if m.id == mid]


async def alice_and_bob(st, cs):
    """alice's and bob's phones online; bob's answers to <r/> under an
    AckControl."""
    a = await online(cs, st.client("alice"))
    b = await online(cs, st.client("bob"))
    return a, b, AckControl(b)


def test_resend_of_a_held_message_asks_for_an_ack(resend_stack):
    """bob's phone has the message but its <a/> leaves it out (it withholds
    its XEP-0198 ack; no receipts). Each resend event becomes one more <r/>,
    never a second copy; once the phone answers one honestly, the message
    leaves pending, the resends stop, and the session is not kicked at
    ack-timeout."""
    st = resend_stack
    sid = f"{jid('alice')} r1"

    async def main():
        async with watching(st) as (events, cs):
            a, b, ctl = await alice_and_bob(st, cs)
            ctl.withhold()
            a.send_chat(jid("bob"), "hello", mid="r1")
            await await_until(lambda: copies(b, "r1"), 5, what="the message at bob")
            t_got = time.monotonic()
            assert st.redis.info(key("bob"))["pending"] == 1
            # mod_smacks asks once, right after the message; the later asks
            # are the resend events' (at 0.5, 1.0, 1.5 s...).
            await await_until(lambda: len(ctl.requests_since(t_got + 0.3)) >= 3, ACK_TIMEOUT - 1,
                              what="three ack requests from resend events")
            asks = ctl.requests_since(t_got + 0.3)
            resends = events.resends(sid)
            assert len(resends) >= 3, resends
            assert all(ev["user"] == jid("bob") and ev["device"] == "phone" for ev in resends)
            assert [ev["attempt"] for ev in resends] == sorted(ev["attempt"] for ev in resends)
            # One <r/> per resend event at most (the module does not ask
            # while mod_smacks waits for an answer), and not a burst.
            assert len(asks) <= len(events.resends(sid)) + 1, (asks, resends)
            assert asks[-1] - asks[0] >= RESEND * 1.5, asks
            # Still one copy: the held message was not sent again.
            assert len(copies(b, "r1")) == 1
            assert st.redis.info(key("bob"))["pending"] == 1
            assert not b.ended.is_set()

            # The phone answers the next <r/> honestly: acked, gone.
            ctl.release()
            await await_until(lambda: st.redis.info(key("bob"))["messages"] == 0, 3,
                              what="the message acked through a resend's <r/>")
            t_acked = time.monotonic()
            assert time.monotonic() - t_got < ACK_TIMEOUT  # acked before a kick
            dev = st.redis.devices(key("bob"))[0]
            assert dev["pending"] == 0 and dev["offline"] == 0, dev
            # A resend published just before Redis saw the ack may still
            # arrive; nothing after that.
            await asyncio.sleep(0.2)
            n_events, n_asks = len(events.resends(sid)), len(ctl.requests)
            await asyncio.sleep(SETTLE)
            assert len(events.resends(sid)) == n_events, events.resends(sid, t_acked)
            assert len(ctl.requests) == n_asks, ctl.requests_since(t_acked)
            assert len(copies(b, "r1")) == 1
            # ack-timeout passes: no kick, the session is alive.
            await asyncio.sleep(max(0.0, t_got + ACK_TIMEOUT + 0.5 - time.monotonic()))
            assert not b.ended.is_set()
            assert st.redis.devices(key("bob"))[0]["online"] == 1
            assert not a.errors and not b.errors
    run(main())


def test_resend_to_a_client_that_stopped_acking_sends_no_copy(resend_stack):
    """bob's phone stops answering <r/> altogether. The resend events (about
    ten before ack-timeout) send neither a copy nor another <r/> (mod_smacks
    is still waiting for the answer to its own); at ack-timeout the session
    is closed, and the next login gets each message once, stamped."""
    st = resend_stack
    expected = ["s0", "s1", "s2"]

    async def main():
        async with watching(st) as (events, cs):
            a, b, ctl = await alice_and_bob(st, cs)
            ctl.go_silent()
            t0 = time.monotonic()
            for mid in expected:
                a.send_chat(jid("bob"), mid, mid=mid)
            await await_until(lambda: len(b.received) >= 3, 5, what="the 3 messages at bob")
            t_got = time.monotonic()
            await asyncio.wait_for(b.ended.wait(), ACK_TIMEOUT + 5)
            closed_after = time.monotonic() - t0
            assert ACK_TIMEOUT - 0.5 < closed_after < ACK_TIMEOUT + 4, closed_after
            resends = events.resends(f"{jid('alice')} s0")
            assert len(resends) >= 3, resends  # the resends did happen
            assert b.bodies() == expected  # and sent no copy
            assert ctl.requests_since(t_got + 0.3) == [], ctl.requests
            await await_until(lambda: st.redis.devices(key("bob"))[0]["online"] == 0, 5,
                              what="bob's device offline")
            b2 = await online(cs, st.client("bob"))
            await await_until(lambda: len(b2.received) >= 3, 5, what="the 3 at the next login")
            await await_until(lambda: st.redis.info(key("bob"))["messages"] == 0, 5,
                              what="the mailbox to empty")
            await asyncio.sleep(SETTLE)
            assert b2.bodies() == expected
            assert [m.delays for m in b2.received] == [1, 1, 1]
            assert not a.errors
    run(main())


def store_behind_prosodys_back(st, mid, body):
    """IM.STORE of a message from alice pending on bob's phone, as another
    Prosody would store it: this Prosody's session does not hold it."""
    xml = (f"<message from='{jid('alice')}/phone' to='{jid('bob')}/phone' type='chat' "
           f"id='{mid}'><body>{body}</body></message>")
    sid = f"{jid('alice')} {mid}"
    reply = st.redis.client.execute_command("IM.STORE", key("bob"), xml, "ID", sid, "DEVICES", 1, "phone")
    assert [d.decode() for d in reply[2]] == ["phone"], reply
    return sid, xml


def publish_resend(st, sid, xml, attempt=1):
    """A resend event as the module publishes it (docs/SPEC.md §5)."""
    ev = {"event": "resend", "user": jid("bob"), "device": "phone", "seq": 1,
          "id": sid, "attempt": attempt, "stanza": xml}
    assert st.redis.client.publish(CHANNEL, json.dumps(ev)) >= 1  # Prosody is subscribed


def test_resend_of_a_message_the_session_does_not_hold_sends_it_once(resend_stack):
    """A message pending on bob's phone that his session never got (stored
    directly in Redis): the resend event sends the stanza, once, unchanged
    (same id, no <delay>); the phone acks it, it leaves pending and is not
    sent again. Then a stale resend for it, published by hand after the
    ack, sends nothing, while a resend for a message not acked does."""
    st = resend_stack

    async def main():
        async with watching(st) as (events, cs):
            b = await online(cs, st.client("bob"))
            t0 = time.monotonic()
            sid, xml = store_behind_prosodys_back(st, "x1", "stored behind Prosody's back")
            assert st.redis.info(key("bob"))["pending"] == 1
            await await_until(lambda: copies(b, "x1"), 3 * RESEND + 2, what="the resent stanza")
            t_got = time.monotonic()
            assert t_got - t0 >= RESEND * 0.8, t_got - t0  # it came with the resend, not before
            got = copies(b, "x1")[0]
            assert got.body == "stored behind Prosody's back"
            assert got.sender == f"{jid('alice')}/phone"
            assert got.delays == 0  # a live delivery: the module adds nothing
            assert events.resends(sid), "the resend event"
            # bob's phone acks it (XEP-0198): it leaves the mailbox.
            await await_until(lambda: st.redis.info(key("bob"))["messages"] == 0, 3,
                              what="the resent message acked")
            await asyncio.sleep(0.2)
            n_events = len(events.resends(sid))
            await asyncio.sleep(SETTLE)
            assert len(events.resends(sid)) == n_events
            assert len(copies(b, "x1")) == 1, [m.xml for m in copies(b, "x1")]

            # A stale resend of x1 (as if published before Redis saw the
            # ack), then a resend of x2, which nobody acked. The node's
            # events are handled in order: once x2 is there, x1's event has
            # been handled too.
            publish_resend(st, sid, xml, attempt=2)
            sid2 = f"{jid('alice')} x2"
            xml2 = xml.replace("id='x1'", "id='x2'").replace("behind", "still behind")
            publish_resend(st, sid2, xml2)
            await await_until(lambda: copies(b, "x2"), 3, what="the resend of x2")
            await asyncio.sleep(SETTLE)
            assert len(copies(b, "x1")) == 1, "a stale resend was delivered"
            assert len(copies(b, "x2")) == 1
            assert not b.errors
    run(main())
