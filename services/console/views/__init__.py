"""One module per console page group; each exposes ``router``."""
