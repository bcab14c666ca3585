"""nncompress: make trained networks small, and prove it."""
__version__ = "0.1.0"
