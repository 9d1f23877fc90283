"""rtclassify: real-time cell-type classification of patch-clamped neurons."""
__version__ = "0.1.0"
