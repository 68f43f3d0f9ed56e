"""
The C{p2pblob} command.
"""
