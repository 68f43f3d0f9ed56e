"""
Streams: files cut into AES-encrypted blobs and described by an sd blob.
"""
