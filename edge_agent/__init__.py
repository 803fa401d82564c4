"""The in-store edge agent: camera pipelines, a durable outbox and the uplink to central."""

__version__ = "0.1.0"
