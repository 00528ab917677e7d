"""From a query to products.

`query`: the query model and parser; `retrieval`: hybrid retrieval with hard filters, near misses and photo lookup;
`rerank`: the LLM re-ranker. `training` builds ranker training data through this pipeline; serving code never
imports it.
"""
