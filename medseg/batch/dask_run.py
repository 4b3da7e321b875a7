"""Running a batch on Dask distributed: a ``LocalCluster`` here, or any existing cluster.

* The model is loaded **once per worker** by a :class:`BatchWorkerPlugin`
  (``client.register_plugin``), in its ``setup``, which also sets the worker's torch threads
  (workers start with ``OMP_NUM_THREADS=1``) and, with several GPUs on a host, its GPU. Each
  worker runs one case at a time; with GPUs each case asks for the worker resource ``GPU=1``.
* Workers only compute and write their case folder; **the client alone writes the manifest**,
  from events: a task announces its start (``worker.log_event``), the scheduler announces a
  worker that died with the tasks it was running (topic ``"all"``), and the futures finish.
* A worker that **dies** during a case (killed, out of memory) loses that attempt; the case is
  retried once elsewhere (``distributed.scheduler.allowed-failures = 1`` on our LocalCluster;
  on an existing cluster the client cancels a case whose workers died twice) and then recorded
  as failed with the reason. A task that *raises* (not a problem of the input, which is a
  failed case) is retried once too (``retries=1``).
* A worker holds ``OUTPUT_DIR/batch.workers.lock`` shared while it runs a case, so a new run of the
  same output starts only when a case a killed run left running has finished (one case is never
  computed by two runs at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import socket
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, get_worker

from medseg.batch.discover import CaseInput
from medseg.batch.manifest import WORKERS_LOCK_NAME
from medseg.batch.work import RunSettings, internal_error_line, process_case
from medseg.case import now_utc
from medseg.errors import CancelledError, InputError, option

__all__ = ["EVENT_TOPIC", "BatchWorkerPlugin", "run_case_on_worker", "run_on_dask"]

EVENT_TOPIC = "medseg-batch"
CONNECT_TIMEOUT_S = 5


class BatchWorkerPlugin(WorkerPlugin):
    """Loads the batch's model once when a worker starts (and again in a restarted worker)."""

    def __init__(self, settings: RunSettings, output_dir: str, threads: int | None) -> None:
        self.settings = settings
        self.output_dir = output_dir
        self.threads = threads
        self.model: Any = None
        self.device: str | None = None

    async def setup(self, worker) -> None:
        # Loading takes seconds (torch, MONAI, weights): off the worker's event loop, so its
        # heartbeats to the scheduler go on meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, self._load, worker)

    def _load(self, worker) -> None:
        import torch

        from medseg.models import resolve_model

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = self.threads or max(1, cores // max(1, worker.state.nthreads))
        torch.set_num_threads(self.threads)
        self.settings = replace(self.settings, threads=self.threads)
        device = self.settings.device
        if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1 \
                and isinstance(worker.name, int):
            device = f"cuda:{worker.name % torch.cuda.device_count()}"  # one GPU per local worker
        self.device = device
        self.model = resolve_model(self.settings.model, trust_bundle=self.settings.trust_bundle)



@contextlib.contextmanager
def _case_lock(output_dir: str):
    """Hold ``batch.workers.lock`` shared while a case runs: a new run of this output waits for a
    case a killed run left running (on a cluster that outlives its client) before it starts."""
    import fcntl

    fd = os.open(Path(output_dir) / WORKERS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def run_case_on_worker(case: CaseInput, input_sha256: str, output_dir: str, plugin_name: str) -> dict[str, Any]:
    """The Dask task: one case on this worker, with the model its plugin loaded."""
    worker = get_worker()
    plugin = worker.plugins[plugin_name]
    if plugin.model is None:  # pragma: no cover - setup runs before a worker takes tasks
        plugin._load(worker)
    worker.log_event(EVENT_TOPIC, {"kind": "started", "case_id": case.case_id, "worker": worker.address,
                                   "host": socket.gethostname(), "pid": os.getpid(), "started_utc": now_utc()})
    try:
        with _case_lock(output_dir):
            record = process_case(case, plugin.settings, plugin.model, output_dir, input_sha256=input_sha256,
                                  device=plugin.device)
    except Exception as exc:
        worker.log_event(EVENT_TOPIC, {"kind": "error", "case_id": case.case_id, "worker": worker.address,
                                       "error": internal_error_line(exc), "traceback": traceback.format_exc()})
        raise
    record["worker"] = worker.address
    return record


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _gpus(device: str) -> int:
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _connect(stack: contextlib.ExitStack, *, workers: int | None, threads_per_worker: int | None, scheduler: Any,
             memory_limit: str | None, device: str) -> tuple[Client, str, int | None, bool]:
    """(client, description, torch threads per worker or None for the worker's share, GPUs)."""
    import dask

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # The scheduler of a LocalCluster lives in this process and logs every worker start and
        # close; the batch says what matters itself (--debug shows them).
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if scheduler is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = threads_per_worker or max(1, cores // workers)
        gpus = _gpus(device)
        stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": 1,
                                             # one task per worker thread: nothing queued on a worker that may die
                                             "distributed.scheduler.worker-saturation": 1.0}))
        try:
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit or "auto",
                host="127.0.0.1", dashboard_address=":0" if _has_bokeh() else None, silence_logs=logging.CRITICAL,
                resources={"GPU": 1} if gpus else None))
        except ValueError as exc:  # a memory limit dask cannot parse
            raise InputError(option("memory_limit", memory_limit), str(exc), "give a size such as 8GB") from None
        except RuntimeError as exc:  # the worker processes did not start
            raise InputError(option("workers", workers), f"the local Dask workers could not start ({exc})",
                             "a Python script that starts workers must run its code under "
                             "`if __name__ == \"__main__\":` (they import it again); see docs/batch.md") from None
        client = stack.enter_context(Client(cluster))
        limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
        memory = f", memory limit {min(limits) / 2**30:.1f} GiB each" if limits and min(limits) else ""
        dashboard = client.dashboard_link if _has_bokeh() else "none (pip install bokeh for Dask's dashboard)"
        what = (f"dask LocalCluster: {workers} worker processes x {threads} torch thread(s), one case at a time each"
                f"{', one GPU each' if gpus else ''}{memory}; dashboard {dashboard}")
        return client, what, threads, bool(gpus)
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        address = getattr(scheduler, "scheduler_address", None) or str(scheduler)
        try:
            client = stack.enter_context(Client(address, timeout=f"{CONNECT_TIMEOUT_S}s"))
        except Exception as exc:  # noqa: BLE001 - OSError on a timeout, ValueError on a bad address, a reply not from Dask
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(option("scheduler", address), f"did not answer as a Dask scheduler within "
                             f"{CONNECT_TIMEOUT_S} s ({reason})", "check the address and port: they must be the "
                             "scheduler's (`dask scheduler` prints it), not its dashboard's") from None
    info = client.scheduler_info()
    gpus = any("GPU" in (w.get("resources") or {}) for w in info.get("workers", {}).values())
    what = (f"dask scheduler {client.scheduler.address}: {len(info.get('workers', {}))} workers now; "
            f"dashboard {client.dashboard_link}")
    return client, what, threads_per_worker, gpus


def _failure(case_id: str, reason: str, traceback_text: str | None = None) -> dict[str, Any]:
    return {"case_id": case_id, "status": "failed", "error": reason, "traceback": traceback_text,
            "finished_utc": now_utc(), "seconds": None}


def _died_reason(exc: BaseException) -> str | None:
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        last = getattr(getattr(exc, "last_worker", None), "address", "")
        return (f"its Dask worker died during the case twice (killed or out of memory; last on {last}): not "
                "retried again. Check the workers' memory limit against the case's peak memory")
    return None


def run_on_dask(cases: list[CaseInput], settings: RunSettings, output: Path, hashes, *, workers: int | None,
                threads_per_worker: int | None, scheduler: Any, memory_limit: str | None,
                cancel=None) -> Iterator[tuple[str, str | None, Any]]:
    """Submit every case and yield the batch's events (see :mod:`medseg.batch.run`)."""
    if not settings.model:
        raise InputError(option("model"), "is a model in memory; Dask workers load the model from a path",
                         "save it as a model folder (medseg.models.store.save_model) and give its path")
    with contextlib.ExitStack() as stack:
        client, description, threads, gpus = _connect(stack, workers=workers, threads_per_worker=threads_per_worker,
                                                      scheduler=scheduler, memory_limit=memory_limit,
                                                      device=settings.device)
        yield "note", None, description
        token = uuid.uuid4().hex[:8]
        # One name per output folder (one batch at a time there): a plugin a killed run left on a
        # cluster that outlives it is replaced, not kept with its model in every worker's memory.
        plugin_name = f"medseg-batch-{hashlib.sha1(str(output.resolve()).encode()).hexdigest()[:10]}"
        events: queue.Queue = queue.Queue()
        client.subscribe_topic(EVENT_TOPIC, lambda event: events.put(("task", event[1])))
        client.subscribe_topic("all", lambda event: events.put(("cluster", event[1])))
        stack.callback(_unsubscribe, client)
        client.register_plugin(BatchWorkerPlugin(settings, str(output), threads), name=plugin_name)
        stack.callback(_forget_plugin, client, plugin_name)
        futures, case_of = {}, {}
        for case in cases:
            future = client.submit(run_case_on_worker, case, hashes.get(case.case_id, ("", ""))[1], str(output),
                                   plugin_name, key=f"medseg-{token}-{case.case_id}", retries=1, pure=False,
                                   resources={"GPU": 1} if gpus else None)
            future.add_done_callback(lambda f: events.put(("done", f)))
            futures[future.key] = future
            case_of[future.key] = case.case_id
        stack.callback(lambda: client.cancel(list(futures.values())))
        yield from _follow(client, futures, case_of, events, cancel)


def _unsubscribe(client: Client) -> None:
    for topic in (EVENT_TOPIC, "all"):
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)


def _forget_plugin(client: Client, name: str) -> None:
    with contextlib.suppress(Exception):
        client.unregister_worker_plugin(name)


def _follow(client: Client, futures: dict, case_of: dict, events: queue.Queue,
            cancel) -> Iterator[tuple[str, str | None, Any]]:
    """Turn task events, worker deaths and finished futures into the batch's events."""
    pending = set(futures)
    key_of = {case_id: key for key, case_id in case_of.items()}
    open_on: dict[str, str] = {}  # case_id -> worker address of its running attempt
    deaths: dict[str, int] = {}
    last_error: dict[str, dict] = {}
    while pending:
        if cancel is not None and cancel.cancelled:
            raise CancelledError("batch", "cancelled by the user")
        try:
            kind, payload = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind == "task" and payload.get("kind") == "started":
            case_id = payload["case_id"]
            if case_id in last_error:
                error = last_error.pop(case_id)
                yield "lost", case_id, {"outcome": "error", "reason": error["error"], "worker": error["worker"]}
            elif case_id in open_on:  # its previous worker's death was not announced (yet)
                yield "lost", case_id, {"outcome": "lost", "worker": open_on[case_id],
                                        "reason": f"worker {open_on[case_id]} died during the case; retried"}
                deaths[case_id] = deaths.get(case_id, 0) + 1
            key = key_of[case_id]
            if deaths.get(case_id, 0) >= 2 and key in pending:
                # An existing cluster may allow more failures than our one retry: stop it here.
                client.cancel([futures[key]])
                pending.discard(key)
                yield "finished", case_id, _failure(case_id, "its Dask workers died during the case twice "
                                                    "(killed or out of memory): not retried again")
                continue
            open_on[case_id] = payload["worker"]
            yield "started", case_id, payload
        elif kind == "task" and payload.get("kind") == "error":
            last_error[payload["case_id"]] = payload
            open_on.pop(payload["case_id"], None)
        elif kind == "cluster" and payload.get("action") == "remove-worker" and not payload.get("expected"):
            address = payload.get("worker", "")
            for key in payload.get("processing-tasks", ()):
                case_id = case_of.get(key)
                if case_id is not None and open_on.get(case_id) == address and key in pending:
                    open_on.pop(case_id)
                    deaths[case_id] = deaths.get(case_id, 0) + 1
                    yield "lost", case_id, {"outcome": "lost", "worker": address,
                                            "reason": f"worker {address} died during the case (killed or out of "
                                                      "memory); retrying once on another worker"}
        elif kind == "done":
            key = payload.key
            if key not in pending:
                continue
            pending.discard(key)
            case_id = case_of[key]
            open_on.pop(case_id, None)
            yield "finished", case_id, _result(payload, case_id, last_error.pop(case_id, None))


def _result(future, case_id: str, error_event: dict | None) -> dict[str, Any]:
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        exc = future.exception()
        died = _died_reason(exc)
        if died:
            return _failure(case_id, died)
        if error_event:
            return _failure(case_id, error_event["error"], error_event.get("traceback"))
        return _failure(case_id, internal_error_line(exc))
    return _failure(case_id, "its task was cancelled on the cluster (the scheduler restarted or lost this client)")
