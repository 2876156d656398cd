"""Unit tests of zarrfs's Python API against a fake zarrfs executable.

Run from anywhere but the repository root (there ``import zarr`` would find the Go
package directory):  cd python/tests && /usr/bin/python3 -m unittest -v
(or python3 -m pytest python/tests). They import zarrfs from ../ unless it is installed.
"""

import datetime
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zarrfs  # noqa: E402
from fakezarrfs import FakeZarrfsCase  # noqa: E402


class TestBinary(FakeZarrfsCase):
    def test_env_wins(self):
        self.assertEqual(zarrfs.binary(), self.fake)

    def test_path(self):
        del os.environ["ZARRFS_BIN"]
        b = zarrfs.binary()
        # The one installed with this Python (a venv with the wheel), or else the fake on PATH.
        self.assertTrue(os.path.isfile(b) and os.access(b, os.X_OK), b)
        if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "zarrfs")):
            self.assertIn(b, [self.fake] + [os.path.join(d, "zarrfs") for d in ("/usr/local/bin", "/usr/bin")])

    def test_missing(self):
        os.environ["ZARRFS_BIN"] = os.path.join(self.tmp.name, "nope")
        with self.assertRaises(zarrfs.ZarrfsError):
            zarrfs.unmount(self.mnt)


class TestMain(FakeZarrfsCase):
    def test_python_m_zarrfs(self):
        import subprocess
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        p = subprocess.run([sys.executable, "-m", "zarrfs", "stats", "--json", self.mnt], env=env,
                           cwd=self.tmp.name, stdout=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(self.runs()[-1]["argv"], ["stats", "--json", self.mnt])


class TestMount(FakeZarrfsCase):
    def test_flags(self):
        target = os.path.join(self.tmp.name, "new", "mnt")
        m = zarrfs.mount("https://h:8443/era5.zarr", target, pin="sha256:ab", token_file="/t", cache_size="50G",
                         allow_other=True, refresh=0, retry_timeout=datetime.timedelta(minutes=2),
                         attr_timeout="1h", log_level="debug", token="s3cret")
        self.assertIsInstance(m, zarrfs.Mount)
        self.assertEqual(m.path, target)
        self.assertEqual(os.fspath(m), target)
        self.assertTrue(os.path.isdir(target), "mount creates the mount point")
        (run,) = self.runs()
        self.assertEqual(run["argv"][0], "mount")
        self.assertEqual(run["argv"][-3:], ["--", "https://h:8443/era5.zarr", target])
        self.assertEqual(sorted(run["argv"][1:-3]), sorted([
            "--pin=sha256:ab", "--token-file=/t", "--cache-size=50G", "--allow-other", "--refresh=0s",
            "--retry-timeout=120s", "--attr-timeout=1h", "--log-level=debug"]))
        self.assertEqual(run["token"], "s3cret", "the token goes in the environment")
        self.assertNotIn("s3cret", " ".join(run["argv"]))

    def test_false_and_none(self):
        zarrfs.mount("http://h/s.zarr", self.plain, allow_other=False, cache_dir=None)
        (run,) = self.runs()
        self.assertIn("--allow-other=false", run["argv"])
        self.assertFalse(any(a.startswith("--cache-dir") for a in run["argv"]))

    def test_error_is_zarrfs_message(self):
        os.environ["FAKE_ZARRFS_FAIL"] = "cannot reach the origin https://h/s.zarr: connection refused"
        with self.assertRaises(zarrfs.ZarrfsError) as cm:
            zarrfs.mount("https://h/s.zarr", self.plain)
        self.assertEqual(str(cm.exception), "cannot reach the origin https://h/s.zarr: connection refused")
        self.assertEqual(cm.exception.returncode, 1)

    def test_context_manager_unmounts(self):
        with zarrfs.mount("http://h/s.zarr", self.plain) as m:
            pass
        argvs = [r["argv"] for r in self.runs()]
        self.assertEqual(argvs[-1], ["unmount", "--", m.path])

    def test_context_manager_keeps_the_exception(self):
        with self.assertRaises(KeyError):
            with zarrfs.mount("http://h/s.zarr", self.plain):
                os.environ["FAKE_ZARRFS_FAIL"] = "busy"
                raise KeyError("x")

    def test_stats(self):
        os.environ["FAKE_ZARRFS_STATS"] = '{"url": "http://h/s.zarr", "cache": {"hits": 3}}'
        s = zarrfs.Mount(self.mnt).stats()
        self.assertEqual(s["cache"]["hits"], 3)
        self.assertEqual(self.runs()[-1]["argv"], ["stats", "--json", "--", self.mnt])

    def test_unmount_lazy(self):
        zarrfs.unmount(self.mnt, lazy=True)
        self.assertEqual(self.runs()[-1]["argv"], ["unmount", "--lazy", "--", self.mnt])

    def test_refresh_and_prefetch(self):
        m = zarrfs.Mount(self.mnt)
        m.refresh()
        m.prefetch("t2m[0:10]", os.path.join(self.mnt, "u10"))
        m.prefetch()
        zarrfs.prefetch(os.path.join(self.mnt, "t2m"), wait=True)
        self.assertEqual([r["argv"] for r in self.runs()], [
            ["refresh", "--", self.mnt],
            ["prefetch", "--quiet", "--", self.mnt + "/t2m[0:10]", self.mnt + "/u10"],
            ["prefetch", "--quiet", "--", self.mnt],
            ["prefetch", "--quiet", "--wait", "--", self.mnt + "/t2m"],
        ])

    def test_is_mount(self):
        self.assertTrue(zarrfs.is_mount(self.mnt))
        self.assertTrue(zarrfs.is_mount(os.path.join(self.mnt, "a", "b")))
        self.assertEqual(zarrfs.find_mount(os.path.join(self.mnt, "a")), self.mnt)
        self.assertFalse(zarrfs.is_mount(self.plain))


class TestSendOrder(FakeZarrfsCase):
    def test_lines(self):
        t2m = os.path.join(self.mnt, "t2m")
        n = zarrfs.send_order(t2m, [5, (0, 3), slice(7, 9), (4, None), "sub[1:2]", ("u10", 2), ("u10", 3, 5),
                                    ("u10", slice(6, None)), os.path.join(self.mnt, "v[0]")])
        self.assertEqual(n, 9)
        self.assertEqual(self.orders(), [[
            t2m + "[5:6]", t2m + "[0:3]", t2m + "[7:9]", t2m + "[4:]", t2m + "/sub[1:2]",
            t2m + "/u10[2:3]", t2m + "/u10[3:5]", t2m + "/u10[6:]", self.mnt + "/v[0]"]])
        self.assertEqual(self.runs()[-1]["argv"], ["prefetch", "--order", "-"])

    def test_from_mountpoint(self):
        zarrfs.send_order(self.mnt, [("t2m", 480, 504), ("group/x", 0)])
        self.assertEqual(self.orders(), [[self.mnt + "/t2m[480:504]", self.mnt + "/group/x[0:1]"]])

    def test_bad_targets(self):
        for bad in [-1, (3, 3), (5, 2), slice(0, 4, 2), True, 1.5, ("t2m", 1, 2, 3)]:
            with self.assertRaises((ValueError, TypeError), msg=repr(bad)):
                zarrfs.send_order(self.mnt, [bad])
        self.assertEqual(self.runs(), [], "nothing is sent for a bad target")

    def test_not_a_mount(self):
        with self.assertRaises(zarrfs.NotAMountError):
            zarrfs.send_order(self.plain, [1])
        self.assertEqual(self.runs(), [])

    def test_refused(self):
        os.environ["FAKE_ZARRFS_FAIL"] = "daemon of /x: no such array t2m"
        with self.assertRaises(zarrfs.ZarrfsError) as cm:
            zarrfs.send_order(self.mnt, [("t2m", 0)])
        self.assertEqual(str(cm.exception), "daemon of /x: no such array t2m")


if __name__ == "__main__":
    unittest.main()
