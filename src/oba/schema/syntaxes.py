"""LDAP syntaxes known to Oba (RFC 4517 section 3.3, RFC 4530, RFC 2307).

Rules for this module: data only. Each syntax has an OID, a description and whether values
are human-readable (``binary=False``); ``describe()`` renders the RFC 4512
SyntaxDescription published in cn=Subschema's ``ldapSyntaxes``. Value validation is done by
the matching rules' normalisers, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYNTAXES", "Syntax"]

_P = "1.3.6.1.4.1.1466.115.121.1."


@dataclass(frozen=True, slots=True)
class Syntax:
    oid: str
    desc: str
    binary: bool = False

    def describe(self) -> str:
        extra = " X-NOT-HUMAN-READABLE 'TRUE'" if self.binary else ""
        return f"( {self.oid} DESC '{self.desc}'{extra} )"


_TABLE: list[tuple[str, str, bool]] = [
    (_P + "3", "Attribute Type Description", False),
    (_P + "4", "Audio", True),
    (_P + "5", "Binary", True),
    (_P + "6", "Bit String", False),
    (_P + "7", "Boolean", False),
    (_P + "8", "Certificate", True),
    (_P + "9", "Certificate List", True),
    (_P + "10", "Certificate Pair", True),
    (_P + "11", "Country String", False),
    (_P + "12", "DN", False),
    (_P + "13", "Data Quality Syntax", False),
    (_P + "14", "Delivery Method", False),
    (_P + "15", "Directory String", False),
    (_P + "16", "DIT Content Rule Description", False),
    (_P + "17", "DIT Structure Rule Description", False),
    (_P + "19", "DSA Quality Syntax", False),
    (_P + "21", "Enhanced Guide", False),
    (_P + "22", "Facsimile Telephone Number", False),
    (_P + "23", "Fax", True),
    (_P + "24", "Generalized Time", False),
    (_P + "25", "Guide", False),
    (_P + "26", "IA5 String", False),
    (_P + "27", "INTEGER", False),
    (_P + "28", "JPEG", True),
    (_P + "30", "Matching Rule Description", False),
    (_P + "31", "Matching Rule Use Description", False),
    (_P + "34", "Name And Optional UID", False),
    (_P + "35", "Name Form Description", False),
    (_P + "36", "Numeric String", False),
    (_P + "37", "Object Class Description", False),
    (_P + "38", "OID", False),
    (_P + "39", "Other Mailbox", False),
    (_P + "40", "Octet String", False),
    (_P + "41", "Postal Address", False),
    (_P + "44", "Printable String", False),
    (_P + "45", "SubtreeSpecification", False),
    (_P + "49", "Supported Algorithm", True),
    (_P + "50", "Telephone Number", False),
    (_P + "51", "Teletex Terminal Identifier", False),
    (_P + "52", "Telex Number", False),
    (_P + "53", "UTC Time", False),
    (_P + "54", "LDAP Syntax Description", False),
    (_P + "58", "Substring Assertion", False),
    ("1.3.6.1.1.16.1", "UUID", False),
    ("1.3.6.1.1.1.0.0", "RFC2307 NIS Netgroup Triple", False),
    ("1.3.6.1.1.1.0.1", "RFC2307 Boot Parameter", False),
]

SYNTAXES: dict[str, Syntax] = {oid: Syntax(oid, desc, binary) for oid, desc, binary in _TABLE}
