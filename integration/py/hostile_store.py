#!/usr/bin/python3
"""hostile_store.py gen DIR | check MOUNT DIRECT ARRAY...

gen: writes the good part of the hostile-metadata store with zarr-python (Debian's 2.13):
a 2-d int32 array with ragged edge chunks, a float64 array inside a group, and a fixed-width
string array. The test adds the bad nodes next to them.

check: reads each ARRAY (a path below both roots) under MOUNT and under DIRECT and checks the
same dtype, shape and values; then opens MOUNT's root group the way zarr-python lists it
(readdir, no consolidated metadata) and checks its arrays and groups are exactly the good
ones. Prints one JSON line; exits 1 on any difference.
"""
import json
import os
import sys

import numpy as np
import zarr


def gen(root):
    g = zarr.open_group(root, mode="w")
    g.create_dataset("good", data=np.arange(20 * 50, dtype="<i4").reshape(20, 50), chunks=(7, 13))
    g.create_dataset("grp/inner", data=np.linspace(0, 1, 300).astype("<f8"), chunks=(64,))
    g.create_dataset("text", data=np.array(["a", "bb", "ccc"] * 10, dtype="<U3"), chunks=(8,))


def check(mnt, direct, arrays):
    problems = []
    for p in arrays:
        a = zarr.open_array(os.path.join(mnt, p), mode="r")
        b = zarr.open_array(os.path.join(direct, p), mode="r")
        x, y = a[...], b[...]
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            problems.append(f"{p}: mount {x.dtype}{x.shape} differs from direct {y.dtype}{y.shape}")
    g = zarr.open_group(mnt, mode="r")
    listed = sorted(list(g.array_keys()) + list(g.group_keys()))
    print(json.dumps({"compared": len(arrays), "root_members": listed, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
