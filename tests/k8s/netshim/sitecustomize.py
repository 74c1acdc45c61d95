"""Cluster networking for processes the process kubelet starts (and the kopf operator).

Put on ``PYTHONPATH`` by tests/k8s/kubelet.py; Python imports ``sitecustomize`` at start-up.

* Cluster DNS: names in the JSON hosts file ``$K8S_DOUBLE_HOSTS`` (``svc.ns``,
  ``svc.ns.svc``, ``svc.ns.svc.cluster.local``, pod names) resolve to the loopback address the
  kubelet gave the pod behind them; unknown ``*.svc``/``*.cluster.local`` names fail at once
  (NXDOMAIN), as cluster DNS answers.
* The pod's network namespace, when ``$K8S_DOUBLE_POD_IP`` is set: binding the wildcard
  address (``0.0.0.0``, ``""``, ``None``) binds the pod's own address, so two pods can both
  listen on 8786; connections to the loopback network leave from the pod's address; the
  hostname is the pod's name.
"""

from __future__ import annotations

import json
import os
import socket

_HOSTS = os.environ.get("K8S_DOUBLE_HOSTS")
_POD_IP = os.environ.get("K8S_DOUBLE_POD_IP")
_POD_NAME = os.environ.get("K8S_DOUBLE_POD_NAME")
_cache: tuple[tuple[int, int, int], dict[str, str]] = ((-1, -1, -1), {})


def _hosts() -> dict[str, str]:
    global _cache
    if not _HOSTS:
        return {}
    try:
        st = os.stat(_HOSTS)
    except OSError:
        return {}
    # the kubelet replaces the file (a new inode each time): two writes within one mtime
    # tick must not leave a name unresolved for good
    version = (st.st_ino, st.st_mtime_ns, st.st_size)
    if version != _cache[0]:
        try:
            with open(_HOSTS) as f:
                _cache = (version, json.load(f))
        except (OSError, ValueError):
            return _cache[1]
    return _cache[1]


def lookup(host: object) -> str | None:
    """The cluster address for ``host``, or None when cluster DNS does not know it."""
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return None
    name = host.lower().rstrip(".")
    if _POD_NAME and _POD_IP and name == _POD_NAME:
        return _POD_IP
    found = _hosts().get(name)
    if found is None and (name.endswith(".svc") or name.endswith(".cluster.local")):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return found


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
    if _POD_IP and host in (None, "", "0.0.0.0", "::", b"", b"0.0.0.0") and family in (0, socket.AF_INET,
                                                                                       socket.AF_INET6):
        return _getaddrinfo(_POD_IP, port, socket.AF_INET, type, proto, flags & ~socket.AI_PASSIVE)
    ip = lookup(host)
    if ip is not None:
        return _getaddrinfo(ip, port, socket.AF_INET if family in (0, socket.AF_INET) else family,
                            type, proto, flags)
    return _getaddrinfo(host, port, family, type, proto, flags)


socket.getaddrinfo = getaddrinfo


class _ThreadedAiohttpResolver:
    """With aiodns installed, aiohttp resolves through c-ares, which never calls
    ``socket.getaddrinfo`` and so would not see cluster DNS (the operator's HTTP calls to
    ``svc.ns:8787``). When ``aiohttp.resolver`` is first imported, its default becomes the
    ``getaddrinfo`` one, as it is without aiodns."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "aiohttp.resolver":
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            run(module)
            module.DefaultResolver = module.ThreadedResolver

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _use_getaddrinfo_in_aiohttp() -> None:
    import sys

    if "aiohttp.resolver" in sys.modules:
        module = sys.modules["aiohttp.resolver"]
        module.DefaultResolver = module.ThreadedResolver  # type: ignore[attr-defined]
    else:
        sys.meta_path.insert(0, _ThreadedAiohttpResolver())  # type: ignore[arg-type]


_use_getaddrinfo_in_aiohttp()

if _POD_IP:
    _bind = socket.socket.bind
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex

    def _is_inet(sock: socket.socket) -> bool:
        return sock.family == socket.AF_INET

    def bind(self, address):  # type: ignore[no-untyped-def]
        if _is_inet(self) and isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
            address = (_POD_IP, *address[1:])
        return _bind(self, address)

    def _from_pod(self, address) -> None:  # type: ignore[no-untyped-def]
        if (_is_inet(self) and isinstance(address, tuple) and str(address[0]).startswith("127.")
                and self.getsockname() == ("0.0.0.0", 0)):
            _bind(self, (_POD_IP, 0))

    def connect(self, address):  # type: ignore[no-untyped-def]
        _from_pod(self, address)
        return _connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        _from_pod(self, address)
        return _connect_ex(self, address)

    socket.socket.bind = bind  # type: ignore[method-assign]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    if _POD_NAME:
        socket.gethostname = lambda: _POD_NAME  # type: ignore[assignment,return-value]


if _HOSTS:
    import importlib.abc
    import sys

    class _NoAiodns(importlib.abc.MetaPathFinder):
        """aiohttp resolves with c-ares (``aiodns``) when that is installed, which never asks
        ``socket.getaddrinfo``: hide it, so the operator's HTTP calls to the scheduler
        (``svc.ns:8787``) use cluster DNS here, as they do in a cluster."""

        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            if name == "aiodns" or name.startswith("aiodns."):
                raise ImportError("aiodns is hidden by the process kubelet's cluster DNS shim")
            return None

    sys.meta_path.insert(0, _NoAiodns())
