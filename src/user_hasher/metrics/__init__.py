"""Prometheus metrics: the registry and its families, the observer that records
every HTTP response, and the ASGI endpoint that serves /metrics."""
