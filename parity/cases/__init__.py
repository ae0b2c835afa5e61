"""One module per optimizer family (or utility); each defines ``CASES``."""
