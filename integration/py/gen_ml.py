#!/usr/bin/python3
"""gen_ml.py OUTDIR

Writes two small zarr v2 stores with Debian's zarr-python 2.13 / xarray, shaped like the
stores a training job reads (the same layouts as shared/bench/gen_data.py, much smaller):

  OUTDIR/climate.zarr  xarray Dataset: t2m, u10, msl float32 over (time, lat, lon), chunked
                       along time, with time/lat/lon coordinates and attributes; consolidated.
  OUTDIR/images.zarr   group: x uint8 (N, C, H, W) chunked along N, y int64 (N,) labels;
                       consolidated.

Deterministic (seeded). Prints one JSON line with what it wrote.
"""
import json
import os
import sys

import numcodecs
import numpy as np
import xarray as xr
import zarr

COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)

NTIME, NLAT, NLON, TCHUNK = 96, 16, 32, 12
NIMAGES, C, H, W, NCHUNK = 600, 3, 16, 16, 64  # 600 % 64 != 0: a ragged last chunk


def make_climate(path):
    rng = np.random.default_rng(0)
    lat = np.linspace(-87.5, 87.5, NLAT, dtype=np.float32)
    lon = np.linspace(0, 360, NLON, endpoint=False, dtype=np.float32)
    time_ = np.arange(NTIME, dtype="int64") * np.timedelta64(6, "h") + np.datetime64("2000-01-01T00:00")
    shape = (NTIME, NLAT, NLON)
    data_vars = {
        "t2m": (("time", "lat", "lon"), (260 + 30 * rng.random(shape)).astype(np.float32), {"units": "K"}),
        "u10": (("time", "lat", "lon"), rng.normal(0, 8, shape).astype(np.float32), {"units": "m s-1"}),
        "msl": (("time", "lat", "lon"), (1000 + rng.normal(0, 20, shape)).astype(np.float32), {"units": "hPa"}),
    }
    ds = xr.Dataset(data_vars, coords={"time": time_, "lat": lat, "lon": lon},
                    attrs={"title": "zarrfs integration test dataset"})
    enc = {v: {"compressor": COMPRESSOR, "chunks": (TCHUNK, NLAT, NLON)} for v in data_vars}
    ds.to_zarr(path, mode="w", consolidated=True, encoding=enc)


def make_images(path):
    rng = np.random.default_rng(1)
    root = zarr.open_group(zarr.DirectoryStore(path), mode="w")
    root.create_dataset("x", data=rng.integers(0, 256, size=(NIMAGES, C, H, W), dtype=np.uint8),
                        chunks=(NCHUNK, C, H, W), compressor=COMPRESSOR)
    root.create_dataset("y", data=rng.integers(0, 10, size=NIMAGES, dtype=np.int64),
                        chunks=(NCHUNK,), compressor=COMPRESSOR)
    root.attrs["description"] = "images and labels"
    zarr.consolidate_metadata(zarr.DirectoryStore(path))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    make_climate(os.path.join(out, "climate.zarr"))
    make_images(os.path.join(out, "images.zarr"))
    print(json.dumps({"climate.zarr": {"shape": [NTIME, NLAT, NLON], "time_chunk": TCHUNK},
                      "images.zarr": {"n": NIMAGES, "chunk": NCHUNK}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
