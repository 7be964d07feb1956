"""LDAP protocol logic without I/O: BER codec, messages, DNs, filters, result codes.

Rules for this package: nothing here opens a socket, reads a clock or touches storage.
Bytes go in, message objects come out, and back (like h11).
"""
