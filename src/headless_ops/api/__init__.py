"""The REST API: FastAPI routers, request parsing, error rendering, auth dependency."""
