"""Reproducible, resumable loading of the datasets of :mod:`sisr.data.datasets`.

Randomness never comes from a process-global generator during training. :func:`make_loader` puts a
:class:`SeededSampler` in the DataLoader. For every epoch it takes a permutation from
``DistributedSampler`` (a function of ``(seed, epoch)`` only, sharded over ranks when distributed) and
yields keys ``(index, sample_seed)`` instead of bare indices, where ``sample_seed`` is derived from
``(seed, epoch, position in the epoch)``. The dataset seeds a fresh ``numpy`` generator from that key for
the crop position, the flips, and the replacement of an unreadable file. A sample is therefore a pure
function of ``(seed, epoch, position)``: the batches do not depend on ``num_workers``, on which worker
made them, or on what happened before. :class:`InfiniteLoader` turns the loader into an endless batch
stream for iteration-based training, calling ``set_epoch`` at each epoch end; to resume at iteration
``k`` it sets the epoch to ``k // batches_per_epoch`` and starts the sampler at the right position
inside it, so the resumed run yields exactly the batches the uninterrupted run would have, without
reading the skipped ones.

Plain integer indices (``dataset[i]``, or a DataLoader without our sampler) still work; their random
draws are then seeded from Python's ``random`` module, which :func:`seed_worker` seeds in every worker
from torch's per-worker seed.

A :class:`~sisr.errors.SisrError` raised in a loader worker reaches the caller of
:class:`InfiniteLoader` as its own one-line message (torch would wrap it in the worker's traceback).
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sisr.data.datasets import _check_int
from sisr.errors import SisrError

__all__ = ["InfiniteLoader", "SeededSampler", "make_loader", "seed_worker"]


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, position), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` keys: a per-epoch permutation plus a seed for every sample.

    The permutation is ``DistributedSampler``'s (a function of ``seed + epoch``; with several ranks each
    takes every ``num_replicas``-th element, the list padded to a multiple of ``num_replicas``). The
    sample seed depends on ``(seed, epoch, global position in the epoch)`` only, so a sample's random
    crop and flips are the same whatever the number of workers, and resuming mid-epoch reproduces them.

    Call :meth:`set_epoch` before each epoch (:class:`InfiniteLoader` does).
    """

    def __init__(
        self, dataset: Dataset, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        """Wraps a ``DistributedSampler`` for the permutation.

        Args:
            dataset: A sized dataset.
            shuffle: Permute the indices every epoch; False keeps ``0, 1, 2, ...``.
            seed: Non-negative base seed.
            num_replicas: Number of processes sharing the epoch (the distributed world size).
            rank: This process's rank in ``[0, num_replicas)``.
        """
        self.seed = _check_int("seed", seed, minimum=0)
        self.num_replicas = _check_int("num_replicas", num_replicas, minimum=1)
        self.rank = operator.index(rank)
        self._permutation = DistributedSampler(
            dataset, num_replicas=self.num_replicas, rank=self.rank, shuffle=shuffle, seed=self.seed
        )
        self.epoch = 0
        self.start = 0

    @property
    def epoch_size(self) -> int:
        """Samples this rank gets in a whole epoch."""
        return self._permutation.num_samples

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Selects the epoch, and the position (in this rank's samples) at which its iteration begins."""
        if not 0 <= start <= self.epoch_size:
            raise SisrError(f"start {start} is outside an epoch of {self.epoch_size} samples")
        self.epoch = operator.index(epoch)
        self.start = operator.index(start)
        self._permutation.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self._permutation)
        for position in range(self.start, len(indices)):
            global_position = self.rank + position * self.num_replicas
            yield indices[position], _sample_seed(self.seed, self.epoch, global_position)

    def __len__(self) -> int:
        return self.epoch_size - self.start


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds ``random`` and ``numpy`` from torch's per-worker seed.

    Torch gives worker ``i`` the seed ``base_seed + i``, ``base_seed`` drawn from the loader's
    generator; seeding the other libraries from it makes any draw they serve deterministic too.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    distributed: bool = False,
    drop_last: bool,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose batches depend only on ``seed`` (and the epoch), with a :class:`SeededSampler`.

    Args:
        dataset: A dataset accepting :data:`SampleKey` indices (both datasets here do).
        batch_size: Samples per batch (per process when distributed).
        shuffle: Reshuffle every epoch.
        num_workers: Loading processes; 0 loads in the calling process. Results do not depend on it.
        seed: Non-negative seed for the permutation, the crops and the flips.
        distributed: Shard every epoch over the ranks of the initialised ``torch.distributed`` group.
        drop_last: Drop an epoch's last incomplete batch (usual for training).
        pin_memory: Pin batches in page-locked memory (for CUDA).

    Returns:
        The loader; ``loader.sampler`` is the :class:`SeededSampler`.

    Raises:
        SisrError: On a bad option, or ``distributed=True`` without an initialised process group.
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    num_workers = _check_int("num_workers", num_workers, minimum=0)
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise SisrError("distributed loading needs torch.distributed.init_process_group() first")
        num_replicas, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    else:
        num_replicas, rank = 1, 0
    sampler = SeededSampler(dataset, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank)
    generator = torch.Generator()
    generator.manual_seed(seed)  # torch's base seed for the workers, hence seed_worker's seeds
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=pin_memory,
    )


def _worker_message(text: str) -> str:
    """The one-line message of a :class:`SisrError` raised in a DataLoader worker.

    Torch re-raises a worker's exception in the main process with a message of its own: ``Caught SisrError
    in DataLoader worker process N.`` and the worker's whole traceback, whose last line holds the original
    message. Other messages are returned as they are.
    """
    if not text.startswith("Caught SisrError in DataLoader worker"):
        return text
    marker = f"{SisrError.__module__}.{SisrError.__qualname__}: "
    at = text.rfind(marker)
    return text if at < 0 else " ".join(text[at + len(marker) :].split())


class InfiniteLoader(Iterator[Any]):
    """Endless batches from a :func:`make_loader` loader, epoch after epoch, resumable at any iteration.

    Iteration ``k`` (0-based, counting batches) is batch ``k % batches_per_epoch`` of epoch
    ``k // batches_per_epoch``. Starting at ``start_iteration=k`` sets the sampler to that epoch and to
    the sample that opens that batch, so the stream continues exactly as an uninterrupted run would
    (each sample being a function of seed, epoch and position; see the module docstring).

    Attributes:
        iteration: Index of the next batch.
        epoch: Epoch of the next batch.
        batches_per_epoch: Batches in a whole epoch.
    """

    def __init__(self, loader: DataLoader, *, start_iteration: int = 0) -> None:
        """Positions the loader's sampler at ``start_iteration``.

        Args:
            loader: A loader from :func:`make_loader`.
            start_iteration: Number of batches already consumed (the iteration to resume at).

        Raises:
            SisrError: If the loader has no :class:`SeededSampler`, or an epoch has no batch.
        """
        sampler = loader.sampler
        if not isinstance(sampler, SeededSampler):
            raise SisrError("InfiniteLoader needs a loader made by make_loader (with a SeededSampler)")
        batch_size = loader.batch_size
        assert batch_size is not None
        samples = sampler.epoch_size
        per_epoch = samples // batch_size if loader.drop_last else math.ceil(samples / batch_size)
        if per_epoch == 0:
            raise SisrError(
                f"an epoch of {samples} samples gives no batch of {batch_size} with drop_last; "
                "use a smaller batch, more images or enlarge_ratio"
            )
        self._loader = loader
        self._sampler = sampler
        self._batch_size = batch_size
        self.batches_per_epoch = per_epoch
        self.iteration = _check_int("start_iteration", start_iteration, minimum=0)
        self.epoch, batch_in_epoch = divmod(self.iteration, per_epoch)
        sampler.set_epoch(self.epoch, start=batch_in_epoch * batch_size)
        self._batches: Iterator[Any] = iter(loader)
        self._batches_left = per_epoch - batch_in_epoch

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> Any:
        if self._batches_left == 0:
            # The epoch is used up (with drop_last its iterator has not raised StopIteration yet).
            self.epoch += 1
            self._sampler.set_epoch(self.epoch)
            self._batches = iter(self._loader)
            self._batches_left = self.batches_per_epoch
        try:
            batch = next(self._batches)
        except SisrError as e:
            raise SisrError(_worker_message(str(e))) from None
        self._batches_left -= 1
        self.iteration += 1
        return batch
