"""Use cases the API and CLI share: each opens its own transactions."""
