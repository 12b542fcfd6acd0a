"""Pure rules of headless-ops: no I/O, depends on nothing else in the package."""
