"""A real IPython kernel for tests: start it, run cells, collect every output message.

Each message is kept with the time it arrived, so tests can check *order* (output seen
while a cell still runs) without timing assertions.
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets import HasTraits, default

#: Where test kernels put their sockets: a short path (a Unix socket's path is limited to
#: 107 bytes), fixed at import, inside the suite's own runtime directory (conftest.py).
_IPC_DIR = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "ipc")
os.makedirs(_IPC_DIR, exist_ok=True)
# a prefix of 12 characters, then "-5": the longest socket path is this much longer
if len(os.fsencode(_IPC_DIR)) + 16 > 107:
    raise RuntimeError(f"kernel sockets under {_IPC_DIR} would pass the 107-byte limit of a "
                       "Unix socket's path; set TMPDIR to a shorter directory")


class _OwnSockets(HasTraits):
    """Kernel managers whose kernel listens on Unix sockets of its own, not TCP ports.

    Over TCP, ``jupyter_client`` picks five free ports, closes them, and the kernel binds them
    a second or so later; a scheduler or worker of another test that binds port 0 in that gap
    takes one ("Address already in use"), and the kernel never answers. Sockets named per
    kernel cannot be taken by anything else."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    @default("ip")
    def _ip_default(self) -> str:
        return os.path.join(_IPC_DIR, uuid.uuid4().hex[:12])


class IPCKernelManager(_OwnSockets, KernelManager):
    """The kernel manager of :class:`Kernel`."""


class IPCAsyncKernelManager(_OwnSockets, AsyncKernelManager):
    """The same, for clients that need the asynchronous manager (``nbclient``)."""


@dataclass
class CellRun:
    """Everything one execute request produced."""

    status: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        errors = [m["content"] for m in self.messages if m["msg_type"] == "error"]
        return errors[0] if errors else None

    @property
    def result(self) -> dict[str, Any] | None:
        results = [m["content"]["data"] for m in self.messages if m["msg_type"] == "execute_result"]
        return results[0] if results else None

    def displays(self) -> list[dict[str, Any]]:
        return [m["content"]["data"] for m in self.messages if m["msg_type"] == "display_data"]

    def error_text(self) -> str:
        """What the user sees for a failed cell: the error's traceback or UsageError line."""
        if self.error is not None:
            return "\n".join(self.error["traceback"])
        return self.stderr


class Kernel:
    """A started kernel (``python3`` with ``%load_ext jupyter_elastic`` by default)."""

    def __init__(self, env: dict[str, str] | None = None, kernel_name: str = "python3",
                 load: bool = True, cwd: str | None = None, stderr: Any = None) -> None:
        self.km = IPCKernelManager(kernel_name=kernel_name)
        full_env = dict(os.environ)
        full_env.update(env or {})
        # stderr: where the kernel process's own stderr goes (its log, as a server keeps it)
        self.km.start_kernel(env=full_env, cwd=cwd, **({"stderr": stderr} if stderr else {}))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        if load:
            run = self.run("%load_ext jupyter_elastic")
            assert run.status == "ok", run.error_text()

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def submit(self, code: str) -> str:
        return self.kc.execute(code)

    def collect(self, msg_id: str, timeout: float = 120, on_message: Any = None) -> CellRun:
        run = CellRun()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish within {timeout}s; got {run.messages!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msg = {"msg_type": msg["msg_type"], "content": msg["content"], "t": time.monotonic()}
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    break
                continue
            run.messages.append(msg)
            if on_message is not None:
                on_message(msg)
        while True:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        run.reply = reply["content"]
        run.status = reply["content"]["status"]
        return run

    def run(self, code: str, timeout: float = 120, on_message: Any = None) -> CellRun:
        return self.collect(self.submit(code), timeout=timeout, on_message=on_message)

    def value(self, expression: str) -> Any:
        """Evaluate ``expression`` in the kernel and return its ``repr`` parsed back."""
        import ast

        run = self.run(f"print(repr({expression}))")
        assert run.status == "ok", run.error_text()
        return ast.literal_eval(run.stdout.strip())

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=False)
            self.km.cleanup_resources()
