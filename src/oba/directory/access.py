"""Access decisions. Until the ACL engine lands, the default policy of a stock OpenLDAP:

- the root DN may do anything;
- ``userPassword``: its owner may read and write it, anonymous may use it to bind, nobody else
  sees it;
- everything else: readable (search, compare) by everyone;
- writes: refused for anonymous with ``strongerAuthRequired`` (8), for other identities with
  ``insufficientAccessRights`` (50), except a user changing their own ``userPassword``.

Rules for this module: decisions only, no I/O; identities and targets are normalised DNs
(``""`` = anonymous).
"""

from __future__ import annotations

from dataclasses import dataclass

from oba.protocol.resultcodes import ResultCode

PROTECTED_ATTRS = frozenset({"userpassword"})


@dataclass(frozen=True, slots=True)
class Denied:
    code: ResultCode
    message: str


class AccessPolicy:
    def __init__(self, root_ndn: str) -> None:
        self.root_ndn = root_ndn

    def is_root(self, bind_ndn: str) -> bool:
        return bool(bind_ndn) and bind_ndn == self.root_ndn

    def can_read_attr(self, bind_ndn: str, entry_ndn: str, attr: str) -> bool:
        """May ``bind_ndn`` see (read, search, compare) ``attr`` of the entry?"""
        if attr.lower() not in PROTECTED_ATTRS:
            return True
        return bool(bind_ndn) and (bind_ndn == self.root_ndn or bind_ndn == entry_ndn)

    def check_write(
        self, bind_ndn: str, target_ndn: str, attrs: frozenset[str] | None = None
    ) -> Denied | None:
        """May ``bind_ndn`` change the entry (``attrs``: the attributes a modify touches)?"""
        if self.is_root(bind_ndn):
            return None
        if not bind_ndn:
            return Denied(ResultCode.STRONGER_AUTH_REQUIRED, "modifications require authentication")
        if (
            attrs is not None
            and bind_ndn == target_ndn
            and attrs
            and {a.lower() for a in attrs} <= PROTECTED_ATTRS
        ):
            return None
        return Denied(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "no write access to parent"
                      if attrs is None else "no write access")
