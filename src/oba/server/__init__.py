"""The LDAP listener: one asyncio Protocol per connection, handlers over the directory layer."""
