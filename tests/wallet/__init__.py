"""
Tests for L{p2pblob.wallet}.
"""
