"""The model workers on a Ray cluster, for when one machine is not enough (``SHOPTALK_RAY_ADDRESS``).

`server.workers.deployments`: the Ray Serve deployments (ASR, TTS, text encoder, ranker) and ``shoptalk workers
deploy``; `server.workers.proxies`: the engines' interfaces over them, used by a front server (`connect_workers`).
Importing either needs ``ray[serve]``.
"""
