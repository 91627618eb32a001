"""aisbatchfs: read AIStore through a plain filesystem, at GetBatch speed."""

__version__ = "0.1.0"
