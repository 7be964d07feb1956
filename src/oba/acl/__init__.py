"""Access control lists: the ACL document model (rules file format) and its validation."""

from oba.acl.document import (
    AclDocument,
    AclError,
    AclRule,
    dump_acl,
    load_acl,
    parse_acl,
    validate_acl,
)

__all__ = [
    "AclDocument",
    "AclError",
    "AclRule",
    "dump_acl",
    "load_acl",
    "parse_acl",
    "validate_acl",
]
