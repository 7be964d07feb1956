"""Administration tools behind ``oba backup|restore|import|export|user`` (see oba.cli)."""
