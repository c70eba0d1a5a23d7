"""The load generator's modes beyond one closed- or open-loop run: the capacity search (capacity),
connection scale (idle), several client hosts (cluster, hostagent)."""
