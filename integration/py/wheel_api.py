"""wheel_api.py URL DIRECT MOUNTPOINT CACHE_DIR PIN TOKEN_FILE

Run with the python of a venv where the zarrfs wheel was pip-installed: mounts URL (a
`zarrfs serve` origin of the store at DIRECT) on MOUNTPOINT through zarrfs's Python API,
reads every array with zarr-python and compares it with DIRECT, reads stats(), tries the
read order, and unmounts. A wrong pin must raise zarrfs.ZarrfsError with zarrfs's message.

Prints one JSON summary line on stdout; exits 1 on any problem.
"""
import json
import os
import sys
import warnings

import zarrfs
from compare_v2 import attempt, find_arrays, same_values


def main():
    url, direct, mnt, cache_dir, pin, token_file = sys.argv[1:7]
    problems = []
    out = {"zarrfs_module": zarrfs.__file__, "version": zarrfs.__version__, "binary": zarrfs.binary()}
    venv = sys.prefix
    if not zarrfs.__file__.startswith(venv) or not out["binary"].startswith(venv):
        problems.append("zarrfs is not the venv's: module %s, binary %s (venv %s)" % (zarrfs.__file__, out["binary"], venv))

    # A wrong pin: the exception carries zarrfs's one-line message.
    try:
        zarrfs.mount(url, mnt, pin="sha256:" + "0" * 64, token_file=token_file, cache_dir=cache_dir,
                     retry_timeout=3)
        problems.append("a mount with a wrong pin succeeded")
        zarrfs.unmount(mnt)
    except zarrfs.ZarrfsError as e:
        out["wrong_pin_error"] = str(e)
        if "--pin" not in str(e) or "\n" in str(e) or e.returncode != 1:
            problems.append("wrong pin: unexpected error %r (status %s)" % (str(e), e.returncode))

    with zarrfs.mount(url, mnt, pin=pin, token_file=token_file, cache_dir=cache_dir, cache_size="256MiB",
                      refresh=0, log_level="debug") as m:
        if not zarrfs.is_mount(mnt) or zarrfs.find_mount(os.path.join(mnt, "2d.chunked.i2")) != mnt:
            problems.append("is_mount/find_mount do not see the mount")
        arrays = find_arrays(direct)
        compared = 0
        for rel in arrays:
            d_ok, d = attempt(direct, rel)
            m_ok, v = attempt(mnt, rel)
            if d_ok != m_ok:
                problems.append("%s: direct %s, mount %s" % (rel, d_ok, m_ok))
            elif d_ok:
                if not same_values(d, v):
                    problems.append("%s differs" % rel)
                compared += 1
        out["arrays"], out["compared"] = len(arrays), compared
        if compared < 0.8 * len(arrays):
            problems.append("only %d of %d arrays compared" % (compared, len(arrays)))

        # The other commands, through the real binary: they must simply succeed.
        m.refresh()
        m.prefetch("2d.chunked.i2[0:2]", wait=True)
        m.prefetch()

        s = m.stats()
        out["stats_keys"] = sorted(s)
        if s.get("mountpoint") != mnt or s.get("url") != url:
            problems.append("stats(): mountpoint %r url %r" % (s.get("mountpoint"), s.get("url")))
        if not s.get("remote", {}).get("requests"):
            problems.append("stats() shows no origin requests: %r" % s.get("remote"))
        if not (s.get("cache", {}).get("misses") or s.get("cache", {}).get("Misses")):
            out["cache_counters"] = s.get("cache")

        # The read order: `zarrfs prefetch --order -` may not exist in this daemon yet; either
        # it takes the order, or it refuses with a ZarrfsError (never anything else).
        try:
            n = zarrfs.send_order(os.path.join(mnt, "2d.chunked.i2"), [1, 0])
            out["send_order"] = "sent %d lines" % n
        except zarrfs.ZarrfsError as e:
            out["send_order"] = "refused: %s" % e
        try:
            import torch.utils.data  # noqa: F401
            from zarrfs.torch import OrderedSampler
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                idx = list(OrderedSampler(range(6), [os.path.join(mnt, "1d.chunked.i2")]))
            if idx != list(range(6)):
                problems.append("OrderedSampler over the mount yielded %r" % idx)
            out["sampler"] = {"indices": len(idx), "warnings": [str(x.message) for x in w]}
        except ImportError:
            out["sampler"] = "no torch"
    if zarrfs.is_mount(mnt):
        problems.append("still mounted after the with block")
    for p in problems:
        print("PROBLEM " + p, file=sys.stderr)
    out["problems"] = len(problems)
    print(json.dumps(out))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
