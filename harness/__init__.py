"""The simulated-device harness: brokers it starts, the demo, fleet simulation and fault injection.

It drives the edge agent and the central side together without hardware; the product packages
(edge_agent, sync) never import it.
"""
