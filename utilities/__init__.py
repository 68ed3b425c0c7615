"""Built-in utilities: each module defines build(target, options) -> Utility."""
