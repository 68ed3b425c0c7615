"""Built-in utilities: each module defines build(target, options) -> stop.utility.Utility."""
