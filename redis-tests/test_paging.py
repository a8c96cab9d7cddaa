"""IM.OFFLINE.PAGE over a large mailbox (SPEC §4)."""

from helpers import RawError, as_map, digest, message

N = 2500


def fill(r, user, n, prefix="m"):
    """Store n messages in pipelines; return their (seq, id) in order."""
    out = []
    for start in range(0, n, 500):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 500)):
            pipe.execute_command("IM.STORE", user, message(f"{prefix}{i}", body=f"message number {i}"))
        out += [(rep[0], rep[1]) for rep in pipe.execute()]
    return out


def read_all(r, user, device, count=100, after=None):
    """Follow the cursor to the end; return (pages, items)."""
    pages, items = 0, []
    cursor = after
    while True:
        args = ["COUNT", count] + (["AFTER", cursor] if cursor is not None else [])
        cursor, page = r.execute_command("IM.OFFLINE.PAGE", user, device, *args)
        pages += 1
        assert len(page) <= count
        items += page
        if cursor == 0:
            return pages, items
        assert page, "a page with a non-zero cursor must hold messages"
        assert cursor == page[-1][0], "the cursor is the AFTER of the next page"
        assert pages <= N, "the cursor never reaches 0"


def offline_device(r, user, device):
    r.execute_command("IM.CONNECT", user, device)
    r.execute_command("IM.DISCONNECT", user, device)


def test_page_through_2500(r):
    offline_device(r, "alice", "laptop")
    stored = fill(r, "alice", N)
    assert all(a[0] < b[0] for a, b in zip(stored, stored[1:]))
    d = digest(r, "alice")

    pages, items = read_all(r, "alice", "laptop", count=100)
    assert pages == N // 100, "the page that reaches the end carries cursor 0"
    assert [(it[0], it[1]) for it in items] == stored          # complete and in order
    assert len({it[0] for it in items}) == N                    # no duplicates
    assert all(it[3] == message(f"m{i}", body=f"message number {i}") for i, it in enumerate(items))
    assert digest(r, "alice") == d, "paging is read-only"

    # AFTER from the middle
    mid = stored[1233][0]
    cursor, page = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "AFTER", mid, "COUNT", 100)
    assert [(it[0], it[1]) for it in page] == stored[1234:1334]
    assert cursor == stored[1333][0]
    pages, rest = read_all(r, "alice", "laptop", count=100, after=mid)
    assert [(it[0], it[1]) for it in rest] == stored[1234:]
    # AFTER a value between two seqs, or before the first
    cursor, page = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "AFTER", stored[0][0] - 1, "COUNT", 2)
    assert [it[1] for it in page] == [b"m0", b"m1"]
    # the largest page
    cursor, page = r.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", 1000)
    assert len(page) == 1000 and cursor == stored[999][0]

    # acking everything empties the mailbox
    assert r.execute_command("IM.ACK", "alice", "laptop", "UPTO", stored[-1][0]) == N
    assert as_map(r.execute_command("IM.INFO", "alice"))["messages"] == 0


def test_count_above_the_maximum(r, raw):
    """COUNT is at most 1000: a larger one is refused, or served as 1000."""
    offline_device(r, "alice", "laptop")
    fill(r, "alice", 1200)
    reply = raw.call("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", 5000)
    if isinstance(reply, RawError):
        assert str(reply).startswith("ERR") and "COUNT" in str(reply).upper(), reply
    else:
        assert len(reply[1]) <= 1000


def test_pages_skip_acked_messages(r):
    offline_device(r, "alice", "laptop")
    stored = fill(r, "alice", 1000)
    acked = [mid for i, (_, mid) in enumerate(stored) if i % 7 == 3]
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(acked), 50):
        pipe.execute_command("IM.ACK", "alice", "laptop", *acked[i:i + 50])
    assert sum(pipe.execute()) == len(acked)

    want = [s for s in stored if s[1] not in set(acked)]
    pages, items = read_all(r, "alice", "laptop", count=37)
    assert [(it[0], it[1]) for it in items] == want
    summary = as_map(r.execute_command("IM.OFFLINE.INFO", "alice", "laptop"))
    assert (summary["count"], summary["first"], summary["last"]) == (len(want), want[0][0], want[-1][0])
    assert as_map(r.execute_command("IM.INFO", "alice"))["messages"] == len(want)


def test_each_device_pages_its_own_view(r):
    offline_device(r, "alice", "phone")
    early = fill(r, "alice", 300, prefix="e")
    offline_device(r, "alice", "laptop")          # registered later
    late = fill(r, "alice", 300, prefix="l")

    _, phone = read_all(r, "alice", "phone", count=100)
    _, laptop = read_all(r, "alice", "laptop", count=100)
    assert [(it[0], it[1]) for it in phone] == early + late
    assert [(it[0], it[1]) for it in laptop] == late

    # the phone acks the first half of everything, by UPTO
    half = (early + late)[299][0]
    assert r.execute_command("IM.ACK", "alice", "phone", "UPTO", half) == 300
    _, phone = read_all(r, "alice", "phone", count=100)
    assert [(it[0], it[1]) for it in phone] == late
    info = as_map(r.execute_command("IM.INFO", "alice"))
    assert (info["messages"], info["first"]) == (300, late[0][0])
