"""Helpers for the tests, not tests: server processes, clients, deliberately broken servers, Dask and
network-namespace hosts, synthetic documents. Some also run as scripts by path (``python tests/support/fault_server.py``)."""
