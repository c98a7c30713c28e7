"""What every benchmark suite shares: one result-row format and isolated runs with their peak memory."""

from __future__ import annotations

import resource
from collections.abc import Callable
from queue import Empty


def result_row(name: str, value: float, unit: str, target: str = "-", passed: bool = True) -> dict:
    """One benchmark result: ``name``, ``value`` (rounded), ``unit``, ``target`` and ``passed``."""
    return {"name": name, "value": round(float(value), 3), "unit": unit, "target": target, "passed": bool(passed)}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _isolated_worker(fn: Callable, args: tuple, queue) -> None:
    """Run ``fn(*args)`` and report its result (or error) and this process's peak resident memory."""
    try:
        queue.put(("ok", fn(*args), _peak_rss_mb()))
    except Exception as error:  # reported to the parent, which raises it with context
        messages = []
        while error is not None:  # MONAI wraps config errors: keep the causes
            messages.append(f"{type(error).__name__}: {error}")
            error = error.__cause__
        queue.put(("error", " <- ".join(messages), _peak_rss_mb()))


#: what every isolated process needs, imported once by the fork server instead of once per process
PRELOAD = ["torch", "monai", "monai.bundle", "monai.engines", "bundle.benchmarks.model"]


def run_isolated(fn: Callable, *args) -> tuple[object, float]:
    """Run a picklable function in a fresh process; return its result and the process's peak memory (MB).

    The process is forked from a fork server that has imported :data:`PRELOAD` and run nothing else (no
    thread pools yet, unlike the caller), so it starts in milliseconds instead of the seconds a spawned
    interpreter spends importing PyTorch and MONAI; its peak memory counts those imports, as a spawned
    process's would.

    Raises:
        RuntimeError: with the child's error when the function failed.
    """
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    queue = context.Queue()
    process = context.Process(target=_isolated_worker, args=(fn, args, queue))
    process.start()
    try:
        while True:  # a child that dies before reporting (killed, failed to start) must not hang the parent
            try:
                status, payload, peak = queue.get(timeout=2)
                break
            except Empty:
                if not process.is_alive():
                    raise RuntimeError(
                        f"{getattr(fn, '__name__', fn)}{args}: the benchmark process exited with code "
                        f"{process.exitcode} before reporting (run from a script file, not stdin)"
                    ) from None
    finally:
        process.join(timeout=60)
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}{args}: {payload}")
    return payload, peak
