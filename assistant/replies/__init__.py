"""The words said back, grounded in the catalog.

`templates`: template replies; `writer`: the writer protocol; `llm`: the SmolLM2 writer; `grounding`: the check of
every sentence against the facts; `copy`: merchant copy.
"""
