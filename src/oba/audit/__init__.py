"""The audit trail: who did what, recorded as replicated SystemCommands (see ``sink``).

Importing the package registers the apply handlers of ``audit.append``, ``audit.retain`` and
``audit.clear`` (``oba.server.node`` imports ``oba.audit.sink``), so a node replaying its log
at start-up applies audit commands before the audit store is attached.
"""

from oba.audit.db import register as _register

_register()
