"""The central end of the wire: ingest service and the central store backends."""
