"""Command-line entry points: ``oomsight`` (this machine: ``main.SUBCOMMANDS``) and
``kubectl-oomsight`` (the cluster: ``kubectl.VERBS``)."""
