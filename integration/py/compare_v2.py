#!/usr/bin/python3
"""compare_v2.py MOUNT DIRECT [--min-compared FRACTION]

Reads every zarr v2 array under DIRECT (every directory holding a .zarray) with zarr-python
(Debian's 2.13), once under MOUNT and once under DIRECT, and checks both give the same dtype,
shape and values. An array zarr-python cannot decode from DIRECT (an unsupported codec, say)
must fail identically under MOUNT. Walking MOUNT must find the same set of arrays as walking
DIRECT: zarr-python 2 lists directories to find a group's children, so readdir matters.

At least FRACTION (default 0.8) of the arrays must have been compared for real, so a store
that nobody can read does not pass by failing "identically".

Prints one JSON summary line on stdout; exits 1 on any difference, 2 on bad usage.
"""
import argparse
import json
import os
import sys

import numpy as np
import zarr


def find_arrays(root):
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if ".zarray" in filenames:
            found.append(os.path.relpath(dirpath, root))
    return sorted(found)


def read(root, rel):
    arr = zarr.open_array(os.path.join(root, rel), mode="r")
    return arr[...]


def attempt(root, rel):
    try:
        return True, read(root, rel)
    except Exception as e:  # noqa: BLE001 - any failure must be the same on both sides
        return False, f"{type(e).__name__}: {str(e).replace(root, '<ROOT>')}"


def same_values(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return a.tolist() == b.tolist()
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "V":
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mount")
    ap.add_argument("direct")
    ap.add_argument("--min-compared", type=float, default=0.8)
    a = ap.parse_args()
    problems = []
    direct_arrays = find_arrays(a.direct)
    mount_arrays = find_arrays(a.mount)
    if direct_arrays != mount_arrays:
        problems.append("array sets differ: only in direct %s, only in mount %s" % (
            sorted(set(direct_arrays) - set(mount_arrays)), sorted(set(mount_arrays) - set(direct_arrays))))
    compared = both_failed = 0
    for rel in direct_arrays:
        d_ok, d = attempt(a.direct, rel)
        m_ok, m = attempt(a.mount, rel)
        if d_ok != m_ok:
            problems.append(f"{rel}: direct {'ok' if d_ok else d} but mount {'ok' if m_ok else m}")
            continue
        if not d_ok:
            both_failed += 1
            if d != m:
                problems.append(f"{rel}: different errors: direct {d} / mount {m}")
            else:
                print(f"# {rel}: unreadable both ways: {d}", file=sys.stderr)
            continue
        if not same_values(d, m):
            problems.append(f"{rel}: differs: direct {d.dtype}{d.shape} {str(d)[:200]} / "
                            f"mount {m.dtype}{m.shape} {str(m)[:200]}")
        compared += 1
    if direct_arrays and compared < a.min_compared * len(direct_arrays):
        problems.append(f"only {compared} of {len(direct_arrays)} arrays could be compared "
                        f"(need {a.min_compared:.0%})")
    if not direct_arrays:
        problems.append("no arrays found under direct")
    for p in problems:
        print(f"DIFF {p}", file=sys.stderr)
    print(json.dumps({"arrays": len(direct_arrays), "compared": compared, "both_failed": both_failed,
                      "problems": len(problems)}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
