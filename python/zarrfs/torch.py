"""PyTorch helpers: tell the zarrfs mount each epoch's read order.

::

    from zarrfs.torch import OrderedSampler

    sampler = OrderedSampler(torch.utils.data.RandomSampler(ds),
                             ["/content/era5/t2m", "/content/era5/u10"])
    loader = torch.utils.data.DataLoader(ds, batch_size=24, sampler=sampler, num_workers=2)

At the start of each epoch the sampler draws the whole epoch's indices from the
sampler it wraps, sends the chunks they touch, in the order they are first
touched, to the mount (``zarrfs prefetch --order -``), then yields the same
indices. It runs in the process that iterates the sampler (the DataLoader's main
process, whatever ``num_workers``), once per epoch. When a path is not inside a
zarrfs mount, or zarrfs cannot take the order, it warns once and iterates as the
wrapped sampler would.
"""

from __future__ import annotations

import json
import os
import warnings

import torch.utils.data

import zarrfs as _zarrfs

__all__ = ["OrderedSampler", "chunk_length"]


def chunk_length(array_path) -> int:
    """The chunk length along the first axis of the zarr array at ``array_path``
    (v2 ``.zarray`` or v3 ``zarr.json``; for a sharded v3 array, the shard's)."""
    p = os.fspath(array_path)
    v2 = os.path.join(p, ".zarray")
    if os.path.exists(v2):
        with open(v2) as f:
            meta = json.load(f)
        chunks = meta.get("chunks")
    else:
        with open(os.path.join(p, "zarr.json")) as f:
            meta = json.load(f)
        if meta.get("node_type") != "array":
            raise ValueError("%s is not a zarr array" % p)
        chunks = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    if not chunks:
        raise ValueError("%s: a 0-dimensional array has no first axis to order" % p)
    return int(chunks[0])


class OrderedSampler(torch.utils.data.Sampler):
    """Wraps ``sampler`` (a ``RandomSampler``, ``SequentialSampler``,
    ``DistributedSampler``, any iterable of indices, or of lists of indices like a
    ``BatchSampler``) and sends each epoch's chunk order to the zarrfs mount.

    ``array_paths`` are the arrays the dataset's ``__getitem__(i)`` reads (a path or a
    list of paths inside zarrfs mounts), each at index ``i`` along its first axis.
    ``samples_per_chunk`` is how many consecutive indices share one chunk: None reads
    each array's chunk length from its metadata; an int applies to all arrays; a dict
    maps array path to int. Index ``i`` touches chunk ``i // samples_per_chunk``.

    ``last_order`` holds the lines sent for the latest epoch (empty when nothing was
    sent).
    """

    def __init__(self, sampler, array_paths, samples_per_chunk=None):
        super().__init__(None)
        self.sampler = sampler
        if isinstance(array_paths, (str, os.PathLike)):
            array_paths = [array_paths]
        self.array_paths = [os.path.abspath(os.fspath(p)) for p in array_paths]
        if not self.array_paths:
            raise ValueError("OrderedSampler needs at least one array path")
        self.samples_per_chunk = samples_per_chunk
        self.last_order = []
        self._lengths = None
        self._warned = set()

    def __len__(self):
        return len(self.sampler)

    def set_epoch(self, epoch):
        """Passed on to the wrapped sampler (``DistributedSampler`` needs it)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        indices = list(self.sampler)
        self._send(indices)
        return iter(indices)

    def _warn(self, msg):
        if msg not in self._warned:
            self._warned.add(msg)
            warnings.warn("zarrfs.torch.OrderedSampler: " + msg + "; iterating without telling the mount the order",
                          RuntimeWarning, stacklevel=4)

    def _chunk_lengths(self):
        if self._lengths is None:
            spc = self.samples_per_chunk
            lengths = []
            for p in self.array_paths:
                if isinstance(spc, dict):
                    n = spc.get(p, spc.get(os.path.basename(p)))
                    n = chunk_length(p) if n is None else n
                elif spc is None:
                    n = chunk_length(p)
                else:
                    n = spc
                n = int(n)
                if n < 1:
                    raise ValueError("samples per chunk of %s is %d, want >= 1" % (p, n))
                lengths.append(n)
            self._lengths = lengths
        return self._lengths

    def order(self, indices):
        """The (mount, [(array path, start row, stop row), ...]) pairs for an epoch
        that reads ``indices`` in this order: the rows of each chunk of each array once,
        where the chunk is first touched, consecutive chunks of one array merged into one
        range."""
        mounts = [_zarrfs.find_mount(p) for p in self.array_paths]
        lengths = self._chunk_lengths()
        seen = set()
        per_mount = {}
        for item in indices:
            for i in item if isinstance(item, (list, tuple)) else (item,):
                i = int(i)
                for k, (p, n) in enumerate(zip(self.array_paths, lengths)):
                    c = i // n
                    if (k, c) in seen:
                        continue
                    seen.add((k, c))
                    out = per_mount.setdefault(mounts[k], [])
                    if out and out[-1][0] == p and out[-1][2] == c:
                        out[-1][2] = c + 1
                    else:
                        out.append([p, c, c + 1])
        rows = dict(zip(self.array_paths, lengths))
        return [(m, [(p, lo * rows[p], hi * rows[p]) for p, lo, hi in ts]) for m, ts in per_mount.items()]

    def _send(self, indices):
        self.last_order = []
        try:
            plan = self.order(indices)
        except _zarrfs.ZarrfsError as e:
            self._warn(str(e))
            return
        except (OSError, ValueError) as e:
            self._warn("cannot read the arrays' chunk lengths (%s)" % e)
            return
        for mnt, targets in plan:
            try:
                _zarrfs.send_order(mnt, targets)
            except _zarrfs.ZarrfsError as e:
                self._warn("zarrfs prefetch --order: %s" % e)
                continue
            self.last_order.extend(_zarrfs.order_lines(mnt, targets))
