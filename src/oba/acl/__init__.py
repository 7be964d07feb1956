"""Access control lists: the ACL document model (rules file format) and its validation."""

from oba.acl.document import (
    AclDocument,
    AclError,
    AclRule,
    check_document,
    dump_acl,
    load_acl,
    open_by_omission,
    parse_acl,
    validate_acl,
)

__all__ = [
    "AclDocument",
    "AclError",
    "AclRule",
    "check_document",
    "dump_acl",
    "load_acl",
    "open_by_omission",
    "parse_acl",
    "validate_acl",
]
