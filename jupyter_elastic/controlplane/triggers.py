"""When a triggered detached cell runs again: ``--every DURATION|CRON`` and ``--on-change PATTERN``.

:func:`parse_trigger` checks the flags in the kernel (one line per mistake, each value bounded
before it is parsed); :func:`triggers` runs in the job's supervisor and yields once per run
until ``stop`` is set (``%gpu cancel``): ``None`` for a timed run, the sorted changed paths for
``--on-change`` (the cell reads them as ``changes``). A timed trigger that falls behind runs
once, not once per missed time. ``--on-change`` watches local paths (watchfiles); it does not
run the cell until something changes.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..config import parse_duration, short_text
from ..errors import ConfigError

#: The shortest interval of ``--every`` (a job starts a lease and a worker per run).
MIN_INTERVAL = 1.0


def parse_trigger(every: str | None, on_change: str | None, cwd: str | None = None) -> dict[str, Any] | None:
    """``{"every": seconds}``, ``{"cron": "m h dom mon dow"}``, ``{"on_change": glob}`` or None."""
    if every is not None and on_change is not None:
        raise ConfigError("--every and --on-change cannot be combined; pick one trigger")
    if every is not None:
        text = short_text(every, "--every", limit=100).strip()
        if len(text.split()) == 5:
            from croniter import croniter

            if not croniter.is_valid(text):
                raise ConfigError(f"--every {text!r} is not a cron expression (minute hour day month weekday)")
            return {"cron": text}
        try:
            seconds = parse_duration(text, what="--every")
        except ConfigError:
            raise ConfigError(f"--every takes a duration such as 10m or a cron expression such as "
                              f"'0 3 * * *', got {text!r}") from None
        if seconds < MIN_INTERVAL:
            raise ConfigError(f"--every must be at least {MIN_INTERVAL:g}s, got {text!r}")
        return {"every": seconds}
    if on_change is not None:
        pattern = short_text(on_change, "--on-change", limit=1024)
        if "://" in pattern:
            raise ConfigError(f"--on-change watches local paths only, got {pattern!r}")
        pattern = os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(pattern)))
        root = _root(pattern)
        if not os.path.isdir(root):
            raise ConfigError(f"--on-change {on_change!r}: the folder {root} does not exist")
        return {"on_change": pattern}
    return None


def _root(pattern: str) -> str:
    """The folder to watch: the pattern itself if it is a folder, else its part before any glob."""
    if os.path.isdir(pattern):
        return pattern
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # one file: watch its folder
        return os.path.dirname(pattern)
    return os.sep.join(fixed) or os.sep


def triggers(trigger: dict[str, Any], stop: threading.Event) -> Iterator[list[str] | None]:
    """Yield once per run until ``stop`` is set."""
    if "on_change" in trigger:
        yield from _changes(trigger["on_change"], stop)
        return
    if "cron" in trigger:
        from croniter import croniter

        schedule = croniter(trigger["cron"], time.time())
        while not stop.wait(max(0.0, schedule.get_next(float) - time.time())):
            yield None
        return
    interval = float(trigger["every"])
    due = time.time()
    while not stop.wait(max(0.0, due - time.time())):
        due = max(due + interval, time.time())  # behind: run once now, not once per missed time
        yield None


def _changes(pattern: str, stop: threading.Event) -> Iterator[list[str]]:
    from watchfiles import watch

    root = _root(pattern)
    folder = os.path.isdir(pattern)

    def wanted(_change: Any, path: str) -> bool:
        return folder or fnmatch.fnmatch(path, pattern)

    for changes in watch(root, watch_filter=wanted, stop_event=stop, debounce=300, step=50,
                         yield_on_timeout=False):
        if stop.is_set():
            return
        yield sorted({path for _, path in changes})
