"""Directory semantics: entries, commands, apply, search, access control, passwords."""
