"""
Blobs: byte strings of at most 2 MiB named by the sha384 of their contents.
"""
