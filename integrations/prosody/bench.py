#!/usr/bin/env python3
"""Load test of the Prosody integration (issue 11, case 6), bounded and
not part of the default test run.

N users (default 200), each online with one device (phone); a share of
them (default 50) also have a second device (laptop) that has been online
once and stays offline during the run. The users exchange M messages
(default 20,000): each message goes from a random user to another random
user's bare JID, paced at --rate messages per second (0: as fast as the
sender loop goes). Then the laptops log in and fetch what they missed.

Checks, for Prosody with mod_redis_im: every message reaches every device
of its recipient exactly once, in order per sender, and Redis holds none
at the end. The same run against stock Prosody (mod_offline, no Redis)
gives the comparison: its delivery to online devices and its latency (the
laptops get nothing there: offline storage is used only when no resource
is online).

Latency is from the sender's send() to the recipient's receipt of the
stanza, both clients in this process (one clock). Added latency is
redis-im's figure minus stock's.

    integrations/prosody/bench.py                      # both stacks
    integrations/prosody/bench.py --only redis-im --messages 2000
"""

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "test"))

import slixmpp  # noqa: E402

import harness  # noqa: E402
from harness import HOST  # noqa: E402
from leanclient import LeanClient  # noqa: E402


class LeanLoadClient(LeanClient):
    """The same records from the lean client."""

    def __init__(self, user, port, resource="phone"):
        super().__init__(user, port, host=HOST, resource=resource, on_message=self._record)
        self.got = []

    @staticmethod
    def _record(self, el):
        body = el.find("body")
        if body is None:
            return
        now = time.monotonic()
        sender, n, sent = "".join(body.text).split(" ")
        delays = sum(1 for c in el.children if c.name == "delay" and c.attrs.get("xmlns") == "urn:xmpp:delay")
        self.got.append((sender, int(n), float(sent), now, delays))


class LoadClient(harness.Client):
    """Records (sender, n, sent_at, received_at, delays) from bodies
    "sender n sent_at"."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.plugin["xep_0198"].window = 1000  # no <r/> of its own after each stanza
        self.got = []

    def _message(self, msg):
        if msg["type"] == "error":
            self.errors.append(msg)
            return
        body = msg["body"]
        if not body:
            return
        now = time.monotonic()
        sender, n, sent = body.split(" ")
        delays = len(msg.xml.findall("{urn:xmpp:delay}delay"))
        self.got.append((sender, int(n), float(sent), now, delays))


async def connect_all(clients, batch=25, timeout=60):
    for i in range(0, len(clients), batch):
        await asyncio.gather(*(c.online(timeout) for c in clients[i:i + batch]))


async def disconnect_all(clients, batch=50):
    for i in range(0, len(clients), batch):
        await asyncio.gather(*(c.offline(15) for c in clients[i:i + batch] if c.is_connected()),
                             return_exceptions=True)


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


async def run_load(stack, args):
    rnd = random.Random(args.seed)
    users = [f"u{i}" for i in range(args.users)]
    laptop_users = users[:args.laptops]
    port = stack.prosody.port
    client_class = LeanLoadClient if args.client == "lean" else LoadClient
    phones = {u: client_class(u, port, resource="phone") for u in users}
    laptops = {u: client_class(u, port, resource="laptop") for u in laptop_users}

    # The laptops have been online once: registered devices.
    await connect_all(list(laptops.values()))
    await disconnect_all(list(laptops.values()))
    await connect_all(list(phones.values()))
    await asyncio.sleep(0.5)

    # Every message: (sender, n, recipient).
    plan = []
    counters = {u: 0 for u in users}
    for _ in range(args.messages):
        s = rnd.choice(users)
        r = rnd.choice(users)
        while r == s:
            r = rnd.choice(users)
        plan.append((s, counters[s], r))
        counters[s] += 1

    expected_phone = {u: 0 for u in users}
    for _, _, r in plan:
        expected_phone[r] += 1
    total_phone = args.messages

    t0 = time.monotonic()
    for k, (s, n, r) in enumerate(plan):
        if args.rate > 0:
            due = t0 + k / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif k % 200 == 0:
                await asyncio.sleep(0)
        elif k % 50 == 0:
            await asyncio.sleep(0)
        phones[s].send_chat(f"{r}@{HOST}", f"{s} {n} {time.monotonic():.6f}", f"{s}-{n}")
        if k == 0:
            cpu0 = cpu_seconds(stack)
    t_sent = time.monotonic()

    def phone_count():
        return sum(len(c.got) for c in phones.values())
    deadline = time.monotonic() + args.timeout
    while phone_count() < total_phone and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    t_done = time.monotonic()
    cpu1 = cpu_seconds(stack)
    await asyncio.sleep(1.0)  # late duplicates would show

    # The laptops come back and fetch what they missed.
    t_laptops = time.monotonic()
    await connect_all(list(laptops.values()))
    expected_laptop_total = sum(expected_phone[u] for u in laptop_users)
    deadline = time.monotonic() + args.timeout
    while (not stack.stock and sum(len(c.got) for c in laptops.values()) < expected_laptop_total
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    t_laptops_done = time.monotonic()
    await asyncio.sleep(1.0 if not stack.stock else 2.0)

    # Checks: per device, per sender, the n's must be exactly the sent ones, in order.
    sent_by_pair = {}
    for s, n, r in plan:
        sent_by_pair.setdefault((r, s), []).append(n)

    def check(device_clients, live):
        devices_ok = 0
        dup = lost = reordered = stamps_bad = 0
        for u, c in device_clients.items():
            by_sender = {}
            for s, n, _, _, delays in c.got:
                by_sender.setdefault(s, []).append(n)
                if live and delays != 0:
                    stamps_bad += 1
                if not live and delays != 1:
                    stamps_bad += 1
            ok = True
            for (r, s), ns in sent_by_pair.items():
                if r != u:
                    continue
                got = by_sender.get(s, [])
                if got != ns:
                    ok = False
                    dup += len(got) - len(set(got))
                    lost += len(set(ns) - set(got))
                    if sorted(set(got)) != [x for x in dict.fromkeys(got)]:
                        reordered += 1
            extra = set(by_sender) - {s for (r, s) in sent_by_pair if r == u}
            if extra:
                ok = False
            devices_ok += ok
        return {"devices": len(device_clients), "devices_exact": devices_ok, "duplicates": dup,
                "lost": lost, "reordered_pairs": reordered, "bad_stamps": stamps_bad}

    phone_check = check(phones, live=True)
    laptop_check = check(laptops, live=False)
    latencies = [(recv - sent) * 1000 for c in phones.values() for (_, _, sent, recv, _) in c.got]
    errors = sum(len(c.errors) for c in phones.values())

    redis_messages = None
    if stack.redis:
        deadline = time.monotonic() + 15
        while True:
            redis_messages = sum(stack.redis.info(f"{u}@{HOST}".encode())["messages"] for u in users)
            if redis_messages == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)

    redis_stats = None
    if stack.redis:
        cs = stack.redis.client.info("commandstats")
        redis_stats = {k: {"calls": v["calls"], "usec_per_call": v["usec_per_call"]}
                       for k, v in cs.items() if k.startswith("cmdstat_im") or k in ("cmdstat_publish",)}
        im = stack.redis.client.info("im")
        redis_stats["im"] = {k: v for k, v in im.items() if any(w in k for w in (
            "stored", "acked", "resent", "expired", "kicked", "sweep", "rejected"))}
    await disconnect_all(list(phones.values()) + list(laptops.values()))
    delivered = phone_count()
    return {
        "stack": "stock" if stack.stock else "redis-im",
        "users": args.users, "laptops": args.laptops, "messages": args.messages, "rate": args.rate,
        "send_seconds": round(t_sent - t0, 3),
        "deliver_seconds": round(t_done - t0, 3),
        "msgs_per_second": round(delivered / (t_done - t0), 1),
        "cpu_ms_per_message": {k: round((cpu1[k] - cpu0[k]) * 1000 / max(1, delivered), 3) for k in cpu0},
        "delivered_live": delivered,
        "latency_ms": {"median": round(statistics.median(latencies), 2) if latencies else None,
                       "p90": round(percentile(latencies, 90), 2), "p99": round(percentile(latencies, 99), 2),
                       "max": round(max(latencies), 2) if latencies else None},
        "phones": phone_check,
        "laptops": laptop_check,
        "laptops_fetch_seconds": round(t_laptops_done - t_laptops, 3),
        "errors_to_senders": errors,
        "redis_messages_left": redis_messages,
        "redis_stats": redis_stats,
    }


def cpu_seconds(stack):
    """CPU time (user + system) of Prosody and Redis so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, proc in (("prosody", stack.prosody.proc), ("redis", stack.redis.proc if stack.redis else None)):
        if proc is None:
            continue
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def machine():
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    prosody = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"], capture_output=True, text=True).stdout
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    return {"cpu": cpu, "cores": os.cpu_count(), "prosody": prosody, "redis": redis_v,
            "python": platform.python_version(), "slixmpp": slixmpp.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--laptops", type=int, default=50, help="users with a second device, offline during the run")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500, help="messages per second (0: unpaced)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for deliveries")
    ap.add_argument("--only", choices=["redis-im", "stock"])
    ap.add_argument("--nagle", choices=["on", "off"], default="on", help="Prosody's network_settings.nagle")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--client", choices=["lean", "slixmpp"], default="lean",
                    help="lean: leanclient.py (default); slixmpp: the tests' client (costlier per stanza)")
    ap.add_argument("--ack-timeout", type=int, default=30000, help="the module's ack-timeout (ms)")
    ap.add_argument("--resend-interval", type=int, default=0,
                    help="the module's resend-interval (ms); 0, as docs/prosody.md advises for Prosody")
    args = ap.parse_args()
    harness.quiet_slixmpp()
    users = [f"u{i}" for i in range(args.users)]
    results = []
    for kind in ("stock", "redis-im"):
        if args.only and args.only != kind:
            continue
        stack = harness.Stack(stock=(kind == "stock"), settings={"ack-timeout": args.ack_timeout,
                                                                "resend-interval": args.resend_interval, "sweep-interval": 100},
                              hibernation=600, nagle=(args.nagle == "on"))
        stack.prosody.register(users)
        stack.prosody.start()
        try:
            r = asyncio.run(run_load(stack, args))
            r["prosody_log_errors"] = len([l for l in stack.prosody.errors() if "certmanager" not in l])
            results.append(r)
            print(json.dumps(r, indent=1), flush=True)
        finally:
            stack.close(keep=bool(os.environ.get("KEEP_TMP")))
    out = {"machine": machine(), "nagle": args.nagle, "client": args.client,
           "module_settings": {"ack-timeout": args.ack_timeout, "resend-interval": args.resend_interval},
           "load_average_at_end": os.getloadavg(), "results": results}
    by = {r["stack"]: r for r in results}
    if "stock" in by and "redis-im" in by:
        s, i = by["stock"]["latency_ms"], by["redis-im"]["latency_ms"]
        out["added_latency_ms"] = {"median": round(i["median"] - s["median"], 2), "p99": round(i["p99"] - s["p99"], 2)}
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if "redis-im" in by:
        r = by["redis-im"]
        ok = (r["phones"]["devices_exact"] == r["phones"]["devices"]
              and r["laptops"]["devices_exact"] == r["laptops"]["devices"]
              and r["redis_messages_left"] == 0 and r["errors_to_senders"] == 0)
        print("redis-im: every device, every message, exactly once, in order per sender:", "yes" if ok else "NO")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
