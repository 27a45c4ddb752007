"""Where a sweep's cells train: a local process pool (:class:`LocalRunner`: spawned workers, one torch thread each,
bound to their coordinator's life) or a Dask cluster (:class:`DaskRunner`); each trains a group of cells as one batched
model (:func:`run_cells`). The schedule that feeds them is :mod:`bnmft.experiments.sweep`'s."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from ..errors import InputError
from .config import TrainConfig


def run_cells(configs: list[dict], device: str = "cpu") -> list[dict]:
    """Train cells that share their shapes (:func:`bnmft.experiments.groups.group_cells`) together as one batched
    model; a single cell on the CPU trains alone. Runs in a worker process (one torch thread)."""
    import torch

    from .batched import train_batched
    from .training import train

    torch.set_num_threads(1)
    cfgs = [TrainConfig(**c) for c in configs]
    if len(cfgs) == 1 and device == "cpu":
        return [train(cfgs[0])]
    return train_batched(cfgs, device=device)


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when its coordinator (pid ``parent``) dies, even by ``kill -9`` (which runs no
    clean-up): the kernel's parent-death signal on Linux, and everywhere a thread that notices the parent is gone.

    The signal only fires for a death after it is armed, so the parent is checked once armed: a coordinator killed
    while this worker was starting (spawn, imports) has already left it to init, and it exits at once."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError) as err:  # not Linux: the watcher thread below does it alone
        print(f"bnmft worker: no parent-death signal ({err}); watching the parent instead", file=sys.stderr)
    if os.getppid() != parent:  # the coordinator died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(coordinator: int) -> None:
    """A pool worker's start: bound to its coordinator's life first, then torch (seconds of imports)."""
    _die_with_parent(coordinator)
    import torch

    torch.set_num_threads(1)


class LocalRunner:
    """Cells on a local process pool (spawned workers, one torch thread each), or in this process for one worker."""

    def __init__(self, workers: int | None, cells: int, device: str = "cpu"):
        self.device = device
        self.count = max(1, min(workers or multiprocessing.cpu_count(), cells))
        if device != "cpu":
            self.count = 1  # one process drives the GPU; its batched models fill it
        self.parallel = self.count  # groups that train at once
        self.queue: list[list[dict]] = []
        self.pending: dict = {}
        self.pool: ProcessPoolExecutor | None = None
        if self.count > 1:
            ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
            self.pool = ProcessPoolExecutor(
                max_workers=self.count, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
            )
        else:
            import torch

            torch.set_num_threads(1)

    def has_room(self) -> bool:
        return len(self.pending) + len(self.queue) < self.count

    def busy(self) -> bool:
        return bool(self.pending or self.queue)

    def in_flight(self) -> int:
        return len(self.pending) + len(self.queue)

    def submit(self, configs: list[dict]) -> None:
        if self.pool is None:
            self.queue.append(configs)
        else:
            self.pending[self.pool.submit(run_cells, configs, self.device)] = configs

    def collect(self, timeout: float) -> list[tuple[dict, dict]]:
        if self.pool is None:
            configs = self.queue.pop(0)
            return list(zip(configs, run_cells(configs, self.device), strict=True))
        finished, _ = wait(self.pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return [pair for fut in finished for pair in zip(self.pending.pop(fut), fut.result(), strict=True)]

    def close(self, terminate: bool = False) -> None:
        """Shut the pool down after the cells in flight; ``terminate``: abandon them (their workers killed)."""
        if self.pool is not None:
            if terminate:
                for process in list(self.pool._processes.values()):  # (no public API kills a busy worker)
                    process.terminate()
            self.pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner:
    """Cells on a Dask distributed cluster (up to twice its worker threads claimed at a time)."""

    def __init__(self, scheduler: str, device: str = "cpu"):
        self.device = device
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - a declared dependency
            raise InputError("--scheduler needs the 'distributed' package") from None
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            # parsed here first: a malformed address otherwise fails inside distributed's IO-loop thread, which on a
            # loaded machine can surface as a bare AssertionError instead of the parse error
            parse_host_port(parse_address(scheduler)[1], default_port=8786)
            self.client = Client(scheduler, timeout=20)
        except (OSError, ValueError, TypeError) as err:  # unreachable, or not an address distributed can parse
            raise InputError(f"--scheduler: cannot connect to {scheduler!r} ({err})") from None
        self.parallel = max(1, sum(self.client.nthreads().values()))  # groups that train at once
        self.limit = 2 * self.parallel
        self.pending: dict = {}

    def has_room(self) -> bool:
        return len(self.pending) < self.limit

    def busy(self) -> bool:
        return bool(self.pending)

    def in_flight(self) -> int:
        return len(self.pending)

    def submit(self, configs: list[dict]) -> None:
        self.pending[self.client.submit(run_cells, configs, self.device, pure=False)] = configs

    def collect(self, timeout: float) -> list[tuple[dict, dict]]:
        from distributed import wait as dask_wait

        try:
            finished, _ = dask_wait(list(self.pending), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:  # distributed's way of saying "none finished yet": the caller renews and asks again
            return []
        return [pair for fut in finished for pair in zip(self.pending.pop(fut), fut.result(), strict=True)]

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self.client.cancel(list(self.pending))
        self.client.close()


__all__ = ["DaskRunner", "LocalRunner", "run_cells"]
