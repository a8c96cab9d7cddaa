"""Bad input: a clear error, nothing changed, never a crash (SPEC §3, §8).

Each case runs against a mailbox in a known state ("alice": a phone online
with a pending message, a laptop offline with offline messages) and against
a user with no key ("carol"); afterwards alice's DEBUG DIGEST-VALUE, IM.INFO
and IM.DEVICES are what they were and carol's key does not exist."""

import pytest

from helpers import digest, expect_error, message

GOOD = message("new1")


def setup_alice(r):
    r.execute_command("IM.CONNECT", "alice", "laptop", "NODE", "node-1")
    r.execute_command("IM.DISCONNECT", "alice", "laptop")
    r.execute_command("IM.CONNECT", "alice", "phone", "NODE", "node-1")
    for i in range(4):
        r.execute_command("IM.STORE", "alice", message(f"m{i}"))
    r.execute_command("IM.ACK", "alice", "phone", "m0", "m1")
    r.execute_command("IM.ACK", "alice", "laptop", "m0")


def state(r):
    return (digest(r, "alice"), r.execute_command("IM.INFO", "alice"),
            r.execute_command("IM.DEVICES", "alice"), r.exists("carol"))


def check_unchanged(r, raw, args, check):
    setup_alice(r)
    before = state(r)
    assert before[0] != "0" * 40, "DEBUG DIGEST-VALUE of a mailbox must not be empty"
    for user in ("alice", "carol"):
        a = [user if x == "USER" else x for x in args]
        err = expect_error(raw, *a)
        check(err)
        assert state(r) == before, f"{a!r} changed something"
    assert raw.call("PING") == b"PONG"


def starts_err(err):
    assert err.startswith("ERR "), err
    assert "internal error" not in err.lower(), err


def mentions_stanza(err):
    starts_err(err)
    assert "stanza" in err.lower(), err
    assert err.isprintable(), err


def over(n):
    body = "x" * n
    return message("big", body=body)


BAD_STANZAS = {
    "malformed": b"<message id='b'><body>hi</message>",
    "unclosed": b"<message id='b'><body>hi</body>",
    "two-roots": b"<message id='b'/><message id='c'/>",
    "trailing-text": b"<message id='b'/>junk",
    "not-a-stanza-root": b"<foo id='b'><body>hi</body></foo>",
    "text": b"hello",
    "empty": b"",
    "unquoted-attribute": b"<message id=b type=chat/>",
    "bad-entity": b"<message id='b'><body>&nope;</body></message>",
    "control-character": b"<message id='b'><body>a\x1bb</body></message>",
    "nul": b"<message id='b'><body>a\x00b</body></message>",
    "reference-to-control": b"<message id='b'><body>&#1;</body></message>",
    "reference-to-surrogate": b"<message id='b'><body>&#xD800;</body></message>",
    "fffe": "<message id='b'><body>\ufffe</body></message>".encode(),
    "cdata-end-in-text": b"<message id='b'><body>a]]>b</body></message>",
    "double-hyphen-in-comment": b"<message id='b'><!-- a -- b --><body>x</body></message>",
    "undeclared-prefix": b"<message id='b'><x:body>hi</x:body></message>",
    "undeclaring-a-prefix": b"<message id='b' xmlns:p=''><body>hi</body></message>",
    "repeated-non-ascii-attribute": "<message \u0100='1' \u0100='2'/>".encode(),
    "doctype": b"<!DOCTYPE message><message id='b'/>",
    "over-default-limit": over(65536),
}


@pytest.mark.parametrize("case", BAD_STANZAS)
def test_bad_stanza(r, raw, case):
    check_unchanged(r, raw, ["IM.STORE", "USER", BAD_STANZAS[case]], mentions_stanza)


def test_stanza_over_max_stanza_bytes(r, raw):
    r.config_set("im.max-stanza-bytes", "1024")
    assert r.execute_command("IM.STORE", "bob", over(900))[1] == b"big"
    check_unchanged(r, raw, ["IM.STORE", "USER", over(1024)], mentions_stanza)


def arity_error(cmd):
    def check(err):
        assert err.lower() == f"err wrong number of arguments for '{cmd.lower()}' command", err
    return check


ARITY = [
    ["IM.CONNECT", "USER"],
    ["IM.DISCONNECT", "USER"],
    ["IM.DISCONNECT", "USER", "phone", "extra"],
    ["IM.DEVICES", "USER", "extra"],
    ["IM.FORGET", "USER"],
    ["IM.FORGET", "USER", "phone", "extra"],
    ["IM.STORE", "USER"],
    ["IM.ACK", "USER", "phone"],
    ["IM.OFFLINE.INFO", "USER"],
    ["IM.OFFLINE.PAGE", "USER"],
    ["IM.INFO", "USER", "extra"],
]


@pytest.mark.parametrize("args", ARITY, ids=lambda a: "-".join(a[0:1] + [str(len(a))]))
def test_wrong_arity(r, raw, args):
    check_unchanged(r, raw, args, arity_error(args[0]))


@pytest.mark.parametrize("cmd", ["IM.DEVICES", "IM.INFO"])
def test_wrong_arity_no_key(raw, cmd):
    arity_error(cmd)(expect_error(raw, cmd))


def mentions(word):
    def check(err):
        starts_err(err)
        assert word.lower() in err.lower(), err
    return check


UNKNOWN_OPTION = [
    ["IM.STORE", "USER", GOOD, "BOGUS"],
    ["IM.STORE", "USER", GOOD, "ID", "x", "BOGUS"],
    ["IM.STORE", "USER", GOOD, "FORCE", "BOGUS"],
    ["IM.CONNECT", "USER", "phone", "BOGUS", "node-2"],
    ["IM.OFFLINE.INFO", "USER", "laptop", "BOGUS"],
    ["IM.OFFLINE.INFO", "USER", "laptop", "IDS", "BOGUS", "5"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "BOGUS", "5"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "COUNT", "5", "BOGUS"],
]


@pytest.mark.parametrize("args", UNKNOWN_OPTION, ids=lambda a: a[0] + "-" + str(a.index("BOGUS")))
def test_unknown_option(r, raw, args):
    check_unchanged(r, raw, args, mentions("BOGUS"))


def test_error_text_keeps_non_ascii_input(r, raw):
    """An error quoting a character past ASCII (U+0100 once became NUL and
    aborted the server) sends it as UTF-8."""
    check_unchanged(r, raw, ["IM.OFFLINE.PAGE", "USER", "laptop", "\u0100\u00e9", "5"],
                    mentions("'\u0100\u00e9'"))


SYNTAX = [
    ["IM.CONNECT", "USER", "phone", "NODE"],
    ["IM.STORE", "USER", GOOD, "ID"],
    ["IM.STORE", "USER", GOOD, "DEVICES"],
    ["IM.STORE", "USER", GOOD, "DEVICES", "2", "phone"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "COUNT"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "AFTER"],
    ["IM.OFFLINE.INFO", "USER", "laptop", "IDS", "LIMIT"],
]


@pytest.mark.parametrize("args", SYNTAX, ids=lambda a: a[0] + "-" + a[-1])
def test_missing_option_value(r, raw, args):
    check_unchanged(r, raw, args, starts_err)


NOT_A_NUMBER = [
    ["IM.OFFLINE.PAGE", "USER", "laptop", "COUNT", "ten"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "COUNT", "-1"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "AFTER", "abc"],
    ["IM.OFFLINE.PAGE", "USER", "laptop", "AFTER", "1.5"],
    ["IM.OFFLINE.INFO", "USER", "laptop", "IDS", "LIMIT", "many"],
    ["IM.ACK", "USER", "phone", "UPTO", "xyz"],
    ["IM.ACK", "USER", "phone", "UPTO", "-3"],
    ["IM.STORE", "USER", GOOD, "DEVICES", "one", "phone"],
    ["IM.STORE", "USER", GOOD, "DEVICES", "99999999999999999999", "phone"],
]


@pytest.mark.parametrize("args", NOT_A_NUMBER, ids=lambda a: a[0] + "-" + a[-1] if a[-1] != "phone" else a[0] + "-" + a[-2])
def test_not_a_number(r, raw, args):
    check_unchanged(r, raw, args, starts_err)


LONG = "d" * 257
BAD_NAMES = [
    ["IM.CONNECT", "USER", "phone", "NODE", "node 1"],
    ["IM.CONNECT", "USER", "phone", "NODE", "node/1"],
    ["IM.CONNECT", "USER", "phone", "NODE", "n\u00f6de"],
    ["IM.CONNECT", "USER", "phone", "NODE", "n" * 257],
    ["IM.CONNECT", "USER", LONG],
    ["IM.ACK", "USER", LONG, "m2"],
    ["IM.STORE", "USER", GOOD, "DEVICES", "1", LONG],
    ["IM.DISCONNECT", "USER", LONG],
    ["IM.DISCONNECT", "USER", ""],
    ["IM.FORGET", "USER", LONG],
    ["IM.FORGET", "USER", ""],
]


@pytest.mark.parametrize("args", BAD_NAMES, ids=["node-space", "node-slash", "node-non-ascii", "node-257",
                                                 "device-257", "ack-device-257", "store-device-257",
                                                 "disconnect-device-257", "disconnect-device-empty",
                                                 "forget-device-257", "forget-device-empty"])
def test_bad_names(r, raw, args):
    check_unchanged(r, raw, args, starts_err)


def test_longest_names_are_accepted(r):
    node = "A-Za-z0-9._:-" + "n" * 243
    device = "d" * 256
    assert len(node) == 256
    r.execute_command("IM.CONNECT", "alice", device, "NODE", node)
    assert r.execute_command("IM.DEVICES", "alice")[0][1] == device.encode()


WRONGTYPE = [
    ["IM.CONNECT", "text", "phone"],
    ["IM.DISCONNECT", "text", "phone"],
    ["IM.DEVICES", "text"],
    ["IM.FORGET", "text", "phone"],
    ["IM.STORE", "text", GOOD],
    ["IM.ACK", "text", "phone", "m1"],
    ["IM.ACK", "text", "phone", "UPTO", "5"],
    ["IM.OFFLINE.INFO", "text", "phone"],
    ["IM.OFFLINE.PAGE", "text", "phone"],
    ["IM.INFO", "text"],
]


@pytest.mark.parametrize("args", WRONGTYPE, ids=lambda a: a[0] + "-" + str(len(a)))
def test_wrong_type(r, raw, args):
    r.set("text", "a string")
    r.rpush("list", "x")
    d = digest(r, "text")
    err = expect_error(raw, *args)
    assert err.startswith("WRONGTYPE"), err
    assert digest(r, "text") == d and r.get("text") == b"a string"
    err = expect_error(raw, *[("list" if x == "text" else x) for x in args])
    assert err.startswith("WRONGTYPE"), err
    assert r.lrange("list", 0, -1) == [b"x"]


def test_bad_settings(r, raw):
    before = r.config_get("im.*")
    for name, value in [("max-messages", "abc"), ("max-messages", "-1"), ("quota-policy", "sometimes"),
                        ("archive", "maybe"), ("max-stanza-bytes", "0x10"), ("ack-timeout", "")]:
        err = expect_error(raw, "CONFIG", "SET", f"im.{name}", value)
        assert err.startswith("ERR"), err
    assert r.config_get("im.*") == before


@pytest.mark.parametrize("args", [["max-messages", "abc"], ["quota-policy", "sometimes"],
                                  ["no-such-setting", "1"], ["max-messages"]],
                         ids=["not-a-number", "bad-enum", "unknown", "no-value"])
def test_bad_module_arguments_refuse_to_load(make_server, args):
    s = make_server(module_args=args, start=False)
    s.spawn()
    rc = s.wait_exit_or_ready()
    assert rc is not None, f"the server started with module arguments {args}"
    assert rc > 0, f"exit code {rc}: killed by a signal?"
    log = s.log()
    assert "panicked" not in log and "crashed by signal" not in log
    assert "Module" in log or "module" in log


def test_server_survives_a_burst_of_bad_input(r, raw):
    setup_alice(r)
    before = state(r)
    pipe = r.pipeline(transaction=False)
    bad = list(BAD_STANZAS.values())
    for i in range(500):
        pipe.execute_command("IM.STORE", "alice", bad[i % len(bad)])
        pipe.execute_command("IM.OFFLINE.PAGE", "alice", "laptop", "COUNT", "x")
    replies = pipe.execute(raise_on_error=False)
    assert all(isinstance(x, Exception) for x in replies)
    assert state(r) == before


@pytest.mark.parametrize("args", [
    ["IM.APPLY", "USER", b"\x01\x02"],
    ["IM.LOAD", "USER", "HEAD", b"\x00\x00\x00\x00"],
    ["IM.LOAD", "USER", "MSGS", b""],
], ids=["apply", "load-head", "load-msgs"])
def test_internal_commands_are_refused_to_clients(r, raw, args):
    """IM.APPLY and IM.LOAD carry what the module writes for replicas and the
    AOF; a client sending them gets an error and changes nothing."""
    def check(err):
        starts_err(err)
        assert "not sent by clients" in err, err

    check_unchanged(r, raw, args, check)
