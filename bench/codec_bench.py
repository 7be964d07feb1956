"""Micro-benchmark of the LDAP codec hot paths (baseline for later performance work).

Run: .venv/bin/python bench/codec_bench.py [iterations]
Prints microseconds per operation for: decoding a typical SearchRequest, encoding a
SearchResultEntry with 10 attributes (generic encoder and fast path), encoding a result, and
framing 1,000 small PDUs through LDAPDecoder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from oba.protocol.codec import (
    OP_SEARCH_RESULT_DONE,
    LDAPDecoder,
    decode_message,
    encode_message,
    encode_result,
    encode_search_entry,
)
from oba.protocol.messages import (
    And,
    Control,
    Deref,
    Equality,
    LDAPMessage,
    Or,
    Present,
    Scope,
    SearchRequest,
    SearchResultEntry,
    Substrings,
)

SEARCH = encode_message(
    LDAPMessage(
        42,
        SearchRequest(
            "ou=people,dc=example,dc=com",
            Scope.SUB,
            Deref.NEVER,
            500,
            30,
            False,
            And(
                (
                    Equality("objectClass", b"inetOrgPerson"),
                    Or((Equality("uid", b"jdoe"), Substrings("cn", b"John", (), None))),
                    Present("mail"),
                )
            ),
            ("cn", "sn", "mail", "uid"),
        ),
        (Control("1.2.840.113556.1.4.319", False, b"0\x05\x02\x01\x64\x04\x00"),),
    )
)

DN = "uid=jdoe,ou=people,dc=example,dc=com"
ATTRS: list[tuple[str, list[bytes]]] = [
    ("objectClass", [b"top", b"person", b"organizationalPerson", b"inetOrgPerson"]),
    ("uid", [b"jdoe"]),
    ("cn", [b"John Doe"]),
    ("sn", [b"Doe"]),
    ("givenName", [b"John"]),
    ("mail", [b"jdoe@example.com"]),
    ("telephoneNumber", [b"+1 555 0100"]),
    ("title", [b"Engineer"]),
    ("description", [b"x" * 120]),
    ("employeeNumber", [b"12345"]),
]
ENTRY = LDAPMessage(42, SearchResultEntry(DN, tuple((n, tuple(v)) for n, v in ATTRS)))
STREAM = encode_message(LDAPMessage(7, SearchResultEntry("cn=a", (("cn", (b"a",)),)))) * 1000


def frame_stream() -> None:
    decoder = LDAPDecoder()
    decoder.feed(STREAM)
    while decoder.next_message() is not None:
        pass


def bench(name: str, fn: Callable[[], object], iterations: int, per_call: int = 1) -> None:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - start)
    print(f"{name:<44} {best / iterations / per_call * 1e6:8.2f} µs/op")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print(f"SearchRequest {len(SEARCH)} bytes, entry {len(encode_message(ENTRY))} bytes, n={n}")
    bench("decode SearchRequest", lambda: decode_message(SEARCH), n)
    bench("encode SearchResultEntry (encode_message)", lambda: encode_message(ENTRY), n)
    bench("encode SearchResultEntry (fast path)", lambda: encode_search_entry(42, DN, ATTRS), n)
    bench(
        "encode SearchResultDone (encode_result)",
        lambda: encode_result(42, OP_SEARCH_RESULT_DONE, 0),
        n,
    )
    bench("frame+decode small entry PDU (x1000/feed)", frame_stream, max(n // 1000, 3), 1000)


if __name__ == "__main__":
    main()
