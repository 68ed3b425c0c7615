"""Killable, isolated child processes for untrusted code.

Host side: stop.sandbox.runner. Child side: child, confine, jobs, proxies (stdlib only,
so a child starts fast).
"""
