"""``python -m headless_ops`` is the ``headless-ops`` command."""

from headless_ops.cli.main import main

main()
