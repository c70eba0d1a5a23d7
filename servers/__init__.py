"""echobench's interchangeable echo servers: one module per model, one registry (``servers.registry``)."""
