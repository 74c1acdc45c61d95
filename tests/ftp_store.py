"""An FTP server on 127.0.0.1 serving a temp folder: a result store that worker processes
reach over the network, as Kubernetes pods and Gateway workers reach object storage
(``ftp://`` is one of fsspec's built-in filesystems; pyftpdlib is the server)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def ftp_store(root: Path) -> Iterator[str]:
    """Serve ``root`` over FTP for the duration; yields the store URL (``ftp://.../jobs``)."""
    import logging
    import warnings

    with warnings.catch_warnings():  # pyftpdlib 2.2 still imports asyncore/asynchat
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)  # a line per file otherwise
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(8)
    authorizer = DummyAuthorizer()
    authorizer.add_user("jobs", password, str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "passive_ports": None})
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"ftp://jobs:{password}@127.0.0.1:{port}/jobs"
    finally:
        server.close_all()
        thread.join(timeout=10)
