"""A corpus of hostile candidate programs and improvers, with the outcome each must get."""
