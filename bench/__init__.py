"""`make bench`: what the service costs, measured side by side in one run (see __main__.py)."""
