"""
The S3-compatible gateway: buckets as local namespaces of names, objects
as named streams (L{p2pblob.gateway.resource}), on its own endpoint
(L{p2pblob.gateway.service}).
"""
