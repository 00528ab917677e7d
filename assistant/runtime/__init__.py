"""A conversation over time; only `server` imports this room.

`session`: one conversation; `voice`: voice input; `turn`: the turn (`Brain`); `batching`: micro-batching across
sessions; `uploads`: uploaded photos.
"""
