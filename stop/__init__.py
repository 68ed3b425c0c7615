"""stop: recursive self-improving code generation in the style of STOP."""

__version__ = "0.1.0"
