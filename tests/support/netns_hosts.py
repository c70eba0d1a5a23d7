"""Test hosts for --cluster: network namespaces on one Linux machine, joined by veth pairs on a bridge, each with
its own address (needs root and iproute2). Nothing is added to the machine's own namespace: the bridge lives in
the server host's namespace, and each veth pair is made there with one end moved into a client host's.

    srv  10.77.0.1  (bridge)      the server, the Dask scheduler, the coordinator (loadgen/run.py --cluster)
    c1   10.77.0.2  (veth)        a Dask worker = a client host
    c2   10.77.0.3  (veth)        a Dask worker = a client host

    sudo python tests/support/netns_hosts.py up PREFIX      make PREFIXsrv, PREFIXc1, PREFIXc2 (prints the names)
    sudo python tests/support/netns_hosts.py down PREFIX    delete them
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SUBNET = "10.77.0"


def unavailable_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian's iproute2)"
    return None


class NetnsHosts:
    def __init__(self, prefix: str, clients: int = 2) -> None:
        self.server = f"{prefix}srv"
        self.clients = [f"{prefix}c{i}" for i in range(1, clients + 1)]
        self.server_ip = f"{SUBNET}.1"
        self.client_ips = [f"{SUBNET}.{i}" for i in range(2, clients + 2)]
        self.made: list[str] = []

    def _ip(self, *args: str) -> None:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise OSError(f"ip {' '.join(args)}: {out.stderr.strip()}")

    def up(self) -> "NetnsHosts":
        try:
            for ns in (self.server, *self.clients):
                self._ip("netns", "add", ns)
                self.made.append(ns)
                self._ip("-n", ns, "link", "set", "lo", "up")
            s = self.server
            self._ip("-n", s, "link", "add", "br0", "type", "bridge")
            self._ip("-n", s, "addr", "add", f"{self.server_ip}/24", "dev", "br0")
            self._ip("-n", s, "link", "set", "br0", "up")
            for i, (ns, addr) in enumerate(zip(self.clients, self.client_ips)):
                self._ip("-n", s, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._ip("-n", s, "link", "set", f"v{i}", "master", "br0")
                self._ip("-n", s, "link", "set", f"v{i}", "up")
                self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                self._ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made.clear()

    def __enter__(self) -> "NetnsHosts":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("up", "down"):
        sys.exit(__doc__)
    if why := unavailable_reason():
        sys.exit(f"netns_hosts.py: {why}")
    hosts = NetnsHosts(sys.argv[2])
    if sys.argv[1] == "up":
        hosts.up()
        print(hosts.server, *hosts.clients)
    else:
        hosts.made = [hosts.server, *hosts.clients]
        hosts.down()
