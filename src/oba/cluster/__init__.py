"""Replicators: the one way a node changes its database (standalone now, Raft later)."""
