"""``python -m server.cli``: the ``shoptalk`` command."""

from server.cli import main

main()
