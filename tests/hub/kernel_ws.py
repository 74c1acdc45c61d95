"""Run code in a kernel of a single-user server the way JupyterLab does: the server's REST API
starts the kernel, its ``/channels`` websocket carries Jupyter messages (through the hub's
proxy, authenticated with the user's token)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websocket


@dataclass
class Reply:
    status: str
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class RemoteKernel:
    def __init__(self, hub: Any, user: str, kernel_name: str = "python3-elastic") -> None:
        self.hub, self.user = hub, user
        model = hub.user_api(user, "api/kernels", "POST", {"name": kernel_name})
        self.id = model["id"]
        ws_url = hub.url.replace("http://", "ws://").rstrip("/") + \
            f"/user/{user}/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {hub.token(user)}"], timeout=30)
        self.session = uuid.uuid4().hex

    def execute(self, code: str, timeout: float = 240) -> Reply:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        reply = Reply(status="")
        idle = False
        deadline = time.monotonic() + timeout
        while not (idle and reply.status):
            self.ws.settimeout(max(1.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply within {timeout}s; so far: {reply}")
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    reply.stdout += content["text"]
                else:
                    reply.stderr += content["text"]
            elif kind in ("execute_result", "display_data"):
                reply.results.append(content.get("data", {}))
            elif kind == "error":
                reply.error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                reply.status = content["status"]
        return reply

    def value(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the kernel."""
        reply = self.execute(f"import json as _j\nprint(_j.dumps({expression}))")
        assert reply.status == "ok", reply.error or reply.stderr
        return json.loads(reply.stdout.strip().splitlines()[-1])

    def shutdown(self) -> None:
        try:
            self.ws.close()
        finally:
            self.hub.user_api(self.user, f"api/kernels/{self.id}", "DELETE")
