"""order_e2e.py gen DIR | run MOUNT

gen: writes a zarr v2 store DIR/order.zarr with arrays x (200x4, chunks of 10 rows) and
y (200, chunks of 25).

run: over MOUNT (order.zarr mounted with zarrfs), for num_workers 0 and 2, two epochs each,
a real torch DataLoader reads x[i] and y[i] through zarr-python in the order of a shuffled
sampler wrapped in zarrfs.torch.OrderedSampler. For every epoch it records the order the
loader read and the lines the sampler sent (sampler.last_order), and checks that the lines are
exactly the rows of the chunks of that read order, each chunk at its first touch. Prints one JSON line:
{"epochs": [{"num_workers", "epoch", "read": [...], "sent": [...], "warnings": [...]}],
"problems": N}; exits 1 on a problem.

What zarrfs itself did with each order (the daemon's side) is up to the caller: the Go test
records what reached `zarrfs prefetch --order -` with a wrapper on ZARRFS_BIN, and can compare
it with "sent" and with what the daemon reports.
"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.utils.data as tud
import zarr

from zarrfs.torch import OrderedSampler

N, XCHUNK, YCHUNK = 200, 10, 25


def gen(d):
    root = zarr.open_group(os.path.join(d, "order.zarr"), mode="w")
    root.create_dataset("x", data=np.arange(N * 4, dtype="i4").reshape(N, 4), chunks=(XCHUNK, 4))
    root.create_dataset("y", data=np.arange(N, dtype="f8") / 2, chunks=(YCHUNK,))
    zarr.consolidate_metadata(os.path.join(d, "order.zarr"))


class Rows(tud.Dataset):
    def __init__(self, mnt):
        self.mnt, self.x, self.y = mnt, None, None

    def __len__(self):
        return N

    def __getitem__(self, i):
        if self.x is None:  # once per worker
            g = zarr.open_group(self.mnt, mode="r")
            self.x, self.y = g["x"], g["y"]
        x, y = self.x[i], self.y[i]
        assert x[0] == 4 * i and y == i / 2, (i, x, y)
        return i


def expected(mnt, read):
    """The lines for an epoch that read `read`: the rows of each chunk of x and y at its
    first touch, consecutive chunks of one array merged."""
    seen, out = set(), []
    for i in read:
        for name, n in (("x", XCHUNK), ("y", YCHUNK)):
            c = i // n
            if (name, c) in seen:
                continue
            seen.add((name, c))
            if out and out[-1][0] == name and out[-1][2] == c:
                out[-1][2] = c + 1
            else:
                out.append([name, c, c + 1, n])
    return ["%s/%s[%d:%d]" % (mnt, name, lo * n, hi * n) for name, lo, hi, n in out]


def run(mnt):
    problems, epochs = [], []
    for workers in (0, 2):
        g = torch.Generator()
        g.manual_seed(workers)
        sampler = OrderedSampler(tud.RandomSampler(range(N), generator=g),
                                 [os.path.join(mnt, "x"), os.path.join(mnt, "y")])
        loader = tud.DataLoader(Rows(mnt), batch_size=16, sampler=sampler, num_workers=workers)
        warned = False  # the sampler warns once per problem, not every epoch
        for epoch in range(2):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                read = [int(i) for batch in loader for i in batch]
            e = {"num_workers": workers, "epoch": epoch, "read": read, "sent": sampler.last_order,
                 "warnings": [str(x.message) for x in w]}
            epochs.append(e)
            if sorted(read) != list(range(N)):
                problems.append("num_workers=%d epoch %d: the loader did not read every index once" % (workers, epoch))
            want = expected(mnt, read)
            if sampler.last_order and sampler.last_order != want:
                problems.append("num_workers=%d epoch %d: sent %s, want %s" % (workers, epoch, sampler.last_order[:5], want[:5]))
            warned = warned or bool(e["warnings"])
            if not sampler.last_order and not warned:
                problems.append("num_workers=%d epoch %d: nothing sent and no warning" % (workers, epoch))
    for p in problems:
        print("PROBLEM " + p, file=sys.stderr)
    print(json.dumps({"pid": os.getpid(), "epochs": epochs, "problems": len(problems)}))
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
        sys.exit(0)
    sys.exit(run(sys.argv[2]))
