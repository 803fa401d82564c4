"""The wire contract between edge agents and the central side (topics, envelopes, versions).

Both ends import this package; neither end imports the other.
"""
