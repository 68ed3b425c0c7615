"""Count the primes below n by trying every smaller divisor: far slower than a sieve."""


def count_primes(n):
    count = 0
    for k in range(2, n):
        prime = True
        for d in range(2, k):
            if k % d == 0:
                prime = False
                break
        if prime:
            count += 1
    return count
