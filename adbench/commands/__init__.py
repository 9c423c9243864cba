"""Sub-commands of the ``adbench`` CLI, one module each with ``add_parser(subparsers)`` and ``main(args) -> int``."""
