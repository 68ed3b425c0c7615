"""Improvers side by side: `stop transfer` and `stop compare` (transfer.py)."""
