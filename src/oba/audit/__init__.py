"""The audit trail: who did what, recorded as replicated SystemCommands (see ``sink``)."""
