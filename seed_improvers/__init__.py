"""Improver programs: each defines improve_algorithm(initial_solution, utility, language_model)."""
