"""Oba's Raft: a pure consensus core (``core``), durable log (``log``), TCP/TLS transport
(``transport``) and the runtime that drives them (``node``). See ``types`` for the boundary."""
