"""Sort n numbers with bubble sort: quadratic time, where sorted() takes n log n."""


def sort_numbers(n):
    items = [(i * 7919) % 10007 for i in range(n)]
    for i in range(n):
        for j in range(n - 1 - i):
            if items[j] > items[j + 1]:
                items[j], items[j + 1] = items[j + 1], items[j]
    return items
