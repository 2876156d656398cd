"""Test helpers: a fake ``zarrfs`` executable and fake mounts.

The fake appends one JSON object per run to $FAKE_ZARRFS_LOG: its argv, what it read
on stdin (for ``prefetch --order -``), its pid and its parent's pid. $FAKE_ZARRFS_FAIL
makes it fail with that message the way zarrfs does (``zarrfs: MSG`` on stderr,
status 1). ``stats --json`` prints $FAKE_ZARRFS_STATS (a JSON object).
"""

import errno
import json
import os
import stat
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

import zarrfs

FAKE = textwrap.dedent(
    """\
    #!%s
    import json, os, sys
    args = sys.argv[1:]
    rec = {"argv": args, "pid": os.getpid(), "ppid": os.getppid(),
           "token": os.environ.get("ZARRFS_TOKEN")}
    if args[:3] == ["prefetch", "--order", "-"]:
        rec["stdin"] = sys.stdin.read()
    with open(os.environ["FAKE_ZARRFS_LOG"], "a") as f:
        f.write(json.dumps(rec) + "\\n")
    fail = os.environ.get("FAKE_ZARRFS_FAIL")
    if fail:
        sys.stderr.write("zarrfs: " + fail + "\\n")
        sys.exit(1)
    if args[:2] == ["stats", "--json"]:
        print(os.environ.get("FAKE_ZARRFS_STATS", "{}"))
    """
) % sys.executable


class FakeZarrfsCase(unittest.TestCase):
    """Puts the fake zarrfs first on PATH (and in ZARRFS_BIN) and makes ``self.mnt``, a
    directory that looks like a zarrfs mount root, with v2 arrays made by
    ``self.array()``."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="zarrfs-pytest-")
        self.addCleanup(self.tmp.cleanup)
        d = self.tmp.name
        bindir = os.path.join(d, "bin")
        os.mkdir(bindir)
        self.fake = os.path.join(bindir, "zarrfs")
        with open(self.fake, "w") as f:
            f.write(FAKE)
        os.chmod(self.fake, os.stat(self.fake).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.log = os.path.join(d, "log.jsonl")
        env = {
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "ZARRFS_BIN": self.fake,
            "FAKE_ZARRFS_LOG": self.log,
        }
        p = mock.patch.dict(os.environ, env)
        p.start()
        self.addCleanup(p.stop)
        os.environ.pop("FAKE_ZARRFS_FAIL", None)
        self.mnt = os.path.join(d, "mnt")
        os.mkdir(self.mnt)
        self.plain = os.path.join(d, "plain")  # not a mount
        os.mkdir(self.plain)
        self._fake_mount(self.mnt)

    def _fake_mount(self, root):
        """Marks root as a zarrfs mount: the control xattr where the file system takes
        user xattrs, else a patched zarrfs.find_mount."""
        try:
            os.setxattr(root, zarrfs.CONTROL_XATTR, b"/run/fake.sock")
            return
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
        real = zarrfs.find_mount

        def find_mount(path):
            p = os.path.abspath(os.fspath(path))
            if p == root or p.startswith(root + os.sep):
                return root
            return real(path)

        patcher = mock.patch.object(zarrfs, "find_mount", find_mount)
        patcher.start()
        self.addCleanup(patcher.stop)

    def array(self, name, shape, chunks, root=None, v3=False):
        p = os.path.join(root or self.mnt, name)
        os.makedirs(p, exist_ok=True)
        if v3:
            meta = {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "float32",
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                    "chunk_key_encoding": {"name": "default"}, "fill_value": 0, "codecs": []}
            fn = "zarr.json"
        else:
            meta = {"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": "<f4", "order": "C",
                    "compressor": None, "fill_value": 0, "filters": None}
            fn = ".zarray"
        with open(os.path.join(p, fn), "w") as f:
            json.dump(meta, f)
        return p

    def runs(self):
        """The fake's recorded runs."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(l) for l in f if l.strip()]

    def orders(self):
        """The stdin of each ``prefetch --order -`` run, as lists of lines."""
        return [r["stdin"].splitlines() for r in self.runs() if r["argv"][:3] == ["prefetch", "--order", "-"]]
