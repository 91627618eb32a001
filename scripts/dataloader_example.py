"""Reading an aisbatchfs mount from data-loader workers: the README's example, and its test's.

The Dataset is an ordinary file-reading Dataset. Two things make it fast on aisbatchfs: files
are read whole (one open, one read), and the sampler's order is written to the mount's hints
file, so the daemon fetches files in batches ahead of the workers.
"""

from __future__ import annotations

import os


class FileDataset:
    """Every file under `root`, read whole; items are (relative path, bytes)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = sorted(os.path.relpath(os.path.join(d, n), root)
                            for d, _, names in os.walk(root) for n in names)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, bytes]:
        with open(os.path.join(self.root, self.paths[i]), "rb") as f:
            return self.paths[i], f.read()

    def hint(self, order: list[int], mount_root: str) -> None:
        """Tell aisbatchfs the read order (paths relative to the mount root)."""
        rel = os.path.relpath(self.root, mount_root)
        with open(os.path.join(mount_root, ".aisbatchfs", "prefetch"), "w") as f:
            f.writelines(f"{os.path.join(rel, self.paths[i])}\n" for i in order)


def load_all(root: str, mount_root: str, workers: int = 4) -> tuple[str, list[tuple[str, bytes]]]:
    """Read the whole dataset in a shuffled order with `workers` processes; returns which
    loader ran ('torch' or 'fork-pool') and the items."""
    import random

    ds = FileDataset(root)
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)
    ds.hint(order, mount_root)
    try:
        import torch.utils.data as tud
    except ImportError:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return "fork-pool", pool.map(ds.__getitem__, order, chunksize=16)
    loader = tud.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=list,
                            sampler=order)
    return "torch", [item for batch in loader for item in batch]
