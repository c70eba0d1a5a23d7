"""The pure tests: no process started, no socket opened, no server (``make test-fast``)."""
