"""echobench's load generator (see loadgen/run.py)."""
