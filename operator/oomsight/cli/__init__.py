"""Command-line entry points: ``oomsight`` and ``kubectl-oomsight`` (see ``main.SUBCOMMANDS``)."""
