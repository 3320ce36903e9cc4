"""The zero-downtime rehearsal: scenarios under open-loop load, then a verdict.

`python -m rehearsal` runs it (see __main__.py): scenarios.py on the local Kubernetes
(the default), local.py against local processes; observe.py reads what the cluster did
(watches, pod logs, /metrics); report.py holds what a rehearsal recorded and turns it
into summary.json, the gates and the printed summary; plot.py draws rollout.png.
"""
