"""Command encoding: msgpack round trip for every command type, and bad input."""

from __future__ import annotations

import msgpack
import pytest

from oba.directory.commands import (
    AddCommand,
    Command,
    CommandDecodeError,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
    decode,
    encode,
)

T = "20240101120000Z"
CMDS: list[Command] = [
    AddCommand(
        "uid=a,dc=x",
        (("uid", (b"a",)), ("jpegPhoto", (b"\x00\xff",))),
        "r1",
        "cn=admin",
        T,
        "6b1e0d44-3f3e-4a8e-9a53-0e1f6c7a3c11",
    ),
    ModifyCommand(
        "uid=a,dc=x",
        ((0, "cn", (b"x", b"y")), (1, "sn", ()), (3, "n", (b"1",))),
        "r2",
        "cn=admin",
        T,
    ),
    DeleteCommand("uid=a,dc=x", "r3", "", T),
    ModifyDNCommand("uid=a,dc=x", "uid=b", True, None, "r4", "cn=admin", T),
    ModifyDNCommand("uid=a,dc=x", "uid=b", False, "ou=y,dc=x", "r5", "cn=admin", T),
]


@pytest.mark.parametrize("cmd", CMDS)
def test_round_trip(cmd: Command) -> None:
    data = encode(cmd)
    assert isinstance(data, bytes)
    assert decode(data) == cmd


def test_binary_values_survive() -> None:
    cmd = decode(encode(CMDS[0]))
    assert isinstance(cmd, AddCommand)
    assert cmd.attributes[1][1] == (b"\x00\xff",)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"t": "zzz", "rid": "", "who": "", "ts": ""}),
        msgpack.packb({"t": "del"}),
        msgpack.packb([1, 2]),
    ],
)
def test_bad_input(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode(data)
