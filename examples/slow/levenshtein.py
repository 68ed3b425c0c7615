"""Edit distance by plain recursion: exponential time, where a table is quadratic."""


def levenshtein(a, b):
    if not a:
        return len(b)
    if not b:
        return len(a)
    if a[0] == b[0]:
        return levenshtein(a[1:], b[1:])
    return (
        1
        + min(
            levenshtein(a[1:], b),  # delete
            levenshtein(a, b[1:]),  # insert
            levenshtein(a[1:], b[1:]),  # substitute
        )
    )
