"""
The node's HTTP side: the JSON control API (L{p2pblob.http.api}), who may
use it (L{p2pblob.http.auth}), streams with byte ranges
(L{p2pblob.http.streaming}) and the service that serves them all
(L{p2pblob.http.service}).
"""
