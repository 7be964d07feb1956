"""LDAP schema: attribute types, object classes, syntaxes, matching rules, bundled schemas.

Rules for this package: ``Schema`` (``registry.py``) is the only entry point other layers
need; it is immutable once built. ``Schema.default()`` loads the files in ``files/`` (RFC 4512
description syntax, OpenLDAP ``.schema`` layout) through importlib.resources.
"""

from oba.schema.matching import InvalidValue, MatchingRule
from oba.schema.model import (
    AttributeType,
    AttributeUsage,
    ObjectClass,
    ObjectClassKind,
    SchemaError,
    parse_attribute_type,
    parse_object_class,
    parse_schema_text,
)
from oba.schema.registry import DEFAULT_FILES, Schema, UndefinedAttribute, default_schema_files
from oba.schema.syntaxes import SYNTAXES, Syntax

__all__ = [
    "DEFAULT_FILES",
    "SYNTAXES",
    "AttributeType",
    "AttributeUsage",
    "InvalidValue",
    "MatchingRule",
    "ObjectClass",
    "ObjectClassKind",
    "Schema",
    "SchemaError",
    "Syntax",
    "UndefinedAttribute",
    "default_schema_files",
    "parse_attribute_type",
    "parse_object_class",
    "parse_schema_text",
]
