"""Subcommands of the `samflow` CLI, one module each; each defines `register(subparsers)`."""
