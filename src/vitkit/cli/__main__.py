"""``python -m vitkit.cli``: the same as the ``vitkit`` command."""

from vitkit.cli.commands import main

main()
