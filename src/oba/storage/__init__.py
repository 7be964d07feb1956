"""ObaDB: the directory's LMDB storage (see ``lmdbstore`` for the layout and its rules)."""

from oba.storage.indexes import DEFAULT_INDEXES
from oba.storage.lmdbstore import ReadTxn, Store, WriteTxn

__all__ = ["DEFAULT_INDEXES", "ReadTxn", "Store", "WriteTxn"]
