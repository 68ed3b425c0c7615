"""Killable, isolated child processes for untrusted code.

Host side: stop.sandbox.runner (slots, pool, reaper, executors). Child side: child,
jail (the namespaces and the filesystem it sees), confine, jobs, guard, proxies (stdlib
only, so a child starts fast).
"""
