"""Network namespaces and veth pairs of the test's own, for the network partition scenario.

    root namespace (the test: load, audit reader, supervisor; two workers)
        | veth pair A: 10.x.y.2  <->  10.x.y.1
    namespace "stack": Kafka, Redis, S3, all bound to 10.x.y.1 (an address of this namespace)
        | veth pair B: 10.x.y.5  <->  10.x.y.6
    namespace "worker": the worker that will be cut off

Every packet of the scenario goes to an address inside a namespace this module created. The
partition drops, inside the worker's namespace, whatever goes to or comes from the brokers'
ports: established connections hang (no reset), as when a link or a switch dies; its health
server stays reachable, as the kubelet's probes on the node would. Healing deletes the rules.
Everything is removed on exit, also after a failure.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# A /16 for the /29s of these tests; each run picks a block nothing on the host uses yet.
POOL = ipaddress.ip_network("10.213.0.0/16")


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")


def _in(netns: str, *command: str) -> None:
    completed = subprocess.run(
        ["ip", "netns", "exec", netns, *command], capture_output=True, text=True, timeout=30, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {netns} failed: {completed.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-o", "-4", "route"], capture_output=True, text=True, check=True).stdout
    used = []
    for line in out.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in routes.splitlines():
        first = line.split()[0]
        if first != "default":
            used.append(ipaddress.ip_network(first, strict=False))
    return used


def _free_block() -> ipaddress.IPv4Network:
    used = _used_networks()
    blocks = list(POOL.subnets(new_prefix=29))
    random.Random(os.getpid()).shuffle(blocks)
    for block in blocks:
        if not any(block.overlaps(net) for net in used):
            return block
    raise RuntimeError(f"no free /29 left in {POOL}")


@dataclass(frozen=True)
class Topology:
    stack_ns: str
    worker_ns: str
    stack_ip: str  # the stack's address (namespace "stack", veth A)
    worker_ip: str  # the cut-off worker's address (namespace "worker", veth B)

    def cut(self, ports: Sequence[int]) -> None:
        """Drop the worker's traffic to and from these ports of the stack, both ways."""
        for port in ports:
            _in(self.worker_ns, "iptables", "-A", "OUTPUT", "-p", "tcp", "-d", self.stack_ip,
                "--dport", str(port), "-j", "DROP")  # fmt: skip
            _in(self.worker_ns, "iptables", "-A", "INPUT", "-p", "tcp", "-s", self.stack_ip,
                "--sport", str(port), "-j", "DROP")  # fmt: skip

    def heal(self) -> None:
        _in(self.worker_ns, "iptables", "-F", "OUTPUT")
        _in(self.worker_ns, "iptables", "-F", "INPUT")


@contextmanager
def partitionable_topology() -> Iterator[Topology]:
    tag = f"{os.getpid() % 100000}"
    stack_ns, worker_ns = f"tts-ha-stack-{tag}", f"tts-ha-worker-{tag}"
    veth_a, veth_a_peer = f"ttsha{tag}a", f"ttsha{tag}A"
    veth_b, veth_b_peer = f"ttsha{tag}b", f"ttsha{tag}B"
    block = _free_block()
    hosts = list(block.hosts())  # 6 usable addresses of a /29
    root_ip, stack_a_ip, stack_b_ip, worker_ip = (str(h) for h in hosts[:4])
    created_ns: list[str] = []
    try:
        for netns in (stack_ns, worker_ns):
            _ip("netns", "add", netns)
            created_ns.append(netns)
            _ip("link", "set", "lo", "up", netns=netns)
        # A: root <-> stack; B: stack <-> worker. Point-to-point /32s with explicit routes, so the
        # three addresses of the stack side share nothing with the host's own networks.
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_a_peer)
        _ip("link", "set", veth_a_peer, "netns", stack_ns)
        _ip("link", "add", veth_b, "type", "veth", "peer", "name", veth_b_peer, netns=stack_ns)
        _ip("link", "set", veth_b_peer, "netns", worker_ns, netns=stack_ns)
        _ip("addr", "add", f"{root_ip}/32", "peer", f"{stack_a_ip}/32", "dev", veth_a)
        _ip("addr", "add", f"{stack_a_ip}/32", "peer", f"{root_ip}/32", "dev", veth_a_peer, netns=stack_ns)
        _ip("addr", "add", f"{stack_b_ip}/32", "peer", f"{worker_ip}/32", "dev", veth_b, netns=stack_ns)
        _ip("addr", "add", f"{worker_ip}/32", "peer", f"{stack_b_ip}/32", "dev", veth_b_peer, netns=worker_ns)
        _ip("link", "set", veth_a, "up")
        _ip("link", "set", veth_a_peer, "up", netns=stack_ns)
        _ip("link", "set", veth_b, "up", netns=stack_ns)
        _ip("link", "set", veth_b_peer, "up", netns=worker_ns)
        # The worker reaches the stack's address (on veth A) through the stack namespace, and the
        # root namespace reaches the worker's health server the same way.
        _ip("route", "add", f"{stack_a_ip}/32", "via", stack_b_ip, "dev", veth_b_peer, netns=worker_ns)
        _ip("route", "add", f"{root_ip}/32", "via", stack_b_ip, "dev", veth_b_peer, netns=worker_ns)
        _ip("route", "add", f"{worker_ip}/32", "via", stack_a_ip, "dev", veth_a)
        _in(stack_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield Topology(stack_ns, worker_ns, stack_a_ip, worker_ip)
    finally:
        for link in (veth_a,):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for netns in reversed(created_ns):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
