"""Unit tests of zarrfs.torch.OrderedSampler with a real DataLoader and a fake zarrfs.

Skipped where PyTorch is not installed. Run as test_api.py says.
"""

import os
import sys
import unittest
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.utils.data as tud
except ImportError:  # pragma: no cover
    torch = None

import zarrfs  # noqa: E402
from fakezarrfs import FakeZarrfsCase  # noqa: E402

if torch is not None:
    from zarrfs.torch import OrderedSampler, chunk_length

    class Rows(tud.Dataset):
        """Index i is row i; returns (i, pid of the process that loaded it)."""

        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return torch.tensor([i, os.getpid()])


def expected(paths_lengths, read_order):
    """The lines an epoch reading read_order should send: the rows of each (array, chunk)
    at its first touch, consecutive chunks of one array merged."""
    seen, out = set(), []
    for i in read_order:
        for p, n in paths_lengths:
            c = i // n
            if (p, c) in seen:
                continue
            seen.add((p, c))
            if out and out[-1][0] == p and out[-1][2] == c:
                out[-1][2] = c + 1
            else:
                out.append([p, c, c + 1, n])
    return ["%s[%d:%d]" % (p, lo * n, hi * n) for p, lo, hi, n in out]


@unittest.skipIf(torch is None, "PyTorch is not installed")
class TestOrderedSampler(FakeZarrfsCase):
    def setUp(self):
        super().setUp()
        self.n = 100
        self.x = self.array("x", [self.n, 3], [8, 3])
        self.y = self.array("y", [self.n], [30], v3=True)

    def loader_epochs(self, num_workers, epochs=2, batch_size=7, seed=0):
        g = torch.Generator()
        g.manual_seed(seed)
        sampler = OrderedSampler(tud.RandomSampler(Rows(self.n), generator=g), [self.x, self.y])
        loader = tud.DataLoader(Rows(self.n), batch_size=batch_size, sampler=sampler, num_workers=num_workers)
        reads, pids = [], []
        for _ in range(epochs):
            order, loaders = [], set()
            for batch in loader:
                order += batch[:, 0].tolist()
                loaders |= set(batch[:, 1].tolist())
            reads.append(order)
            pids.append(loaders)
        return sampler, reads, pids

    def check_loader(self, num_workers):
        sampler, reads, pids = self.loader_epochs(num_workers)
        self.assertEqual([sorted(r) for r in reads], [list(range(self.n))] * 2)
        self.assertNotEqual(reads[0], reads[1], "a shuffled sampler gives each epoch its own order")
        runs = [r for r in self.runs() if r["argv"][:3] == ["prefetch", "--order", "-"]]
        self.assertEqual(len(runs), 2, "one order per epoch")
        for r in runs:
            self.assertEqual(r["ppid"], os.getpid(), "the order is sent from the main process, not a worker")
        if num_workers:
            self.assertNotIn(os.getpid(), set().union(*pids), "the workers loaded the samples")
        want = [expected([(self.x, 8), (self.y, 30)], r) for r in reads]
        self.assertEqual(self.orders(), want, "the lines sent are the chunks in the order the loader read them")
        self.assertEqual(sampler.last_order, want[-1])

    def test_num_workers_0(self):
        self.check_loader(0)

    def test_num_workers_2(self):
        self.check_loader(2)

    def test_persistent_workers(self):
        g = torch.Generator()
        g.manual_seed(1)
        sampler = OrderedSampler(tud.RandomSampler(Rows(self.n), generator=g), self.x)
        loader = tud.DataLoader(Rows(self.n), batch_size=10, sampler=sampler, num_workers=2, persistent_workers=True)
        reads = [[int(i) for b in loader for i in b[:, 0]] for _ in range(2)]
        self.assertEqual(self.orders(), [expected([(self.x, 8)], r) for r in reads])

    def test_sequential_merges(self):
        sampler = OrderedSampler(tud.SequentialSampler(range(self.n)), [self.x])
        self.assertEqual(list(sampler), list(range(self.n)))
        self.assertEqual(self.orders(), [[self.x + "[0:104]"]])

    def test_samples_per_chunk(self):
        sampler = OrderedSampler([3, 4, 0, 1, 2, 9], [self.x, self.y], samples_per_chunk=2)
        self.assertEqual(list(sampler), [3, 4, 0, 1, 2, 9])
        self.assertEqual(self.orders(), [[self.x + "[2:4]", self.y + "[2:4]", self.x + "[4:6]", self.y + "[4:6]",
                                          self.x + "[0:2]", self.y + "[0:2]", self.x + "[8:10]", self.y + "[8:10]"]])
        sampler = OrderedSampler([3, 4, 0], [self.x, self.y], samples_per_chunk={self.x: 50, "y": 1})
        list(sampler)
        self.assertEqual(self.orders()[-1], [self.x + "[0:50]", self.y + "[3:5]", self.y + "[0:1]"])

    def test_batch_sampler(self):
        bs = tud.BatchSampler(tud.SequentialSampler(range(20)), batch_size=4, drop_last=False)
        sampler = OrderedSampler(bs, [self.x])
        self.assertEqual(list(sampler), list(bs))
        self.assertEqual(len(sampler), 5)
        loader = tud.DataLoader(Rows(20), batch_sampler=sampler, num_workers=0)
        self.assertEqual([b[:, 0].tolist() for b in loader], list(bs))
        self.assertEqual(self.orders(), [[self.x + "[0:24]"]] * 2)

    def test_distributed_sampler(self):
        ds = Rows(self.n)
        samplers = [OrderedSampler(tud.DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=3), [self.x])
                    for r in (0, 1)]
        for epoch in range(2):
            got = []
            for s in samplers:
                s.set_epoch(epoch)
                idx = list(s)
                self.assertEqual(len(idx), len(s))
                got.append(idx)
                self.assertEqual(self.orders()[-1], expected([(self.x, 8)], idx))
            self.assertEqual(sorted(got[0] + got[1]), list(range(self.n)))
        epoch0 = self.orders()[0]
        self.assertNotEqual(epoch0, self.orders()[2], "set_epoch reaches the DistributedSampler")

    def test_not_a_mount_warns_and_iterates(self):
        px = self.array("x", [self.n], [8], root=self.plain)
        g = torch.Generator()
        g.manual_seed(2)
        inner = tud.RandomSampler(range(self.n), generator=g)
        sampler = OrderedSampler(inner, [px])
        loader = tud.DataLoader(Rows(self.n), batch_size=9, sampler=sampler, num_workers=2)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for _ in range(2):
                rows = sorted(int(i) for b in loader for i in b[:, 0])
                self.assertEqual(rows, list(range(self.n)))
        msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
        self.assertEqual(len(msgs), 1, msgs)
        self.assertIn("not inside a zarrfs mount", msgs[0])
        self.assertEqual(self.runs(), [], "zarrfs is not run for a path outside a mount")
        self.assertEqual(sampler.last_order, [])

    def test_zarrfs_refuses_warns_and_iterates(self):
        os.environ["FAKE_ZARRFS_FAIL"] = "prefetch: unknown flag: --order"
        sampler = OrderedSampler(range(10), [self.x])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(list(sampler), list(range(10)))
            self.assertEqual(list(sampler), list(range(10)))
        msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
        self.assertEqual(len(msgs), 1, msgs)
        self.assertIn("unknown flag: --order", msgs[0])
        self.assertEqual(len(self.runs()), 2)

    def test_no_binary_warns_and_iterates(self):
        os.environ["ZARRFS_BIN"] = os.path.join(self.tmp.name, "missing-zarrfs")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(list(OrderedSampler(range(5), [self.x])), list(range(5)))
        self.assertEqual(len([x for x in w if issubclass(x.category, RuntimeWarning)]), 1)

    def test_chunk_length(self):
        self.assertEqual(chunk_length(self.x), 8)
        self.assertEqual(chunk_length(self.y), 30)
        with self.assertRaises(OSError):
            chunk_length(os.path.join(self.mnt, "missing"))


if __name__ == "__main__":
    unittest.main()
