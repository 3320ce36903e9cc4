"""Prometheus metrics: the registry and its families, the middleware that records
every HTTP response, and the ASGI endpoint that serves /metrics."""
