"""Persistence: one SQL schema served by SQLite (embedded) and PostgreSQL (scaled out)."""
