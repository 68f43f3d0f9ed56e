"""
The Kademlia DHT, wire-compatible with LBRY's (spec section 7).
"""
