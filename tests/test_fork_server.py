"""Local workers fork from a fork server (backends/local.py): what they inherit from it."""
from __future__ import annotations

import multiprocessing
import signal

from jupyter_elastic.backends.local import start_fork_server


def test_processes_forked_for_workers_ignore_sigint_from_their_first_instruction():
    # Jupyter's stop button sends SIGINT to the kernel's whole process group, which holds the
    # local workers; one still starting (before its preload) used to die of it with a
    # traceback in the cell. A child of the fork server has the handlers the fork server had
    # after its preload: SIGINT must be ignored there already, not only after dask_setup.
    assert start_fork_server()
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        handler = pool.apply(signal.getsignal, (signal.SIGINT,))
    assert handler == signal.SIG_IGN
    # ... and only there: this process keeps Python's KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_fork_server_starts_once_the_process_is_exiting(monkeypatch):
    # A kernel shut down during its first cluster's start: the start finishes after the
    # exit path stopped the fork server, and must not start it again (the exit would wait
    # on it). Here the flag alone is checked; the exit path itself is tested in
    # tests/faults/test_kernel_faults.py.
    import threading

    import dask.config

    from jupyter_elastic.backends import local

    monkeypatch.setattr(local, "_exiting", threading.Event())
    local._exiting.set()
    # the one method under which it would start (the default): only the flag refuses it
    with dask.config.set({local._MP_METHOD: "spawn"}):
        assert start_fork_server() is False
