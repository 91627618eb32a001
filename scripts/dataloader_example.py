"""Reading an aisbatchfs mount from data-loader workers: the README's example, and its test's.

The Dataset is an ordinary file-reading Dataset. Two things make it fast on aisbatchfs: files
are read whole (one open, one read), and the sampler is wrapped in AnnouncedSampler, which
tells the mount each epoch's order as the epoch starts, so the daemon fetches files in batches
ahead of the workers.
"""

from __future__ import annotations

import os

from aisbatchfs.control import AnnouncedSampler


class FileDataset:
    """Every file under `root`, read whole; items are (relative path, bytes)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, bytes]:
        with open(self.paths[i], "rb") as f:
            return os.path.relpath(self.paths[i], self.root), f.read()


class Shuffled:
    """A stand-in for torch's RandomSampler where torch is absent: a new order each epoch."""

    def __init__(self, n: int, seed: int = 0) -> None:
        import random

        self.n, self.rng = n, random.Random(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # noqa: ANN204
        order = list(range(self.n))
        self.rng.shuffle(order)
        return iter(order)


def load_all(root: str, workers: int = 4) -> tuple[str, list[tuple[str, bytes]], int]:
    """Read the whole dataset in a shuffled order with `workers` processes; returns which
    loader ran ('torch' or 'fork-pool'), the items, and how many paths were announced."""
    ds = FileDataset(root)
    try:
        import torch.utils.data as tud
    except ImportError:
        import multiprocessing

        sampler = AnnouncedSampler(Shuffled(len(ds)), ds.paths)
        order = list(sampler)  # the epoch starts: its order goes to the mount
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return "fork-pool", pool.map(ds.__getitem__, order, chunksize=16), sampler.announced
    sampler = AnnouncedSampler(tud.RandomSampler(ds), ds.paths)
    loader = tud.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=list,
                            sampler=sampler)
    return "torch", [item for batch in loader for item in batch], sampler.announced
