"""A minimal XMPP client for the load test: plain TCP, SASL PLAIN, resource
binding, XEP-0198 stream management (it answers every <r/> with its h),
initial presence, chat messages. It does just that, with pyexpat, so that
one Python process can drive hundreds of sessions at hundreds of messages
per second on a small machine without being the bottleneck (slixmpp spends
about a millisecond of CPU per stanza, which is what the server spends).

    c = LeanClient("alice", port, resource="phone", on_message=cb)
    await c.online()
    c.send_chat("bob@localhost", "hello", "id1")
    await c.offline()
"""

import asyncio
import base64
import time
import xml.parsers.expat
from xml.sax.saxutils import escape, quoteattr

STREAM_OPEN = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' to='{host}' version='1.0'>")


class Element:
    __slots__ = ("name", "attrs", "children", "text")

    def __init__(self, name, attrs):
        self.name = name
        self.attrs = attrs
        self.children = []
        self.text = []

    def find(self, name):
        for c in self.children:
            if c.name == name:
                return c
        return None

    def findall(self, name):
        return [c for c in self.children if c.name == name]


class LeanClient(asyncio.Protocol):
    def __init__(self, user, port, host="localhost", resource="phone", password="pw", on_message=None):
        self.user, self.port, self.host, self.resource, self.password = user, port, host, resource, password
        self.jid = f"{user}@{host}/{resource}"
        self.on_message = on_message
        self.transport = None
        self.handled = 0
        self.sm = False
        self.errors = []
        self.waiters = []  # (predicate, future)
        self.closed = asyncio.Event()
        self._new_parser()

    # -- parsing ---------------------------------------------------------
    def _new_parser(self):
        p = xml.parsers.expat.ParserCreate()
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        self.parser = p
        self.stack = []

    def _start(self, name, attrs):
        if not self.stack and name == "stream:stream":
            self.stack.append(None)  # the stream itself
            return
        el = Element(name, attrs)
        if len(self.stack) > 1:
            self.stack[-1].children.append(el)
        self.stack.append(el)

    def _chars(self, data):
        if len(self.stack) > 1:
            self.stack[-1].text.append(data)

    def _end(self, name):
        el = self.stack.pop()
        if el is None:
            self.transport.close()
            return
        if len(self.stack) == 1:
            self._top(el)

    def _top(self, el):
        name = el.name
        if name in ("message", "presence", "iq"):
            if self.sm:
                self.handled += 1
            if name == "message":
                if el.attrs.get("type") == "error":
                    self.errors.append(el)
                elif self.on_message:
                    self.on_message(self, el)
            elif name == "iq" and el.attrs.get("type") == "get":
                self._send(f"<iq type='error' id={quoteattr(el.attrs.get('id', ''))} to={quoteattr(el.attrs.get('from', self.host))}>"
                           "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
        elif name == "r":
            self._send(f"<a xmlns='urn:xmpp:sm:3' h='{self.handled}'/>")
        for pred, fut in list(self.waiters):
            if not fut.done() and pred(el):
                fut.set_result(el)
                self.waiters.remove((pred, fut))

    # -- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.Parse(data, False)
        except xml.parsers.expat.ExpatError as e:
            self.errors.append(e)
            self.transport.close()

    def connection_lost(self, exc):
        self.closed.set()
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))
        self.waiters.clear()

    # -- client ----------------------------------------------------------
    def _send(self, data):
        if self.transport and not self.transport.is_closing():
            self.transport.write(data.encode())

    async def _wait(self, pred, timeout):
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    async def online(self, timeout=30):
        loop = asyncio.get_running_loop()
        self.closed.clear()
        self.handled = 0
        self.sm = False
        self._new_parser()
        await loop.create_connection(lambda: self, "127.0.0.1", self.port)
        self._send(STREAM_OPEN.format(host=self.host))
        await self._wait(lambda e: e.name == "stream:features", timeout)
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self._send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        res = await self._wait(lambda e: e.name in ("success", "failure"), timeout)
        if res.name != "success":
            raise ConnectionError(f"authentication failed for {self.user}")
        self._new_parser()
        self._send(STREAM_OPEN.format(host=self.host))
        await self._wait(lambda e: e.name == "stream:features", timeout)
        self._send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   f"<resource>{escape(self.resource)}</resource></bind></iq>")
        await self._wait(lambda e: e.name == "iq" and e.attrs.get("id") == "bind1", timeout)
        self._send("<enable xmlns='urn:xmpp:sm:3'/>")
        await self._wait(lambda e: e.name in ("enabled", "failed"), timeout)
        self.sm = True
        self._send("<presence/>")
        # The server reflects the initial presence once it has processed it.
        await self._wait(lambda e: e.name == "presence" and e.attrs.get("from") == self.jid, timeout)
        return self

    def send_chat(self, to, body, mid):
        self._send(f"<message to={quoteattr(to)} id={quoteattr(mid)} type='chat'><body>{escape(body)}</body></message>")

    async def offline(self, timeout=15):
        if self.transport and not self.transport.is_closing():
            self._send("<presence type='unavailable'/></stream:stream>")
            try:
                await asyncio.wait_for(self.closed.wait(), timeout)
            except asyncio.TimeoutError:
                self.transport.abort()

    def is_connected(self):
        return self.transport is not None and not self.transport.is_closing()
