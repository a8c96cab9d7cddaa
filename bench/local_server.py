"""A throwaway redis-server with the module loaded, for the quick
comparison scripts beside it (bench/store-server-time.py,
bench/first-store.py, bench/mailbox-memory.py), and the users they store to."""
import contextlib
import socket
import subprocess
import tempfile
import time

import redis

# The load of a benchmark must not kick devices or fill mailboxes, and the
# timer must not run between measurements.
BENCH_SETTINGS = (("im.max-pending", 10**9), ("im.sweep-interval", 0),
                  ("im.max-messages", 10**9), ("im.max-bytes", 10**15))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_if_known(r, name, value):
    """CONFIG SET, skipped where the build has no such setting."""
    try:
        r.config_set(name, value)
    except redis.ResponseError:
        pass


def chat_stanza(message_id):
    """The benchmarks' chat message, `message_id` its id (a
    redis-benchmark placeholder, or a `str.format` field)."""
    return ("<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' "
            f"type='chat' id='{message_id}'><body>" + "x" * 60 + "</body></message>")


# A stanza's id for redis-benchmark: three random numbers, so that ids
# seldom repeat in a mailbox (a repeated id is a duplicate, which stores
# nothing).
RANDOM_ID = "x__rand_int__-__rand_int__-__rand_int__"


def register_users(r, count, offline):
    """Users `user:000000000000` ... (`count` of them), each with one device
    `phone` on node `n1`, online, or disconnected with `offline`; the
    benchmarks' `user:__rand_int__` names them."""
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.execute_command("IM.CONNECT", f"user:{i:012d}", "phone", "NODE", "n1")
        if offline:
            pipe.execute_command("IM.DISCONNECT", f"user:{i:012d}", "phone")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


@contextlib.contextmanager
def server(module, more_modules=(), wrapper=(), start_s=5):
    """Debian's redis-server on a free port with `module` and
    `more_modules` (absolute paths), no persistence and BENCH_SETTINGS,
    run under `wrapper` (a command line, such as valgrind's, whose own
    output is discarded) when given;
    waits up to `start_s` seconds for it to answer; yields (client, port)
    and stops it (SIGTERM) afterwards."""
    port = free_port()
    loads = [a for m in (module, *more_modules) for a in ("--loadmodule", m)]
    with tempfile.TemporaryDirectory() as d:
        srv = subprocess.Popen([*wrapper, "redis-server", "--port", str(port), "--save", "", "--dir", d,
                                *loads], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL if wrapper else None)
        try:
            r = redis.Redis(port=port, retry_on_error=[], socket_connect_timeout=1)
            for _ in range(int(start_s / 0.05)):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            for name, value in BENCH_SETTINGS:
                set_if_known(r, name, value)
            yield r, port
        finally:
            srv.terminate()
            srv.wait()
