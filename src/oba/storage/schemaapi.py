"""The part of ``oba.schema.Schema`` that storage and the directory layer rely on.

Rules: structural typing only (``typing.Protocol``), so the real ``Schema`` satisfies it and
tests may pass a small double. No behaviour here.
"""

from __future__ import annotations

from typing import Any, Protocol


class RuleLike(Protocol):
    name: str

    def normalize(self, value: bytes) -> bytes: ...


class SchemaLike(Protocol):
    def canonical(self, name: str) -> str | None: ...

    def attribute(self, name: str) -> Any: ...

    def object_class(self, name: str) -> Any: ...

    def equality(self, attr: str) -> Any: ...

    def ordering(self, attr: str) -> Any: ...

    def substr(self, attr: str) -> Any: ...

    def normalize(self, attr: str, value: bytes) -> bytes: ...

    def normalize_dn(self, dn: str) -> str: ...
