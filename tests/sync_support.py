"""A tiny pure-Python package as a wheel, built by hand in a temp dir (no network, no
build backend), and a place for it that only the notebook sees: what ``%pip install``
leaves in a notebook's environment and not in the workers' image."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path


def build_wheel(where: Path, dist: str = "tiny-extra", module: str = "tinyextra",
                version: str = "0.3", body: str = "VALUE = 'tiny'\n") -> Path:
    """``<dist>-<version>-py3-none-any.whl`` with one module, ``module/__init__.py``."""
    files = {
        f"{module}/__init__.py": body.encode(),
        f"{dist.replace('-', '_')}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{dist.replace('-', '_')}-{version}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist.replace('-', '_')}-{version}.dist-info/top_level.txt": f"{module}\n".encode(),
    }
    record_name = f"{dist.replace('-', '_')}-{version}.dist-info/RECORD"
    lines = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(data)}")
    lines.append(f"{record_name},,")
    files[record_name] = ("\n".join(lines) + "\n").encode()
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def pip_install_target(wheel: Path, target: Path) -> None:
    """``pip install --target``: the package lands where only a PYTHONPATH names it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, env={**os.environ, "PIP_NO_INPUT": "1"})
