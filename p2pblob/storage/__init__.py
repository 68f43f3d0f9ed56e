"""
Storage plugins: where a node keeps its blobs and where it mirrors streams.

A storage plugin (an L{p2pblob.interfaces.IStoragePlugin} registered by a
dropin in C{twisted.plugins}) names a kind of backend and the options it
takes; its backend (an L{p2pblob.interfaces.IStorageBackend}) moves files
to and from one place.  The node talks to a backend only through a
L{p2pblob.storage.host.StorageHost}, which checks the options, runs blocking
backends in threads, retries what the service failed, and fills in the
methods a backend lacks.

This package imports nothing heavy, so that the dropin registering the
built-in plugins stays cheap to load.
"""
