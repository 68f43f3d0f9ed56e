"""
Tests of what the node builds on its storage backends: the transfer
journal and the journaled, resumable uploads.
"""
