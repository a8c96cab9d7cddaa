#!/usr/bin/env python3
"""Instructions per call of a pending IM.STORE and of the floor of a
module's store (bench/floor's FLOOR.STORE), counted by callgrind in the
commands' handlers, each with the parts it calls.

    python3 bench/store-callgrind.py IM.so FLOOR.so [--users 100000]
        [--stores 200000]

One redis-server (Debian's, with `bench/local_server.py`'s settings)
under `valgrind --tool=callgrind --collect-atstart=no
--toggle-collect=call` (every command's `call()`, nothing between them)
with both modules: `--users` users, each with one
device `phone` online (`user:<12 digits>`), and as many floor keys
(`floor:<12 digits>`); then `redis-benchmark -c 8 -P 16 -n <stores> -r
<users>` of `IM.STORE user:__rand_int__ <stanza>` and of `FLOOR.STORE
floor:__rand_int__ <stanza>`. Prints, for each handler, its instructions a
call and those of every function it calls (inclusive) a call of the
handler. Needs valgrind and callgrind_annotate (Debian's valgrind); takes
a minute at 100,000 users on two cores. The registrations are counted
too, under their own handlers, and left out of the figures.
"""
import argparse
import os
import re
import subprocess
import tempfile

from local_server import RANDOM_ID, chat_stanza, server

STANZA = chat_stanza(RANDOM_ID)
# A handler's function, as callgrind_annotate names it.
HANDLERS = (("IM.STORE", "redis_im::commands::store::store"),
            ("FLOOR.STORE", "im_bench_floor::store_command"))
LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+([*>]) +(.*)$")


def fill(r, users):
    pipe = r.pipeline(transaction=False)
    for i in range(users):
        pipe.execute_command("IM.CONNECT", f"user:{i:012d}", "phone", "NODE", "n1")
        pipe.execute_command("FLOOR.INIT", f"floor:{i:012d}")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def callees(tree, handler):
    """(instructions, calls) of `handler`, and [(instructions, name)] of
    what it calls, from `callgrind_annotate --tree=calling`."""
    total, parts, inside = None, [], False
    for line in tree.splitlines():
        m = LINE.match(line)
        if not m:
            if inside:
                break
            continue
        count, mark, name = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        if mark == "*":
            if inside:
                break
            if f"{handler} [" in name:
                inside, total = True, count
        elif inside:
            parts.append((count, name))
    return total, parts


def calls_of(parts_tree, handler):
    """How many times the handler was called (its callers' `(Nx)`)."""
    n = 0
    for line in parts_tree.splitlines():
        m = LINE.match(line)
        if m and m.group(2) == ">" and f"{handler} (" in m.group(3):
            c = re.search(r"\(([\d,]+)x\)", m.group(3))
            if c:
                n += int(c.group(1).replace(",", ""))
    return n


def short(name):
    name = re.sub(r" \(\d[\d,]*x\)", "", name)
    name = re.sub(r" \[[^\]]*\]$", "", name)
    return name.split(":", 1)[1] if "/" in name.split(":", 1)[0] else name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module")
    ap.add_argument("floor")
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--stores", type=int, default=200000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "callgrind.out")
        valgrind = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=call",
                    f"--callgrind-out-file={out}"]
        # The server stops (and callgrind writes its file) as the block ends.
        with server(os.path.abspath(opts.module), [os.path.abspath(opts.floor)], valgrind,
                    start_s=60) as (r, port):
            fill(r, opts.users)
            for args in (["IM.STORE", "user:__rand_int__", STANZA],
                         ["FLOOR.STORE", "floor:__rand_int__", STANZA]):
                subprocess.run(["redis-benchmark", "-p", str(port), "-c", "8", "-P", "16",
                                "-n", str(opts.stores), "-r", str(opts.users), "-q", *args],
                               stdout=subprocess.DEVNULL, check=True)
        tree = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=calling", out],
                              capture_output=True, text=True, check=True).stdout
    print(f"{opts.users} users, {opts.stores} calls of each; instructions a call, inclusive")
    for command, handler in HANDLERS:
        total, parts = callees(tree, handler)
        calls = calls_of(tree, handler)
        if not total or not calls:
            print(f"{command}: its handler was not found in the profile")
            continue
        print(f"\n{command}: {total / calls:,.0f}")
        for count, name in sorted(parts, reverse=True):
            per = count / calls
            if per >= 20:
                print(f"  {per:>8,.0f}  {short(name)}")


if __name__ == "__main__":
    main()
