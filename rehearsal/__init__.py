"""The zero-downtime rehearsal: scenarios under open-loop load, then a verdict.

`python -m rehearsal` runs it (see __main__.py); report.py holds what a rehearsal
recorded and turns it into summary.json, the gates and the printed summary;
plot.py draws rollout.png; local.py runs the scenarios against local processes.
"""
