"""Oba: an LDAP v3 directory server with a built-in Raft cluster mode."""

__version__ = "0.1.0"
