"""Imported first by the local backend's fork server (its preload list), and by nothing else.

Local workers share the process group of the process that started them (the kernel or the
Jupyter server), and Jupyter's stop button sends SIGINT to that whole group. A worker only
ignores SIGINT once its preload has run (``execution.worker.dask_setup``); a worker still
starting would die of it, and its traceback would reach the cell. Ignoring SIGINT here, in
the fork server's main thread before it imports anything else, makes every worker forked
from it ignore SIGINT from its first instruction: the fork server restores in each child
the handlers it had after its preload, and ``SIG_IGN`` is one of them.
"""
from __future__ import annotations

import signal
import threading

if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
