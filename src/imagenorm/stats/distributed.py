"""Statistics across ranks with torch.distributed: shards, and the reduction of partial state.

Every rank reads its own shard of the item list (whole units such as tar shards or parquet
row groups ``rank, rank + world, ...`` where there are at least ``world`` of them, else items
``rank, rank + world, ...``: no item twice, none skipped, no padding), reduces it to a :class:`~imagenorm.stats.measurement.Measurement`, and the ranks then
combine their states with collectives: fixed-size histograms and counts by ``all_reduce``
(sum); everything else (float moments, ranged histograms, skipped lists, the audit) is
gathered and merged in rank order, the same on every rank, so every rank ends with the
result of a single process: exactly for integer data, to rounding for floats.
"""

from __future__ import annotations

import datetime

import numpy as np

from ..errors import ImagenormError, first_line, warn
from .items import ItemSource


class ShardItems(ItemSource):
    """Rank ``rank``'s share of ``items``: whole units (tar shards, row groups) ``rank, rank +
    world, ...`` where there are at least ``world`` of them, else every ``world``-th item from
    ``rank`` (a warning says when a rank is left with nothing)."""

    def __init__(self, items: ItemSource, rank: int, world: int) -> None:
        self.items, self.rank, self.world = items, rank, world
        units = items.units()
        if units and len(units) >= world:
            taken = units[rank::world]
            self.indices = np.concatenate([np.arange(start, stop) for start, stop in taken] or [np.zeros(0, np.int64)])
            self._units, first = [], 0
            for start, stop in taken:
                self._units.append((first, first + stop - start))
                first += stop - start
        else:
            self.indices = np.arange(rank, len(items), world)
            self._units = None
            if len(items) < world:
                warn(f"{len(items)} item(s) for {world} ranks: {world - len(items)} rank(s) measure nothing")
        self.hidden = items.hidden

    def __len__(self) -> int:
        return len(self.indices)

    def _global(self, index: int) -> int:
        return int(self.indices[index])

    def name(self, index: int) -> str:
        return self.items.name(self._global(index))

    def path(self, index: int) -> str | None:
        return self.items.path(self._global(index))

    def files(self, index: int) -> list[str]:
        return self.items.files(self._global(index))

    def key(self, index: int) -> str:
        return self.items.key(self._global(index))

    @property
    def only_decodes(self) -> bool:
        return self.items.only_decodes

    def load(self, index, options):
        return self.items.load(self._global(index), options)

    def slices(self, index, options):
        return self.items.slices(self._global(index), options)

    def probe(self, index, options):
        return self.items.probe(self._global(index), options)

    def global_index(self, index: int) -> int:
        return self._global(index)

    def units(self) -> list[tuple[int, int]] | None:
        return self._units

    def read_whole(self, index: int) -> bool:
        return self.items.read_whole(self._global(index))


def process_group(group=None):
    """The initialized default group (or ``group``); a clear error when there is none."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ImagenormError("distributed=True needs an initialized torch.distributed process group (e.g. under torchrun)")
    return group


def _device(group):
    import torch
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_ranks(group=None, timeout: float | None = None) -> None:
    """Wait for every rank; name the ranks that do not arrive within ``timeout`` seconds."""
    import torch.distributed as dist

    try:
        if dist.get_backend(group) == "gloo" and timeout is not None:
            dist.monitored_barrier(group=group, timeout=datetime.timedelta(seconds=timeout), wait_all_ranks=True)
        else:
            dist.barrier(group=group)
    except RuntimeError as error:
        raise ImagenormError(f"the ranks did not all arrive: {first_line(error)}") from None



def gather_merge(value, group=None):
    """Every rank's ``value`` (picklable, with ``merge``), merged in rank order on every rank."""
    gathered = gather(value, group)
    merged = gathered[0]
    for other in gathered[1:]:
        merged = merged.merge(other)
    return merged


def gather(value, group=None) -> list:
    """Every rank's small picklable ``value``, in rank order."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(gathered, value, group=group)
    except RuntimeError as error:
        raise ImagenormError(f"a rank failed or timed out: {first_line(error)}") from None
    return gathered


def all_reduce_counts(counts: np.ndarray, group=None) -> np.ndarray:
    """Sum an int64 array over all ranks with one ``all_reduce``."""
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(counts)).to(_device(group))
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    except RuntimeError as error:
        raise ImagenormError(f"a rank failed or timed out while summing histograms: {first_line(error)}") from None
    return tensor.cpu().numpy()


def reduce_measurement(measurement, group=None):
    """Combine the ranks' :class:`~imagenorm.stats.measurement.Measurement` (see the module docstring).

    When every rank's state has the same fixed-size count array (``State.sum_key``), the
    counts are summed in place with one ``all_reduce`` and only the light rest is gathered;
    otherwise (ranged histograms of other ranges, promoted dtypes, moments) whole states are
    gathered and merged in rank order.
    """
    from dataclasses import replace

    state = measurement.state
    keys = gather(state.sum_key(), group)
    if keys[0] is None or any(key != keys[0] for key in keys):
        return gather_merge(measurement, group)
    summed = all_reduce_counts(state.counts, group)  # the bulky part, summed in place
    merged = gather_merge(replace(measurement, state=state.emptied()), group)
    merged.state = merged.state.with_counts(summed)
    return merged


def broadcast(value, group=None, source: int = 0):
    """``value`` of rank ``source`` on every rank."""
    import torch.distributed as dist

    box = [value]
    try:
        dist.broadcast_object_list(box, src=source, group=group)
    except RuntimeError as error:
        raise ImagenormError(f"a rank failed or timed out: {first_line(error)}") from None
    return box[0]


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of several started by torchrun (or alike)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start_process_group(backend: str = "auto", timeout: float = 300.0) -> None:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
