"""One module per area of the lifecycle, each with its own `defs`; definitions.py merges them."""
