"""Search support for improvers: diff edits (edits.py) and the learned reranker (reranker.py)."""
