"""
The node's HTTP side: the JSON control API (L{p2pblob.http.api}), who may
use it (L{p2pblob.http.auth}) and the service that serves it
(L{p2pblob.http.service}).
"""
