"""The Root DSE (RFC 4512 5.1) and the subschema subentry (RFC 4512 4.2), built on request.

Rules for this module: these entries are computed from the node's configuration and schema,
never stored; all their attributes except objectClass are operational, so they are returned only
when asked for by name or with ``+``.
"""

from __future__ import annotations

from oba.directory.entry import Entry
from oba.server.node import SUBSCHEMA_DN, Node

SUPPORTED_CONTROLS = (
    "2.16.840.1.113730.3.4.2",  # ManageDsaIT (RFC 3296)
    "1.2.840.113556.1.4.319",  # Simple Paged Results (RFC 2696)
    "1.2.840.113556.1.4.473",  # Server-Side Sort request (RFC 2891)
    "1.2.840.113556.1.4.474",  # Server-Side Sort response (RFC 2891)
    "2.16.840.1.113730.3.4.3",  # Persistent Search (draft-ietf-ldapext-psearch)
    "2.16.840.1.113730.3.4.7",  # Entry Change Notification (draft-ietf-ldapext-psearch)
)
# Kept equal to oba.server.extended.HANDLERS (checked by the tests; not imported here to keep
# operations -> rootdse free of a cycle).
SUPPORTED_EXTENSIONS = (
    "1.3.6.1.4.1.4203.1.11.1",  # Password Modify (RFC 3062)
    "1.3.6.1.4.1.4203.1.11.3",  # Who am I? (RFC 4532)
)
SUPPORTED_FEATURES = (
    "1.3.6.1.4.1.4203.1.5.1",  # all operational attributes: "+" (RFC 3673)
    "1.3.6.1.4.1.4203.1.5.3",  # absolute true and false filters (RFC 4526)
)


def _b(values: tuple[str, ...] | list[str]) -> list[bytes]:
    return [v.encode() for v in values]


def _starttls(node: Node) -> tuple[str, ...]:
    """StartTLS (RFC 4511 4.14) is advertised only when a certificate is configured (as slapd)."""
    server = node.config.server
    return ("1.3.6.1.4.1.1466.20037",) if server.tlsCert and server.tlsKey else ()


def root_dse(node: Node) -> Entry:
    attrs: dict[str, list[bytes]] = {
        "objectClass": [b"top", b"extensibleObject"],
        "namingContexts": [node.base_dn.encode()],
        "supportedLDAPVersion": [b"3"],
        "supportedControl": _b(SUPPORTED_CONTROLS),
        "supportedExtension": _b(SUPPORTED_EXTENSIONS + _starttls(node)),
        "supportedFeatures": _b(SUPPORTED_FEATURES),
        "subschemaSubentry": [SUBSCHEMA_DN.encode()],
        "vendorName": [b"Oba"],
        "vendorVersion": [f"Oba {node.version}".encode()],
        "entryDN": [b""],
    }
    return Entry(0, "", attrs)


def subschema(node: Node) -> Entry:
    schema = node.schema
    attrs: dict[str, list[bytes]] = {
        "objectClass": [b"top", b"subentry", b"subschema", b"extensibleObject"],
        "cn": [b"Subschema"],
        "entryDN": [SUBSCHEMA_DN.encode()],
        "structuralObjectClass": [b"subentry"],
        "createTimestamp": [b"19700101000000Z"],
        "modifyTimestamp": [b"19700101000000Z"],
        "ldapSyntaxes": [s.encode() for s in schema.syntax_descriptions()],
        "matchingRules": [s.encode() for s in schema.matching_rule_descriptions()],
        "attributeTypes": [a.describe().encode() for a in schema.attribute_types()],
        "objectClasses": [o.describe().encode() for o in schema.object_classes()],
    }
    return Entry(0, SUBSCHEMA_DN, attrs)
