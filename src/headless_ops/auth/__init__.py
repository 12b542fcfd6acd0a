"""API tokens, scopes and tenants."""
