"""The ``headless-ops`` command line."""
