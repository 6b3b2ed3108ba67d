"""Machines for tests, made of Linux network namespaces: a private LAN whose hosts can be cut
off, and a TCP forwarder that makes a loopback server reachable from them.

``Lan(count)`` makes, in this (the root) namespace, a bridge with the LAN's *gateway* address,
and ``count`` hosts, each a namespace of its own (``llmjt-<pid>-<seq>-<n>``) joined to the
bridge by a veth pair; the subnet is a private 10.213.x.0/24 that no interface or route here
uses yet. ``lan.cut_off(host)`` takes the host's link down (its bridge port: as if its cable
were pulled) and mends it afterwards, whatever happens meanwhile. ``remove()`` (or leaving the
``with`` block) deletes every namespace and link it made; namespaces left by a test process
that died are deleted by the next ``Lan``. Traffic goes only to the LAN's own addresses.

A process runs on a host through ``host.command(...)`` (``ip netns exec``, which execs: the
process id is the command's own). Needs iproute2's ``ip`` and CAP_NET_ADMIN (root);
``unavailable()`` says why not, where not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

IP = shutil.which("ip") or next(
    (path for path in ("/usr/sbin/ip", "/sbin/ip", "/bin/ip") if os.path.exists(path)), None
)
SUBNETS = ipaddress.ip_network("10.213.0.0/16")
_NETNS = re.compile(r"llmjt-(\d+)-\d+-\d+")
_LINK = re.compile(r"lj(\d+)s\d+[bh]\d*")
_sequence = itertools.count(1)


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, check: bool = True) -> str:
    if IP is None:
        raise NetnsError("iproute2's ip command is not installed (apt-get install iproute2)")
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why this process cannot make network namespaces (None: it can)."""
    if IP is None:
        return "iproute2's ip command is not installed (apt-get install iproute2)"
    probe = f"llmjt-{os.getpid()}-0-0"
    try:
        ip("netns", "add", probe)
    except NetnsError as error:
        return f"cannot create a network namespace (needs CAP_NET_ADMIN, e.g. root): {error}"
    ip("netns", "delete", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """A machine of the LAN: its namespace, its address, and its link's end on the bridge."""

    name: str
    address: str
    link: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run on this host."""
        return [IP or "ip", "netns", "exec", self.name, *argv]


class Lan:
    """A bridge with the ``gateway`` address, and ``count`` hosts on it (see the module)."""

    def __init__(self, count: int):
        self.count = count
        pid, seq = os.getpid(), next(_sequence)
        self.tag = f"{pid}-{seq}"
        self._links = f"lj{pid}s{seq}"  # interface names: at most 15 characters
        self.bridge = f"{self._links}b"
        self.gateway = ""
        self.hosts: list[Host] = []

    def create(self) -> Self:
        _remove_orphans()
        subnet = _free_subnet(os.getpid())
        addresses = list(subnet.hosts())
        self.gateway = str(addresses[0])
        prefix = f"/{subnet.prefixlen}"
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", self.gateway + prefix, "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for n in range(1, self.count + 1):
                host = Host(f"llmjt-{self.tag}-{n}", str(addresses[9 + n]), f"{self._links}h{n}")
                ip("netns", "add", host.name)
                self.hosts.append(host)
                ip(*f"link add {host.link} type veth peer name eth0 netns {host.name}".split())
                ip("link", "set", host.link, "master", self.bridge, "up")
                ip("-n", host.name, "addr", "add", host.address + prefix, "dev", "eth0")
                ip("-n", host.name, "link", "set", "eth0", "up")
                ip("-n", host.name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    @contextlib.contextmanager
    def cut_off(self, host: Host) -> Iterator[None]:
        """The host is off the LAN (its link down) inside the block, back on afterwards."""
        ip("link", "set", host.link, "down")
        try:
            yield
        finally:
            ip("link", "set", host.link, "up")

    def remove(self) -> None:
        """Delete the hosts (their veth pairs go with them) and the bridge; never fails."""
        for host in self.hosts:
            ip("netns", "delete", host.name, check=False)
            ip("link", "delete", host.link, check=False)  # gone already, unless a process held it
        ip("link", "delete", self.bridge, check=False)
        self.hosts = []

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that no address or route of this namespace overlaps, starting at one
    picked from ``seed`` (so that two test runs at once are unlikely to pick the same)."""
    used = [
        ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
        for link in json.loads(ip("-j", "-4", "addr", "show") or "[]")
        for info in link.get("addr_info", [])
    ]
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        with contextlib.suppress(ValueError):  # "default"
            used.append(ipaddress.ip_network(route.get("dst", "default"), strict=False))
    candidates = list(SUBNETS.subnets(new_prefix=24))[1:-1]
    start = seed % len(candidates)
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise NetnsError(f"no free /24 left in {SUBNETS}")


def _remove_orphans() -> None:
    """Delete the namespaces and links of test processes that are gone (killed before they
    could clean up)."""
    for line in ip("netns", "list", check=False).splitlines():
        name, *_ = line.split() or [""]  # "NAME (id: 3)"
        match = _NETNS.fullmatch(name)
        if match and not _alive(int(match[1])):
            ip("netns", "delete", name, check=False)
    for link in json.loads(ip("-j", "link", "show", check=False) or "[]"):
        match = _LINK.fullmatch(link.get("ifname", ""))
        if match and not _alive(int(match[1])):
            ip("link", "delete", link["ifname"], check=False)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class TcpForwarder:
    """Accepts connections on ``host`` (a free port: ``port``) and relays each, both ways, to
    ``target``, until either side closes; in a thread of its own, until ``stop()``, which
    drops every connection."""

    def __init__(self, host: str, target: tuple[str, int]):
        self.host = host
        self.target = target
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task] = set()

    def start(self) -> Self:
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = listening.result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        return self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        self._relays.add(relay)
        upstream = None
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self._pipe(reader, upstream),
                self._pipe(upstream_reader, writer),
                return_exceptions=True,
            )
        except OSError:
            pass  # the target refused: so does the forwarder
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
            self._relays.discard(relay)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One way, until its end; then the other side's connection is closed (once what it
        was sent has gone), which ends the other way."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
