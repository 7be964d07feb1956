"""Integration tests: a real server process driven by real LDAP clients."""
