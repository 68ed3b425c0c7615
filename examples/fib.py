"""Naive recursive Fibonacci: exponential time, a classic target for `stop improve`."""


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
