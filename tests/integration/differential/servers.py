"""The reference slapd of the differential harness: the suite's slapd plus group/sort overlays.

Rules: reuse ``LdapServer`` (process handling, readiness, base entry); only the generated
slapd.conf is extended with memberof (+ refint) and sssvlv so that memberOf, referential
integrity and server-side sort take part in the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._support import SLAPD_MODULE_DIR, LdapServer

MODULES = ("memberof", "refint", "sssvlv")

# Each block is one overlay instance; a block whose "overlay" line the base config already has
# (other suites add sssvlv there) is skipped, as is a moduleload already present.
OVERLAYS: tuple[tuple[str, ...], ...] = (
    (
        "overlay memberof",
        "memberof-group-oc groupOfNames",
        "memberof-member-ad member",
        "memberof-memberof-ad memberOf",
        "memberof-refint TRUE",
    ),
    (
        "overlay memberof",
        "memberof-group-oc groupOfUniqueNames",
        "memberof-member-ad uniqueMember",
        "memberof-memberof-ad memberOf",
        "memberof-refint TRUE",
    ),
    ("overlay refint", "refint_attributes member uniqueMember"),
    ("overlay sssvlv",),
)


def missing_modules() -> list[str]:
    """Overlay modules this harness needs that the installed slapd lacks."""
    return [m for m in MODULES if not (SLAPD_MODULE_DIR / f"{m}.la").exists()]


@dataclass
class ReferenceSlapd(LdapServer):
    """``LdapServer(kind="slapd")`` with the overlays the differential cases rely on."""

    @classmethod
    def create(cls, workdir: Path) -> ReferenceSlapd:
        return cls("slapd", workdir)

    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.workdir / "slapd.conf"
        text = conf.read_text()
        lines = set(text.splitlines())
        loads = "".join(f"moduleload {m}\n" for m in MODULES if f"moduleload {m}" not in lines)
        if "database mdb\n" not in text:
            raise RuntimeError("unexpected slapd.conf layout from _support._slapd_conf")
        text = text.replace("database mdb\n", loads + "database mdb\n", 1)
        if "overlay memberof" in lines:
            raise RuntimeError("base slapd.conf already has memberof; adjust OVERLAYS")
        for block in OVERLAYS:
            if block[0] not in lines:
                text += "\n".join(block) + "\n"
        conf.write_text(text)
        return cmd
