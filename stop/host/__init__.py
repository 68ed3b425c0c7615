"""The improver host: runs an improver in a sandbox and answers its calls (improver.py),
scores candidates ahead of the improver's requests (prefetch.py) and ranks them for it
(ranking.py)."""
