"""Where a sweep's jobs run: in this process or a local process pool (:class:`LocalExecutor`), or as Ray tasks on
a Ray cluster (:class:`RayExecutor`).

An executor runs ``fn(job)`` for every job and yields ``(job, outcome)`` in the order the jobs *finish*, so the
caller records each result as soon as it exists. ``outcome`` is what ``fn`` returned (one ``results.csv`` row, or a
list of rows for a job that trains several runs) or, when the call itself failed (``fn`` raised, or its process or
machine died), the exception: one failed job never stops the others. ``fn`` must be a module-level function of an
installed package (it is imported by name in the worker processes) and a job a picklable dict.

Ray (an optional extra: ``pip install "daenr_fast[ray]"``) gives every job a task that reserves ``cpus_per_task``
CPUs and ``gpus_per_task`` of a GPU; Ray starts as many at once as the cluster's free resources allow, on any of
its machines, and a fraction below 1 lets ``1 / gpus_per_task`` tasks share one device. The driver (the process
that calls :meth:`RayExecutor.run`) owns the tasks: if it is killed, Ray stops them, and what it had already
recorded stays recorded.
"""
from __future__ import annotations

import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Callable, Iterable, Iterator, Optional, Tuple

#: the ``--executor`` choices; the first is the default
EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install "daenr_fast[ray]"'
#: seconds to wait for a Ray head at ``--address`` to accept a connection (Ray itself retries for minutes)
CONNECT_TIMEOUT = 10.0

Outcome = Tuple[dict, object]


class ExtraNotInstalled(ModuleNotFoundError, ValueError):
    """An optional dependency is missing; the message says which extra installs it. A ``ValueError`` too, so
    the ``daenr`` command reports it as a user error (one line, exit status 2)."""


def default_threads(jobs: int) -> int:
    """Torch threads per run of a local pool: this machine's CPU cores shared evenly between ``jobs`` parallel
    runs (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


class LocalExecutor:
    """``jobs`` spawned worker processes on this machine (``concurrent.futures.ProcessPoolExecutor``); with
    ``jobs=1`` (or a single job) the jobs run one after the other in this process."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs

    def default_threads(self) -> int:
        """Torch threads per run when the caller gives none: :func:`default_threads` of ``jobs``."""
        return default_threads(self.jobs)

    def job_device(self, device: str) -> str:
        """The device the jobs train on: ``device`` as given (``cpu``, ``cuda`` or ``auto``)."""
        return device

    def describe(self, threads: int) -> str:
        return f"{self.jobs} job(s) x {threads} thread(s)"

    def run(self, fn: Callable[[dict], object], jobs: Iterable[dict]) -> Iterator[Outcome]:
        """``(job, fn(job) or the exception it raised)`` for every job, as each finishes."""
        jobs = list(jobs)
        if self.jobs <= 1 or len(jobs) <= 1:
            for job in jobs:
                try:
                    outcome = fn(job)
                except Exception as err:  # a failed job is an outcome; the others still run
                    outcome = err
                yield job, outcome
            return
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in as_completed(futures):
                error = future.exception()
                yield futures[future], (error if error is not None else future.result())

    def close(self) -> None:
        """Nothing to release (the pool lives only inside :meth:`run`)."""


def import_ray():
    """The ``ray`` module, or :class:`ExtraNotInstalled` saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ExtraNotInstalled(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from err
    return ray


class RayExecutor:
    """Every job as one Ray task reserving ``cpus_per_task`` CPUs and ``gpus_per_task`` of a GPU.

    Args:
        address: the cluster to join, as ``ray.init(address=...)`` takes it (``HOST:PORT`` of the head node's GCS,
            printed by ``ray start --head``, or ``auto``). None: Ray's own search, in order the ``RAY_ADDRESS``
            variable, then the latest cluster started on this machine with ``ray start``, else a new single-machine
            Ray instance that ends with this process. An address given here or in ``RAY_ADDRESS`` that accepts no
            connection is refused at once (Ray would retry for minutes). If this process already called
            ``ray.init``, that connection is used (and ``address`` must be None).
        cpus_per_task: CPUs each task reserves (an integer >= 1); the run uses as many torch threads.
        gpus_per_task: the fraction of a GPU each task reserves: 0 (the runs train on CPU) or in (0, 1]; 0.25 lets
            four runs share one device. A run uses one device, so more than 1 is refused.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, cpus_per_task: int = 1, gpus_per_task: float = 0.0):
        if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, int) or cpus_per_task < 1:
            raise ValueError(f"cpus_per_task (--threads) must be an integer >= 1, got {cpus_per_task!r}")
        if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) \
                or not 0.0 <= gpus_per_task <= 1.0:
            raise ValueError(f"gpus_per_task (--gpus-per-task) must be 0 or a fraction of one GPU in (0, 1], got "
                             f"{gpus_per_task!r}")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address (--address) must be a Ray cluster address such as HOST:6379 or 'auto', "
                             f"got {address!r}")
        self.ray = import_ray()
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = float(gpus_per_task)
        self._owned = not self.ray.is_initialized()
        if self._owned:
            if address is not None:
                check_reachable(address)
            elif os.environ.get("RAY_ADDRESS"):
                check_reachable(os.environ["RAY_ADDRESS"], source="RAY_ADDRESS")
            self.ray.init(address=address)
        elif address is not None:
            raise ValueError(f"Ray is already initialized in this process; cannot also join {address!r} "
                             f"(call ray.shutdown() first, or pass no address)")

    def default_threads(self) -> int:
        """Torch threads per run: the CPUs each task reserves."""
        return self.cpus_per_task

    def job_device(self, device: str) -> str:
        """The device the tasks train on. ``gpus_per_task = 0``: ``cpu`` (``cuda`` is refused: Ray would not
        reserve a GPU for it). ``gpus_per_task > 0``: ``cuda`` (``cpu`` is refused: the reserved GPUs would sit
        idle); ``auto`` follows ``gpus_per_task``."""
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
        if self.gpus_per_task == 0.0:
            if device == "cuda":
                raise ValueError("--device cuda with --executor ray needs --gpus-per-task > 0 (the fraction of a "
                                 "GPU each run reserves, e.g. 0.25)")
            return "cpu"
        if device == "cpu":
            raise ValueError(f"--gpus-per-task {self.gpus_per_task:g} reserves GPUs that --device cpu runs do not "
                             f"use; drop one of the two")
        return "cuda"

    def describe(self, threads: int) -> str:
        resources = self.ray.cluster_resources()
        text = (f"Ray tasks of {self.cpus_per_task} CPU(s) and {self.gpus_per_task:g} GPU(s) on a cluster of "
                f"{resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} GPU(s)")
        if resources.get("GPU", 0) and not self.gpus_per_task:
            text += " (the runs train on CPU: give --gpus-per-task to use the GPUs)"
        return text

    def run(self, fn: Callable[[dict], object], jobs: Iterable[dict]) -> Iterator[Outcome]:
        """Submit every job at once, then ``(job, fn(job) or the exception)`` as each task finishes
        (``ray.wait``). A task that raised gives the original exception; a task whose worker or node died gives
        Ray's error (after Ray's own retries of such system failures)."""
        ray = self.ray
        remote = ray.remote(fn).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task)
        waiting = {remote.remote(job): job for job in jobs}
        while waiting:
            (ref,), _ = ray.wait(list(waiting), num_returns=1)
            job = waiting.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # fn raised: report its own exception
                outcome = err.cause if isinstance(err.cause, BaseException) else err
            except ray.exceptions.RayError as err:  # the worker, its node or the object died
                outcome = err
            yield job, outcome

    def close(self) -> None:
        """Disconnect (stopping the Ray instance if this executor started one); a connection made by the caller
        is left open."""
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT, source: str = "--address") -> None:
    """A ``ConnectionError`` naming ``address`` (``HOST:PORT``, optionally ``ray://HOST:PORT``) and where it
    came from (``source``) unless something accepts a TCP connection there within ``timeout`` seconds; ``auto``
    and ``local`` are left to Ray."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{source} must be HOST:PORT (the head node's, printed by 'ray start --head'; port 6379 "
                         f"by default) or 'auto', got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"no Ray cluster answers at {source} {address} ({err}); start its head node with "
                              f"'ray start --head' and pass the address it prints") from err


def make_executor(name: str, jobs: int = 1, address: Optional[str] = None, threads: Optional[int] = None,
                  gpus_per_task: float = 0.0):
    """The executor called ``name`` (one of :data:`EXECUTORS`). Options of the other executor are refused:
    ``address``/``gpus_per_task`` for ``local``, ``jobs > 1`` for ``ray`` (Ray runs as many tasks at once as the
    cluster's resources allow)."""
    if name == "local":
        if address is not None:
            raise ValueError("--address is an option of --executor ray; the local executor runs on this machine")
        if gpus_per_task:
            raise ValueError("--gpus-per-task is an option of --executor ray; local runs share the device that "
                             "--device names")
        return LocalExecutor(jobs)
    if name == "ray":
        if jobs != 1:
            raise ValueError("--jobs is an option of --executor local; Ray runs as many tasks at once as the "
                             "cluster's CPUs and GPUs allow (each reserves --threads CPUs and --gpus-per-task GPUs)")
        return RayExecutor(address=address, cpus_per_task=1 if threads is None else threads,
                           gpus_per_task=gpus_per_task)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
