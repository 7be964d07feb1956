"""cn=Subschema parses with python-ldap's schema parser (ldap.schema.SubSchema).

Rules: read-only; the subschema entry is found through the Root DSE's subschemaSubentry as a
schema browser would.
"""

from __future__ import annotations

import ldap
import ldap.schema
from ldap.schema.models import AttributeType, LDAPSyntax, MatchingRule, ObjectClass

from ._support import connect

WANTED = ["attributeTypes", "objectClasses", "ldapSyntaxes", "matchingRules"]


def test_subschema_parses(url: str) -> None:
    conn = connect(url)
    [(_, dse)] = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["subschemaSubentry"])
    [sub_dn] = dse["subschemaSubentry"]
    [(dn, entry)] = conn.search_s(sub_dn.decode(), ldap.SCOPE_BASE, "(objectClass=subschema)",
                                  WANTED)
    conn.unbind_s()
    assert dn.lower() == "cn=subschema"
    for attr in WANTED:
        assert entry.get(attr), attr
    schema = ldap.schema.SubSchema(entry, check_uniqueness=2)

    person = schema.get_obj(ObjectClass, "inetOrgPerson")
    assert person is not None
    must, may = schema.attribute_types(["inetOrgPerson"])
    must_names = {at.names[0].lower() for at in must.values()}
    may_names = {n.lower() for at in may.values() for n in at.names}
    assert {"objectclass", "cn", "sn"} <= must_names
    assert {"mail", "uid", "givenname", "userpassword", "telephonenumber"} <= may_names

    cn = schema.get_obj(AttributeType, "commonName")
    assert cn is not None and "cn" in [n.lower() for n in cn.names]
    uid_number = schema.get_obj(AttributeType, "uidNumber")
    assert uid_number is not None and uid_number.ordering == "integerOrderingMatch"
    assert schema.get_obj(MatchingRule, "caseIgnoreMatch") is not None
    assert schema.get_obj(LDAPSyntax, "1.3.6.1.4.1.1466.115.121.1.15") is not None
