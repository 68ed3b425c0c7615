"""The largest sum of a contiguous run of n numbers, summing every run anew: cubic time."""


def max_subarray(n):
    numbers = [(i * i * 31 + i * 7) % 97 - 48 for i in range(n)]
    best = numbers[0]
    for i in range(n):
        for j in range(i, n):
            total = 0
            for k in range(i, j + 1):
                total += numbers[k]
            if total > best:
                best = total
    return best
