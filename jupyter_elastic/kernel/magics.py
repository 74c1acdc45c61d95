"""``%%gpu`` and ``%gpu``: the notebook surface of elastic compute.

This module parses flags, checks every value before anything runs, and binds results;
the work itself is in ``dispatch.py`` (running a cell), ``session.py`` (lease, client),
``display.py`` (what is shown) and ``execution/analysis.py`` (names in and out). Every
user mistake is one ``UsageError`` line that names the bad value and the accepted form,
and a failed cell leaves the namespace exactly as it was.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from .. import config as cfg
from ..errors import ConfigError, ElasticError
from ..execution.analysis import analyze_cell
from ..protocol import RETIRED_LOGS_TOPIC, SERVER_URL_ENV
from . import jobs as _jobs
from .dispatch import CellOptions, Dispatcher
from .display import config_text, history_text, status_bundle
from .session import ElasticSession, kernel_restarting


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())  # one line, whatever the user typed
        if len(message) > 60:  # "unrecognized arguments: <the whole line>": a prefix will do
            message = message[:59] + "…"
        flags = sorted({o for a in self._actions for o in a.option_strings if o.startswith("--")} - {"--help"})
        accepted = f"; {self.prog} takes {', '.join(flags)}" if flags else ""
        raise UsageError(f"{self.prog}: {message}{accepted} (see {self.prog}? for help)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            raise UsageError(message.strip())
        raise _HelpShown()


class _HelpShown(Exception):
    """``--help`` was printed; nothing else to do."""


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%gpu", add_help=True, description="Run this cell on an elastic GPU worker.")
    p.add_argument("--gpus", default=None, help="GPUs for this cell: 1, 2, ... or a fraction such as 0.5 to share one")
    p.add_argument("--gpu-type", default=None,
                   help="GPU model, e.g. NVIDIA-H100-80GB-HBM3, or a list A,B tried in order (Kubernetes)")
    p.add_argument("--cpus", default=None, help="CPU cores the cell uses (what its CPU-seconds count)")
    p.add_argument("--memory", default=None, help="memory the cell needs, e.g. 8GiB (checked against the worker size)")
    p.add_argument("--in", dest="inputs", default=None, help="names to send, comma-separated (default: found)")
    p.add_argument("--out", dest="outputs", default=None, help="names to bring back, comma-separated (default: all assigned)")
    p.add_argument("--keep-on-device", action="store_true", help="return CuPy arrays as CuPy, not NumPy")
    p.add_argument("--timeout", default=None, help="cancel the cell after this long, e.g. 30s or 5m")
    p.add_argument("--retries", default=None,
                   help="run the cell again up to N times if it fails (default 0; on Kubernetes "
                        "a cell whose worker pod is lost is re-run once unless --retries is given)")
    p.add_argument("--backend", default=None, help="local, kubernetes or gateway")
    p.add_argument("--local", action="store_true", help="run here in the kernel with the same semantics")
    p.add_argument("--sync", action="store_true",
                   help="install what the cell imports that the workers lack (pip packages, local modules)")
    p.add_argument("--require-gpu", action="store_true", help="fail instead of running on CPU workers")
    p.add_argument("--detach", action="store_true", help="run as a job that outlives this kernel (%gpu attach ID)")
    p.add_argument("--name", default=None, help="with --detach: a name for %gpu attach/cancel/results")
    p.add_argument("--ttl", default=None, help="with --detach: how long its results are kept, e.g. 2d")
    p.add_argument("--every", default=None, help="with --detach: run again every DURATION (10m) or on a cron schedule")
    p.add_argument("--on-change", default=None, help="with --detach: run again when files matching this local glob change")
    return p


def _detach_flags(line: str, options: CellOptions) -> tuple[str | None, float | None, Any] | None:
    """``(name, ttl, trigger)`` when the cell is ``--detach``ed, else None (``--name``,
    ``--ttl``, ``--every`` and ``--on-change`` alone are refused)."""
    assert _CELL_PARSER is not None, "_parse_options ran first"
    args = _CELL_PARSER.parse_args(shlex.split(line))
    if not args.detach:
        if args.name is not None or args.ttl is not None:
            raise UsageError("--name and --ttl name and bound a detached job; add --detach")
        if args.every is not None or args.on_change is not None:
            raise UsageError("--every and --on-change trigger a detached job; add --detach")
        return None
    if options.local:
        raise UsageError("--detach runs on the cluster: drop --local")
    try:
        name = None if args.name is None else cfg.short_text(args.name, "--name", limit=64)
        if name is not None and not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"--name takes letters, digits, '-', '_' and '.', got {name!r}")
        ttl = None if args.ttl is None else cfg.parse_duration(args.ttl, what="--ttl")
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"--ttl must be above 0, got {args.ttl!r}")
        trigger = _jobs.parse_trigger(args.every, args.on_change)
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    return name, ttl, trigger


def _names(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if not n.isidentifier()]
    if bad or not names:
        raise UsageError(
            f"{flag} takes Python names separated by commas (e.g. {flag} x,y), got {cfg.quote(value)}"
        )
    return names


_CELL_PARSER: _Parser | None = None
#: Longest ``%%gpu`` flags line: far more than any real one, checked before it is split.
MAX_LINE_CHARS = 4096


def _parse_options(line: str) -> tuple[CellOptions, list[str] | None, list[str] | None]:
    global _CELL_PARSER
    if _CELL_PARSER is None:
        _CELL_PARSER = _cell_parser()
    if len(line) > MAX_LINE_CHARS:
        raise UsageError(f"%%gpu: the flags line has {len(line)} characters; at most {MAX_LINE_CHARS}")
    try:
        args = _CELL_PARSER.parse_args(shlex.split(line))
    except ValueError as exc:
        raise UsageError(f"%%gpu: cannot read the flags: {exc}") from None
    try:
        gpus = 1.0 if args.gpus is None else cfg.parse_gpus(args.gpus, what="--gpus")
        timeout = None if args.timeout is None else cfg.parse_duration(args.timeout, what="--timeout")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--timeout must be above 0, got {args.timeout!r}")
        cpus = None if args.cpus is None else cfg.whole(args.cpus, "--cpus", minimum=1)
        memory: int | None = None
        if args.memory is not None:
            memory = cfg.parse_size(args.memory, what="--memory")
            # Before anything starts, the configured size (this kernel starts the clusters
            # unless a Jupyter server does, with its own settings); once the cluster is
            # leased, dispatch checks what its workers really hold (check_memory).
            worker_memory = cfg.load_settings().worker.memory
            if memory > worker_memory and not os.environ.get(SERVER_URL_ENV):
                raise ConfigError(
                    f"--memory {args.memory} is more than a worker has ({worker_memory / 2**30:.1f} GiB); "
                    "raise jupyter-elastic.worker.memory with %gpu config worker.memory=..."
                )
        retries = None if args.retries is None else cfg.whole(args.retries, "--retries")
        backend = None if args.backend is None else cfg.check_backend(args.backend)
        gpu_type = None
        if args.gpu_type is not None:
            gpu_type = ",".join(cfg.parse_gpu_types(args.gpu_type)) or None
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    if gpus == 0 and args.require_gpu:
        raise UsageError("--gpus 0 and --require-gpu contradict each other; drop one")
    options = CellOptions(
        gpus=gpus, backend=backend, timeout=timeout, retries=retries, keep_on_device=args.keep_on_device,
        require_gpu=args.require_gpu, local=args.local, gpu_type=gpu_type, cpus=cpus,
        memory=memory, sync=args.sync,
    )
    return options, _names(args.inputs, "--in"), _names(args.outputs, "--out")


#: The settings a kernel of a server-hosted control plane applies itself: which backend its
#: cells ask for, its cluster's idle timeout (the server checks its bounds), and how long an
#: interrupted cell gets before its worker restarts. Every other setting describes clusters
#: the server starts, so only the server's configuration sets it.
KERNEL_KEYS = frozenset({"backend", "idle-timeout", "interrupt-grace", "sync-packages"})


@magics_class
class ElasticMagics(Magics):
    """``%%gpu`` runs a cell on an elastic worker; ``%gpu`` reports and controls clusters."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.session = ElasticSession()
        self.dispatcher = Dispatcher(self.session)

    @property
    def _shell(self) -> Any:
        assert self.shell is not None, "the magics are registered with a shell"
        return self.shell

    # ------------------------------------------------------------------ %%gpu
    @cell_magic
    def gpu(self, line: str, cell: str) -> Any:
        """Run this cell on an elastic GPU worker (CPU workers and NumPy where no GPU exists).

        Names the cell reads are sent; names it assigns come back, all at once, only if the
        cell succeeds. The last expression is displayed; print, display() and figures
        appear while the cell runs.

        Examples
        --------
        ::

            In [1]: %%gpu --gpus 0.5 --timeout 10m
               ...: feats = extract(images)
               ...: feats.shape

        Flags: --gpus N|FRACTION, --gpu-type NAME[,NAME...], --cpus N, --memory SIZE, --in a,b,
        --out x,y, --keep-on-device, --timeout DURATION, --retries N,
        --backend local|kubernetes|gateway, --local, --require-gpu, --sync.
        """
        try:
            options, inputs, outputs = _parse_options(line)
        except _HelpShown:
            return None
        namespace = self._shell.user_ns
        try:
            plan = analyze_cell(
                cell, namespace, hidden=self._shell.user_ns_hidden, inputs=inputs, outputs=outputs,
            )
        except ElasticError as exc:
            raise UsageError(exc.message) from None
        if inputs is not None:
            missing = [n for n in inputs if n not in namespace]
            if missing:
                raise UsageError(f"--in names {', '.join(missing)}, which the notebook does not define; "
                                 "run the cell that defines it first")
        detach = _detach_flags(line, options)
        if detach is not None:
            return self._detach(plan, namespace, options, *detach)
        result = self.dispatcher.run(plan, namespace, options, self._cell_number())
        # All at once, and only now that the cell succeeded.
        namespace.update(result.outputs)
        for name in result.deleted:
            namespace.pop(name, None)
        return result.value

    def _cell_number(self) -> int | None:
        """The running cell's In[n] (the shell's own counter is already at n + 1)."""
        running = getattr(self._shell.displayhook, "exec_result", None)
        number = getattr(running, "execution_count", None)
        return number if number is not None else self._shell.execution_count

    def _detach(self, plan: Any, namespace: dict[str, Any], options: CellOptions,
                name: str | None, ttl: float | None, trigger: Any) -> None:
        job = _jobs.submit(self.dispatcher, plan, namespace, options, name=name, ttl=ttl,
                           execution_count=self._cell_number(), trigger=trigger)
        label = f" ({job['name']})" if job.get("name") else ""
        print(f"job {job['id']}{label} detached: it runs without this kernel. "
              f"Follow it with %gpu attach {job['id']}; list jobs with %gpu jobs")
        return None

    # ------------------------------------------------------------------ %gpu
    @line_magic("gpu")  # type: ignore[arg-type]
    def gpu_line(self, line: str) -> Any:
        """Report on and control elastic clusters.

        Examples
        --------
        ::

            %gpu status [--json]         clusters, workers, GPUs, idle countdown, cost
            %gpu scale N                 fixed size N (0 frees every worker)
            %gpu adapt MIN MAX           adaptive between MIN and MAX workers
            %gpu stop [--all]            stop this notebook's cluster (or every cluster)
            %gpu config [KEY=VALUE ...]  show or set this session's settings
            %gpu history [--json]        one row per %%gpu cell
            %gpu logs [--worker NAME]    recent worker logs (and retired workers' last lines)
            %gpu jobs [--json]           detached cells (%%gpu --detach): state, GPU-seconds, cost
            %gpu attach ID|NAME          follow a detached cell, then bind its names
            %gpu results ID [--into X]   a finished detached cell's values
            %gpu cancel ID|NAME          stop a detached cell (or its trigger)
        """
        words = shlex.split(line)
        if not words:
            raise UsageError("%gpu needs a command: status, scale N, adapt MIN MAX, stop, config, history or logs")
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(
                f"unknown %gpu command {command!r}; use status, scale, adapt, stop, config, history or logs"
            )
        try:
            return handler(rest)
        except _HelpShown:
            return None
        except ConfigError as exc:
            raise UsageError(exc.message) from None

    def _cmd_status(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu status")
        p.add_argument("--json", action="store_true")
        args = p.parse_args(argv)
        report = {"clusters": self.session.control_plane.clusters(details=True)}
        if args.json:
            return report
        from IPython.display import display

        server_url = os.environ.get(SERVER_URL_ENV) if self.session.control_plane.kind == "server" else None
        display(status_bundle(report, self.session.lease, server_url), raw=True)
        return None

    def _cmd_scale(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu scale")
        p.add_argument("n")
        p.add_argument("--cluster", default=None)
        args = p.parse_args(argv)
        n = _whole(args.n, "N")
        cluster_id = args.cluster or self._ensure_cluster_id()
        cluster = self.session.control_plane.scale(cluster_id, n)
        print(f"cluster {cluster['name']}: scaling to {n} worker{'s' if n != 1 else ''} "
              f"(back to adaptive after {cluster['idle_timeout']:g}s without a cell)")
        return None

    def _cmd_adapt(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu adapt")
        p.add_argument("minimum")
        p.add_argument("maximum")
        p.add_argument("--cluster", default=None)
        args = p.parse_args(argv)
        minimum, maximum = _whole(args.minimum, "MIN"), _whole(args.maximum, "MAX")
        cluster_id = args.cluster or self._ensure_cluster_id()
        cluster = self.session.control_plane.adapt(cluster_id, minimum, maximum)
        print(f"cluster {cluster['name']}: adaptive between {minimum} and {maximum} workers")
        return None

    def _ensure_cluster_id(self) -> str:
        lease = self.session.ensure_cluster()
        return str(lease["cluster_id"])

    def _cmd_stop(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu stop")
        p.add_argument("--all", action="store_true")
        p.add_argument("--cluster", default=None)
        args = p.parse_args(argv)
        cp = self.session.control_plane
        if args.all:
            targets = [c["id"] for c in cp.clusters()]
        elif args.cluster:
            targets = [args.cluster]
        elif self.session.lease is not None:
            targets = [self.session.lease["cluster_id"]]
        else:
            print("this notebook has no cluster running; nothing to stop")
            return None
        for cluster_id in targets:
            self.session.forget_cluster(cluster_id)
            cp.stop(cluster_id)
        print(f"stopped {len(targets)} cluster{'s' if len(targets) != 1 else ''}")
        return None

    def _cmd_config(self, argv: list[str]) -> Any:
        server = self.session.control_plane.kind == "server"
        if not argv:
            print(config_text(cfg.load_settings()))
            if server:
                print(f"(clusters are started by the Jupyter server with its own settings; from this "
                      f"kernel only {', '.join(sorted(KERNEL_KEYS))} apply)")
            return None
        changes = []
        for item in argv:
            if "=" not in item:
                raise UsageError(f"%gpu config takes KEY=VALUE pairs (e.g. idle-timeout=30s), got {item!r}")
            key, value = item.split("=", 1)
            changes.append((key.strip(), value.strip()))
        if server:  # refused before anything is set: all or nothing
            for key, _ in changes:
                if key in cfg.SETTABLE_KEYS and key not in KERNEL_KEYS:
                    raise UsageError(
                        f"%gpu config {key}: clusters here are started by the Jupyter server with its "
                        f"settings; an admin sets jupyter-elastic.{key} in the server's Dask config "
                        f"(e.g. DASK_{cfg.NAMESPACE.upper().replace('-', '_')}__"
                        f"{key.upper().replace('-', '_').replace('.', '__')}) and restarts it. "
                        f"This notebook can set {', '.join(sorted(KERNEL_KEYS))}"
                    )
        before = {}
        import dask

        for key, _ in changes:
            before[key] = dask.config.get(f"{cfg.NAMESPACE}.{key}", None)
        lease = self.session.lease
        try:
            for key, value in changes:
                cfg.set_option(key, value)
            for key, value in changes:
                if key == "idle-timeout" and lease is not None:  # the server may refuse it
                    self.session.control_plane.set_idle_timeout(lease["cluster_id"], cfg.parse_duration(value))
        except ElasticError:
            for key, value in before.items():  # all or nothing
                dask.config.set({f"{cfg.NAMESPACE}.{key}": value})
            raise
        note = ""
        if server:
            note = " (idle-timeout applies to this notebook's cluster, within the server's bounds)"
        elif lease is not None:
            note = " (new clusters use it; idle-timeout also applies to this notebook's cluster)"
        print("set " + ", ".join(f"{k}={v}" for k, v in changes) + note)
        return None

    def _cmd_history(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu history")
        p.add_argument("--json", action="store_true")
        p.add_argument("--all", action="store_true", help="every notebook's cells, not only this one's")
        args = p.parse_args(argv)
        notebook = None if args.all else (os.environ.get("JPY_SESSION_NAME") or None)
        rows = self.session.control_plane.history(notebook)
        if args.json:
            return rows
        try:
            clusters = self.session.control_plane.clusters()
        except Exception:
            clusters = []  # the lines then count the cells' own seconds only
        print(history_text(rows, cfg.load_settings().pricing.currency, clusters))
        return None

    def _cmd_logs(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu logs")
        p.add_argument("--worker", default=None)
        p.add_argument("-n", "--lines", default="50")
        args = p.parse_args(argv)
        lines = _whole(args.lines, "--lines")
        client = self.session.client
        if client is None:
            raise UsageError("this notebook has no cluster yet; run a %%gpu cell first")
        logs = client.get_worker_logs(n=lines)
        retired = retired_logs(client, args.worker, lines)
        if args.worker:
            picked = {a: entries for a, entries in logs.items() if args.worker in (a, str(client.scheduler_info()["workers"].get(a, {}).get("name")))}
            if not picked and not retired:
                names = ", ".join(str(w.get("name")) for w in client.scheduler_info()["workers"].values()) or "none"
                raise UsageError(f"no worker named {args.worker!r}; workers: {names}")
            logs = picked
        for address, entries in logs.items():
            print(f"== {address}")
            for level, message in entries:
                print(f"{level:8} {message}")
        if not logs:
            print("no workers are running (they scale to zero when idle)"
                  + ("; the last logs of retired workers follow" if retired else ""))
        for worker, address, entries in retired:
            print(f"== {worker} ({address}), retired")
            for level, message in entries:
                print(f"{level:8} {message}")
        return None

    # ------------------------------------------------------------------ detached jobs
    def _cmd_jobs(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu jobs")
        p.add_argument("--json", action="store_true")
        args = p.parse_args(argv)
        jobs = _jobs.jobs_list()
        if args.json:
            return jobs
        print(_jobs.jobs_text(jobs))
        return None

    def _cmd_attach(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu attach")
        p.add_argument("job", help="a job id or name (%gpu jobs)")
        args = p.parse_args(argv)
        return _jobs.attach(cfg.short_text(args.job, "job", limit=64), self._shell.user_ns)

    def _cmd_cancel(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu cancel")
        p.add_argument("job", help="a job id or name (%gpu jobs)")
        args = p.parse_args(argv)
        job = _jobs.cancel(cfg.short_text(args.job, "job", limit=64))
        print(f"job {job['id']}: {job['state']}")
        return None

    def _cmd_results(self, argv: list[str]) -> Any:
        p = _Parser(prog="%gpu results")
        p.add_argument("job", help="a job id or name (%gpu jobs)")
        p.add_argument("--into", default=None, help="bind the values under this name (NAME.x, NAME.y)")
        args = p.parse_args(argv)
        return _jobs.results(cfg.short_text(args.job, "job", limit=64), self._shell.user_ns, args.into)


#: How many retired workers' logs ``%gpu logs`` shows (each keeps its last RETIRED_LOG_LINES).
RETIRED_WORKERS_SHOWN = 4


def retired_logs(client: Any, worker: str | None, lines: int) -> list[tuple[str, str, list[Any]]]:
    """The last log lines the most recently retired workers left with the scheduler
    (``execution.worker.dask_teardown``): (name, address, [(level, message)]), oldest first."""
    try:
        events = client.get_events(RETIRED_LOGS_TOPIC)
    except Exception:
        return []
    found = []
    for _time, event in events:
        if not isinstance(event, dict) or not isinstance(event.get("logs"), (list, tuple)):
            continue
        name, address = str(event.get("worker", "?")), str(event.get("address", "?"))
        if worker and worker not in (name, address):
            continue
        found.append((name, address, list(event["logs"])[-lines:] if lines else []))
    return found[-RETIRED_WORKERS_SHOWN:]


def _whole(value: str, what: str) -> int:
    try:
        return cfg.whole(value, what)
    except ConfigError as exc:
        raise UsageError(exc.message) from None


_magics: ElasticMagics | None = None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (idempotent), and release the lease when the kernel exits."""
    global _magics
    if _magics is None:
        _magics = ElasticMagics(ipython)
        ipython.register_magics(_magics)
        atexit.register(_at_exit)
        _close_in_do_shutdown(getattr(ipython, "kernel", None))


def _close_in_do_shutdown(kernel: Any) -> None:
    """Release the lease and close this kernel's clusters when ipykernel handles the
    shutdown request, not only at the interpreter's exit: between the two, ipykernel stops
    every child process of the kernel, the local workers and their fork server among them.
    Closing the cluster after that met nannies restarting killed workers (tracebacks in the
    server's log) and waited out the close's 30 s bound, past the few seconds Jupyter waits
    before it sends the kernel's whole process group SIGTERM."""
    original = getattr(kernel, "do_shutdown", None)
    if not callable(original) or getattr(kernel, "_jupyter_elastic_closes", False):
        return

    def do_shutdown(restart: bool) -> Any:
        try:
            _close_session(keep=bool(restart), exiting=True)
        except Exception:  # the shutdown goes on; atexit tries again
            pass
        return original(restart)

    try:
        kernel.do_shutdown = do_shutdown
        kernel._jupyter_elastic_closes = True
    except (AttributeError, TypeError):  # a kernel object that takes no new attributes:
        pass  # the clusters close at the interpreter's exit, as before


def unload_ipython_extension(ipython: Any) -> None:
    """Release this kernel's lease and stop its embedded clusters."""
    global _magics
    if _magics is not None:
        atexit.unregister(_at_exit)
        _magics.session.close()
        _magics = None


def _at_exit() -> None:
    """The kernel is exiting after a shutdown request (or the interpreter ends): release
    the lease so the cluster stops now; a restart keeps it for the restarted kernel.
    A kernel that crashed never gets here: its lease lapses after lease-ttl."""
    _close_session(keep=kernel_restarting(), exiting=True)


def _close_session(*, keep: bool, exiting: bool = False) -> None:
    """Release the lease (``keep``: a restart, which keeps the cluster for lease-ttl) and
    stop the embedded clusters; once. ``exiting``: the kernel process exits next."""
    global _magics
    if _magics is not None:
        magics, _magics = _magics, None
        magics.session.close(keep=keep, exiting=exiting)


__all__ = ["ElasticMagics", "load_ipython_extension", "unload_ipython_extension"]
