"""Standard benchmark data set: a deterministic directory tree, as Python entries and as LDIF.

Rules:
- Same ``users``/``groups``/``seed`` -> byte-identical output (a ``random.Random(seed)``, no
  clock, no global state).
- Tree: ``dc=example,dc=com`` / ``ou=users`` / ``ou=groups``; users ``uid=userN`` (N = 1..users)
  are inetOrgPerson + posixAccount; ``groups`` groupOfNames ``cn=groupK`` (K = 1..groups).
- ``userPassword`` of ``uid=userN`` is ``{SSHA}`` of ``passwordN`` (salt from the seeded RNG),
  or with ``cleartext=True`` ``passwordN`` itself, for servers to hash as they store it (the
  same RNG draws either way, so the rest of the data set is identical).
- Only a small, fixed share of surnames contain "son" (``SON_FRACTION``), and no first name
  does, so ``(cn=*son*)`` returns a realistic handful of entries, not a third of the tree.
- Entries come parents first; values are ``str`` (UTF-8 on the wire).

CLI: ``python bench/datagen.py [--users N] [--groups G] [--seed S] [--cleartext] [-o FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BASE_DN = "dc=example,dc=com"
USERS_DN = f"ou=users,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "admin"
SON_FRACTION = 0.01

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Karen", "Thomas", "Nancy",
    "Charles", "Lisa", "Daniel", "Betty", "Matthew", "Sandra", "Anthony", "Ashley", "Mark",
    "Kimberly", "Paul", "Emily", "Steven", "Donna", "Andrew", "Michelle", "Kenneth", "Carol",
)
PLAIN_SURNAMES = (
    "Smith", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Moore", "Taylor", "Thomas", "Lee", "Perez", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Walker", "Young", "Allen", "King",
    "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner",
)
SON_SURNAMES = (
    "Johnson", "Anderson", "Wilson", "Jackson", "Thompson", "Robinson", "Nelson", "Peterson",
)


@dataclass(frozen=True)
class Entry:
    """One directory entry: DN plus attribute name -> values (in LDIF order)."""

    dn: str
    attrs: tuple[tuple[str, tuple[str, ...]], ...]

    def get(self, name: str) -> tuple[str, ...]:
        for key, values in self.attrs:
            if key.lower() == name.lower():
                return values
        return ()


def user_dn(n: int) -> str:
    return f"uid=user{n},{USERS_DN}"


def user_password(n: int) -> str:
    return f"password{n}"


def group_dn(k: int) -> str:
    return f"cn=group{k},{GROUPS_DN}"


def ssha(password: str, salt: bytes) -> str:
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _names(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(FIRST_NAMES)
    if rng.random() < SON_FRACTION:
        return first, rng.choice(SON_SURNAMES)
    return first, rng.choice(PLAIN_SURNAMES)


def structural_entries() -> list[Entry]:
    """The base entry and the two organisational units."""
    return [
        Entry(BASE_DN, (
            ("objectClass", ("top", "dcObject", "organization")),
            ("dc", ("example",)),
            ("o", ("Example Inc.",)),
        )),
        Entry(USERS_DN, (("objectClass", ("top", "organizationalUnit")), ("ou", ("users",)))),
        Entry(GROUPS_DN, (("objectClass", ("top", "organizationalUnit")), ("ou", ("groups",)))),
    ]


def generate(users: int = 10_000, groups: int = 100, seed: int = 42,
             cleartext: bool = False) -> Iterator[Entry]:
    """All entries of the data set, parents before children (``cleartext``: passwords as
    given, not ``{SSHA}``)."""
    rng = random.Random(seed)
    yield from structural_entries()
    for n in range(1, users + 1):
        first, last = _names(rng)
        salt = rng.randbytes(8)
        yield Entry(user_dn(n), (
            ("objectClass", ("top", "person", "organizationalPerson", "inetOrgPerson",
                             "posixAccount")),
            ("uid", (f"user{n}",)),
            ("cn", (f"{first} {last}",)),
            ("sn", (last,)),
            ("givenName", (first,)),
            ("mail", (f"user{n}@example.com",)),
            ("uidNumber", (str(10_000 + n),)),
            ("gidNumber", (str(10_000 + (n % groups if groups else 0)),)),
            ("homeDirectory", (f"/home/user{n}",)),
            ("userPassword", (user_password(n) if cleartext
                              else ssha(user_password(n), salt),)),
        ))
    per_group = min(users, 20)
    for k in range(1, groups + 1):
        members = sorted(rng.sample(range(1, users + 1), per_group)) if users else []
        member_dns = tuple(user_dn(m) for m in members) or (ROOT_DN,)
        yield Entry(group_dn(k), (
            ("objectClass", ("top", "groupOfNames")),
            ("cn", (f"group{k}",)),
            ("description", (f"Benchmark group {k}",)),
            ("member", member_dns),
        ))


def _ldif_line(name: str, value: str) -> str:
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<"))
    if safe and not value.endswith(" "):
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode()).decode('ascii')}\n"


def to_ldif(entries: Iterable[Entry]) -> Iterator[str]:
    """LDIF records (one string per entry, blank-line separated)."""
    for entry in entries:
        lines = [_ldif_line("dn", entry.dn)]
        for name, values in entry.attrs:
            lines.extend(_ldif_line(name, value) for value in values)
        yield "".join(lines) + "\n"


def write_ldif(path: str, users: int = 10_000, groups: int = 100, seed: int = 42,
               cleartext: bool = False) -> int:
    """Write the data set to ``path``; returns the number of entries written."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for record in to_ldif(generate(users, groups, seed, cleartext)):
            out.write(record)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cleartext", action="store_true",
                        help="cleartext passwords (passwordN) instead of {SSHA}")
    parser.add_argument("-o", "--output", default="-")
    args = parser.parse_args(argv)
    if args.output == "-":
        for record in to_ldif(generate(args.users, args.groups, args.seed, args.cleartext)):
            sys.stdout.write(record)
    else:
        count = write_ldif(args.output, args.users, args.groups, args.seed, args.cleartext)
        print(f"wrote {count} entries to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
