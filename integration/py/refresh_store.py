#!/usr/bin/python3
"""refresh_store.py gen DIR | change DIR | read STORE

The store of the live-refresh checks, written and changed with Debian's zarr-python 2.13 and
xarray exactly as a producer updates a published dataset:

  gen DIR     xarray Dataset DIR: t2m and u10, float32 over (time=400, lat=8, lon=8), chunked
              4 along time (100 chunks each), with coordinates; consolidated metadata.
  change DIR  rewrites 1% of the data chunks with an xarray region write (t2m, time 0..7:
              2 of the 200 data chunks), adds the variable v10 with to_zarr(mode="a"), and
              re-consolidates the metadata.
  read STORE  reads every array of STORE completely with zarr-python (consolidated) and
              xarray, and prints one JSON line: {"arrays": {name: sha256 of its values}}.

Deterministic (seeded).
"""
import hashlib
import json
import sys

import numcodecs
import numpy as np
import xarray as xr
import zarr

NTIME, NLAT, NLON, TCHUNK = 400, 8, 8, 4
COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def gen(path):
    rng = np.random.default_rng(7)
    shape = (NTIME, NLAT, NLON)
    time_ = np.arange(NTIME, dtype="int64") * np.timedelta64(6, "h") + np.datetime64("2000-01-01T00:00")
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), (260 + 30 * rng.random(shape)).astype(np.float32), {"units": "K"}),
            "u10": (("time", "lat", "lon"), rng.normal(0, 8, shape).astype(np.float32), {"units": "m s-1"}),
        },
        coords={"time": time_, "lat": np.linspace(-80, 80, NLAT, dtype=np.float32),
                "lon": np.linspace(0, 315, NLON, dtype=np.float32)},
        attrs={"title": "zarrfs live refresh test"},
    )
    enc = {v: {"compressor": COMPRESSOR, "chunks": (TCHUNK, NLAT, NLON)} for v in ("t2m", "u10")}
    ds.to_zarr(path, mode="w", consolidated=True, encoding=enc)


def change(path):
    rng = np.random.default_rng(8)
    # A region write: new values for two t2m chunks, nothing else rewritten.
    region = slice(0, 2 * TCHUNK)
    patch = xr.Dataset({"t2m": (("time", "lat", "lon"), (200 + rng.random((2 * TCHUNK, NLAT, NLON))).astype(np.float32))})
    patch.to_zarr(path, region={"time": region}, consolidated=False)
    # A new variable over the existing dimensions. mode="a" replaces the group's attributes
    # with the dataset's, so a producer passes them along.
    v10 = xr.Dataset({"v10": (("time", "lat", "lon"), rng.normal(0, 5, (NTIME, NLAT, NLON)).astype(np.float32), {"units": "m s-1"})},
                     attrs=xr.open_zarr(path).attrs)
    v10.to_zarr(path, mode="a", consolidated=False,
                encoding={"v10": {"compressor": COMPRESSOR, "chunks": (TCHUNK, NLAT, NLON)}})
    zarr.consolidate_metadata(path)


def read(path):
    group = zarr.open_consolidated(path, mode="r")
    out = {}
    for name, arr in group.arrays():
        out[name] = hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()
    ds = xr.open_zarr(path, consolidated=True)
    ds.load()
    missing = sorted(set(out) - set(ds.variables))
    if missing:
        raise SystemExit(f"xarray does not see {missing}, zarr-python does")
    print(json.dumps({"arrays": out, "title": ds.attrs.get("title")}))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("gen", "change", "read"):
        raise SystemExit(__doc__)
    {"gen": gen, "change": change, "read": read}[sys.argv[1]](sys.argv[2])
