#!/usr/bin/python3
"""check_ml.py climate|images MOUNT DIRECT

Reads a store written by gen_ml.py the way training code does, once under MOUNT and once
under DIRECT, and checks both give the same data:

  climate  xarray.open_zarr (consolidated, dask-backed): every variable and coordinate, values,
           dtypes, dims and attributes equal.
  images   a torch DataLoader (num_workers=4, shuffle=True, seeded generator) over a Dataset
           that reads x[i], y[i] from the zarr group; the samples are compared by index, and
           the epoch order must be the same both ways (same seed).

Prints one JSON summary line on stdout; exits 1 on any difference, 2 on bad usage.
"""
import json
import sys
import warnings

import numpy as np


def check_climate(mount, direct):
    import xarray as xr

    problems = []
    dm = xr.open_zarr(mount, consolidated=True)
    dd = xr.open_zarr(direct, consolidated=True)
    if sorted(dm.variables) != sorted(dd.variables):
        problems.append(f"variables differ: mount {sorted(dm.variables)} / direct {sorted(dd.variables)}")
    if dm.attrs != dd.attrs:
        problems.append(f"dataset attrs differ: {dm.attrs} / {dd.attrs}")
    compared = 0
    for name in sorted(dd.variables):
        if name not in dm.variables:
            continue
        vm, vd = dm[name], dd[name]
        if vm.dims != vd.dims or vm.dtype != vd.dtype or vm.attrs != vd.attrs:
            problems.append(f"{name}: dims/dtype/attrs differ: {vm.dims} {vm.dtype} {vm.attrs} / "
                            f"{vd.dims} {vd.dtype} {vd.attrs}")
            continue
        am, ad = vm.values, vd.values
        if not np.array_equal(am, ad, equal_nan=am.dtype.kind == "f"):
            problems.append(f"{name}: values differ")
        compared += 1
    if not dm.identical(dd):
        problems.append("datasets not identical (xarray.Dataset.identical)")
    return {"variables": len(dd.variables), "compared": compared}, problems


class ZarrImages:
    """A map-style torch Dataset reading one sample per call, as training code does.

    The zarr group is opened lazily in each DataLoader worker (after fork), never shared.
    """

    def __init__(self, path):
        import zarr

        self.path = path
        self._group = None
        self._len = zarr.open_consolidated(path, mode="r")["y"].shape[0]

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        import zarr

        if self._group is None:
            self._group = zarr.open_consolidated(self.path, mode="r")
        return i, self._group["x"][i], self._group["y"][i]


def epoch(path):
    # the machine has 2 cores; 4 workers is what the test asks for, the warning is noise
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    import torch
    from torch.utils.data import DataLoader

    gen = torch.Generator()
    gen.manual_seed(1234)
    loader = DataLoader(ZarrImages(path), batch_size=16, shuffle=True, num_workers=4, generator=gen)
    order, samples = [], {}
    for idx, x, y in loader:
        for k in range(len(idx)):
            i = int(idx[k])
            order.append(i)
            samples[i] = (x[k].numpy().copy(), int(y[k]))
    return order, samples


def check_images(mount, direct):
    problems = []
    om, sm = epoch(mount)
    od, sd = epoch(direct)
    n = len(ZarrImages(direct))
    if sorted(od) != list(range(n)):
        problems.append(f"direct epoch did not visit every sample once ({len(od)} of {n})")
    if om != od:
        problems.append("sample order differs between mount and direct with the same seed")
    if set(sm) != set(sd):
        problems.append(f"sample index sets differ: {len(sm)} / {len(sd)}")
    differing = [i for i in sorted(sd) if i in sm and (sm[i][1] != sd[i][1] or sm[i][0].shape != sd[i][0].shape
                                                      or not np.array_equal(sm[i][0], sd[i][0]))]
    if differing:
        problems.append(f"{len(differing)} samples differ, first indices {differing[:10]}")
    return {"samples": len(sd), "compared": len(sd) - len(differing)}, problems


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("climate", "images"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, mount, direct = sys.argv[1:]
    summary, problems = (check_climate if kind == "climate" else check_images)(mount, direct)
    for p in problems:
        print(f"DIFF {p}", file=sys.stderr)
    summary.update(kind=kind, problems=len(problems))
    print(json.dumps(summary))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
