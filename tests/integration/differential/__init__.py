"""Differential harness: the same operations against Oba and a private OpenLDAP slapd.

Rules: cases are data (``cases/*.yaml``, format in ``model.py``); the harness records raw
outcomes (result code, matched DN, entries) per operation, normalises both sides the same way
(``normalise.py``) and reports every disagreement; nothing here knows Oba's internals.
"""
