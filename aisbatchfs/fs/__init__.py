"""The filesystem: FUSE operations over a namespace and a read path."""
