"""``;binary`` transfer of the certificate syntaxes (issue 19; RFC 4523 2.1, RFC 4522):
userCertificate, cACertificate, certificateRevocationList, authorityRevocationList and
crossCertificatePair are accepted with ``;binary`` on add and modify and always returned as
``type;binary``, asked with the option or not. python-ldap and ldapsearch against the target (the
same requests are cases of the differential harness: differential/cases/binary_transfer.yaml).

Rules: this module writes only under ``ou=binary`` of the base. The values: a self-signed P-256
CA certificate valid until 2045, a CRL it signed, a CertificatePair holding it (slapd checks
their syntax, so they are real ones).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, parse_ldif, run_tool, target_kind

OU = f"ou=binary,{BASE_DN}"
CA = f"ou=ca,{OU}"
USER = f"uid=cert,{OU}"
CERT = base64.b64decode(
    "MIIBLjCB1aADAgECAgIQkjAKBggqhkjOPQQDAjAWMRQwEgYDVQQDDAtPYmEgVGVzdCBDQTAeFw0y"
    "NTAxMDEwMDAwMDBaFw00NTAxMDEwMDAwMDBaMBYxFDASBgNVBAMMC09iYSBUZXN0IENBMFkwEwYH"
    "KoZIzj0CAQYIKoZIzj0DAQcDQgAEmN8QylaVsQTvWtHvBjWK8YkU7P/D+emZdvlb2XzMmd4ZYuuv"
    "XebogJDwAb+bfkBTwu5GFq5bkzfeJ/GKWAGrWaMTMBEwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjO"
    "PQQDAgNIADBFAiEAwJOZ76YM3WjZvau2Xedq3AOGM+VOGLbwcRfMLTxjkiUCIGKheIIaZgcCp+qU"
    "qYmJ0/lT2NeUhZ9eYTqzH+qC9oPK")
CRL = base64.b64decode(
    "MIGzMFsCAQEwCgYIKoZIzj0EAwIwFjEUMBIGA1UEAwwLT2JhIFRlc3QgQ0EXDTI1MDEwMTAwMDAw"
    "MFoXDTQ1MDEwMTAwMDAwMFowFDASAgEHFw0yNTAxMDEwMDAwMDBaMAoGCCqGSM49BAMCA0gAMEUC"
    "ICHPguD4bfcTDEstnHDKMqk0y150JndZ0AwoFMgLDzuvAiEAzYfl82sLSJh3eaaQsb4ggLdlM2mc"
    "5OBz2fm+BcE46xA=")
PAIR = base64.b64decode(
    "MIIBNqCCATIwggEuMIHVoAMCAQICAhCSMAoGCCqGSM49BAMCMBYxFDASBgNVBAMMC09iYSBUZXN0"
    "IENBMB4XDTI1MDEwMTAwMDAwMFoXDTQ1MDEwMTAwMDAwMFowFjEUMBIGA1UEAwwLT2JhIFRlc3Qg"
    "Q0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASY3xDKVpWxBO9a0e8GNYrxiRTs/8P56Zl2+VvZ"
    "fMyZ3hli669d5uiAkPABv5t+QFPC7kYWrluTN94n8YpYAatZoxMwETAPBgNVHRMBAf8EBTADAQH/"
    "MAoGCCqGSM49BAMCA0gAMEUCIQDAk5nvpgzdaNm9q7Zd52rcA4Yz5U4YtvBxF8wtPGOSJQIgYqF4"
    "ghpmBwKn6pSpiYnT+VPY15SFn15hOrMf6oL2g8o=")
PKI = {"cACertificate": CERT, "certificateRevocationList": CRL,
       "authorityRevocationList": CRL, "crossCertificatePair": PAIR}


@pytest.fixture(scope="module")
def tree(url: str) -> Iterator[ldap.ldapobject.LDAPObject]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"binary"])])
    conn.add_s(USER, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"cert"]),
                      ("cn", [b"Cert Holder"]), ("sn", [b"Holder"]),
                      ("userCertificate;binary", [CERT])])
    conn.add_s(CA, [("objectClass", [b"organizationalUnit", b"pkiCA"]), ("ou", [b"ca"]),
                    *((f"{name};binary", [value]) for name, value in PKI.items())])
    try:
        yield conn
    finally:
        for dn in (CA, USER, OU):
            conn.delete_s(dn)
        conn.unbind_s()


def _attrs(conn: ldap.ldapobject.LDAPObject, base: str,
           attrs: list[str] | None) -> dict[str, list[bytes]]:
    [(_, found)] = conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", attrs)
    return found


@pytest.mark.parametrize("asked", [["userCertificate"], ["userCertificate;binary"], None, ["*"]])
def test_user_certificate_is_returned_with_binary(tree: ldap.ldapobject.LDAPObject,
                                                  asked: list[str] | None) -> None:
    got = _attrs(tree, USER, asked)
    assert got["userCertificate;binary"] == [CERT]
    assert "userCertificate" not in got


def test_every_certificate_syntax_is_returned_with_binary(
        tree: ldap.ldapobject.LDAPObject) -> None:
    got = _attrs(tree, CA, None)
    assert {name: got.get(f"{name};binary") for name in PKI} == {k: [v] for k, v in PKI.items()}
    assert not set(PKI) & set(got)
    asked = _attrs(tree, CA, ["certificateRevocationList", "crossCertificatePair;binary"])
    assert asked == {"certificateRevocationList;binary": [CRL],
                     "crossCertificatePair;binary": [PAIR]}


def test_filters_with_and_without_binary(tree: ldap.ldapobject.LDAPObject) -> None:
    for flt in ("(userCertificate=*)", "(userCertificate;binary=*)"):
        assert [dn for dn, _ in tree.search_s(OU, ldap.SCOPE_SUBTREE, flt, ["1.1"])] == [USER]


def test_ldapsearch_shows_the_binary_option(url: str, tree: ldap.ldapobject.LDAPObject) -> None:
    res = run_tool("ldapsearch", url, ["-LLL", "-b", USER, "-s", "base", "(objectClass=*)",
                                       "userCertificate"], bind=None)
    assert res.rc == 0, res.stderr
    assert "userCertificate;binary:: " in res.stdout
    [entry] = parse_ldif(res.stdout)
    assert entry.attrs["usercertificate;binary"] == [CERT]


def test_modify_with_binary_and_binary_on_text_types(tree: ldap.ldapobject.LDAPObject) -> None:
    tree.modify_s(USER, [(ldap.MOD_DELETE, "userCertificate;binary", [CERT])])
    assert "userCertificate;binary" not in _attrs(tree, USER, ["userCertificate"])
    tree.modify_s(USER, [(ldap.MOD_ADD, "userCertificate;binary", [CERT])])
    assert _attrs(tree, USER, ["userCertificate"]) == {"userCertificate;binary": [CERT]}
    with pytest.raises(ldap.UNDEFINED_TYPE):
        tree.modify_s(USER, [(ldap.MOD_ADD, "description;binary", [b"text"])])


@pytest.mark.skipif(target_kind() == "slapd", reason="slapd asks for ;binary (17)")
def test_oba_also_accepts_a_certificate_without_binary(
        tree: ldap.ldapobject.LDAPObject) -> None:
    """A deliberate difference (docs/security.md): LDIF and REST input written without the
    option still loads; the value is the same attribute, sent back with ;binary."""
    tree.modify_s(USER, [(ldap.MOD_REPLACE, "userCertificate", [CERT])])
    assert _attrs(tree, USER, ["userCertificate"]) == {"userCertificate;binary": [CERT]}
