"""Observing: logs, terminal output, status, health, metrics and memory figures."""
