"""The merchant's products.

`model`: products and the catalog; `store`: the SQLite store; `ingest`: JSONL/CSV with photos; `demo`: the generated
demo catalog; `pairs`: the (photo, text) pairs the image-text heads are aligned on; `view`: the catalog served now,
swapped whole on a reload.
"""
