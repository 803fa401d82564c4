"""Device configuration: the schema ops push to agents, and the tools to merge, validate and diff it."""
