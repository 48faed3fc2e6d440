"""Engram memory tables read in place, for every on-disk layout: ``open_tables(path)`` returns a
``TableSource`` (tokenizer, hashing, rows read on demand; never the whole table).

* ``sources``: the ``TableSource`` interface, positioned safetensors row reads, FP8 dequantisation;
* ``tables``: our ``.ckpt``, DeepSeek's demo folder and the DeepSeek-V4.1 FP8 layout;
* ``ple``: Qwen4-Exp per-layer n-gram embeddings (PLE), hashed by transformers' own module.

The analysis over these rows (usage, collisions, reverse lookup) is ``engram_interp.analysis.memory``.
"""

from engram_interp.memory.sources import DemoHashSource, SafetensorsRows, TableSource, dequantize_e4m3_e8m0
from engram_interp.memory.tables import CkptTables, DemoFolderTables, V41Tables, open_tables

__all__ = ["CkptTables", "DemoFolderTables", "DemoHashSource", "SafetensorsRows", "TableSource", "V41Tables",
           "dequantize_e4m3_e8m0", "open_tables"]
