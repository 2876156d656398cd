"""zarrfs from Python: mount a remote zarr store as a local read-only directory.

A thin layer over the ``zarrfs`` command (installed next to this package by
``pip install zarrfs``); the standard library only::

    import zarrfs

    with zarrfs.mount("https://storage:8443/era5.zarr", "/content/era5",
                      pin="sha256:9f86d0...", token_file="/root/.zarrfs-token",
                      cache_size="50G") as m:
        ds = xarray.open_zarr(m.path)
        print(m.stats()["cache"])

    zarrfs.send_order("/content/era5/t2m", [(0, 96), (408, 432)])   # read order, by rows

Every failure of the command raises :class:`ZarrfsError`, whose message is
zarrfs's own one-line message (``str(err)``). PyTorch users see
:mod:`zarrfs.torch` for a sampler that tells the mount each epoch's order.
"""

from __future__ import annotations

import datetime as _dt
import errno as _errno
import json as _json
import os as _os
import shutil as _shutil
import subprocess as _subprocess
import sys as _sys
import sysconfig as _sysconfig

try:
    from ._version import __version__
except ImportError:  # a source checkout: cmd/release writes _version.py into the wheel
    __version__ = "0+unknown"

__all__ = [
    "Mount",
    "ZarrfsError",
    "binary",
    "find_mount",
    "is_mount",
    "mount",
    "prefetch",
    "refresh",
    "send_order",
    "stats",
    "unmount",
]

CONTROL_XATTR = "user.zarrfs.control"
"""The extended attribute a zarrfs mount's root carries (its daemon's control socket)."""

_TIMEOUT = 300  # seconds any one zarrfs command may take (a mount waits for its origin)


class ZarrfsError(Exception):
    """A zarrfs command failed. ``str(err)`` is zarrfs's one-line message.

    ``returncode`` is the command's exit status (None if it could not be run),
    ``output`` everything it printed.
    """

    def __init__(self, message, returncode=None, output=""):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.output = output


class NotAMountError(ZarrfsError):
    """The path is not inside a zarrfs mount."""


def binary() -> str:
    """The path of the ``zarrfs`` executable this package runs.

    In order: ``$ZARRFS_BIN``; the one pip installed with this package (the
    environment's scripts directory, next to ``sys.executable``, or the user
    scheme's); the first on ``PATH``.
    """
    env = _os.environ.get("ZARRFS_BIN")
    if env:
        return env
    candidates = [_os.path.join(_os.path.dirname(_sys.executable), "zarrfs")]
    for scheme in (None, "posix_user"):
        try:
            d = _sysconfig.get_path("scripts", scheme) if scheme else _sysconfig.get_path("scripts")
        except KeyError:
            continue
        if d:
            candidates.append(_os.path.join(d, "zarrfs"))
    for c in candidates:
        if _os.path.isfile(c) and _os.access(c, _os.X_OK):
            return c
    found = _shutil.which("zarrfs")
    if found:
        return found
    raise ZarrfsError(
        "the zarrfs command is not installed: pip install zarrfs (or put zarrfs on PATH, or set ZARRFS_BIN)"
    )


def _message(output: str, returncode) -> str:
    """zarrfs's one-line message from what it printed."""
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    for line in lines:
        if line.startswith("zarrfs: "):
            return line[len("zarrfs: "):]
    if lines:
        return lines[-1]
    return "zarrfs exited with status %s" % returncode


def _run(args, *, input=None, env=None, timeout=_TIMEOUT, check=True) -> str:
    """Runs ``zarrfs args...`` and returns its stdout; raises ZarrfsError on failure."""
    cmd = [binary()] + [str(a) for a in args]
    full_env = None
    if env:
        full_env = dict(_os.environ)
        full_env.update(env)
    try:
        p = _subprocess.run(
            cmd,
            input=input,
            env=full_env,
            stdout=_subprocess.PIPE,
            stderr=_subprocess.PIPE,
            stdin=None if input is not None else _subprocess.DEVNULL,
            universal_newlines=True,
            timeout=timeout,
        )
    except FileNotFoundError as e:
        raise ZarrfsError("cannot run %s: %s" % (cmd[0], e)) from None
    except _subprocess.TimeoutExpired as e:
        raise ZarrfsError("zarrfs %s did not finish within %ss" % (args[0], timeout)) from e
    if check and p.returncode != 0:
        raise ZarrfsError(_message(p.stderr + "\n" + p.stdout, p.returncode), p.returncode, p.stdout + p.stderr)
    return p.stdout


# --- options -----------------------------------------------------------------------------

def _duration(v) -> str:
    if isinstance(v, _dt.timedelta):
        v = v.total_seconds()
    if isinstance(v, bool):
        raise TypeError("a duration cannot be a bool")
    if isinstance(v, (int, float)):
        return ("%d" % v if float(v).is_integer() else repr(float(v))) + "s"
    return str(v)


_DURATIONS = {"retry_timeout", "refresh", "attr_timeout"}


def _flags(options) -> list:
    """Keyword options to CLI flags: cache_size="50G" -> --cache-size=50G, True -> --flag,
    False -> --flag=false, None is left out; durations take seconds or a timedelta."""
    out = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append(flag + "=false")
        elif name in _DURATIONS:
            out.append(flag + "=" + _duration(value))
        else:
            out.append(flag + "=" + (_os.fspath(value) if isinstance(value, _os.PathLike) else str(value)))
    return out


# --- mounts -------------------------------------------------------------------------------

def find_mount(path) -> str:
    """The root of the zarrfs mount holding ``path`` (the nearest directory at or
    above it whose root carries zarrfs's control attribute).

    Raises NotAMountError if there is none, ZarrfsError for a dead mount.
    """
    p = _os.path.abspath(_os.fspath(path))
    while True:
        try:
            _os.getxattr(p, CONTROL_XATTR)
            return p
        except OSError as e:
            if e.errno == _errno.ENOTCONN:
                raise ZarrfsError(
                    "%s is a dead mount (its daemon exited): clean it with zarrfs unmount --lazy %s" % (p, p)
                ) from None
        parent = _os.path.dirname(p)
        if parent == p:
            raise NotAMountError("%s is not inside a zarrfs mount" % _os.fspath(path))
        p = parent


def is_mount(path) -> bool:
    """Whether ``path`` is inside a live zarrfs mount."""
    try:
        find_mount(path)
        return True
    except ZarrfsError:
        return False


class Mount:
    """A live zarrfs mount. Use as a context manager to unmount on leaving it.

    ``str(m)``, ``os.fspath(m)`` and ``m.path`` are the mount point.
    """

    def __init__(self, mountpoint, url=None):
        self.path = _os.path.abspath(_os.fspath(mountpoint))
        self.url = url

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    def __repr__(self):
        return "zarrfs.Mount(%r, url=%r)" % (self.path, self.url)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Leaving the block because of an exception must not hide it behind an unmount
        # failure; a clean exit reports it.
        try:
            self.unmount()
        except ZarrfsError:
            if exc[0] is None:
                raise
        return False

    @property
    def mounted(self) -> bool:
        return is_mount(self.path)

    def stats(self) -> dict:
        """The mount's counters, as ``zarrfs stats --json`` prints them."""
        return stats(self.path)

    def unmount(self, lazy=False):
        unmount(self.path, lazy=lazy)

    def refresh(self):
        refresh(self.path)

    def prefetch(self, *paths, wait=False):
        """Warm paths inside the mount (relative to it, or absolute; ``"t2m[0:10]"``)."""
        prefetch(*[p if _os.path.isabs(p) else _os.path.join(self.path, p) for p in paths or ["."]], wait=wait)

    def send_order(self, targets):
        """:func:`send_order` with paths relative to this mount."""
        send_order(self.path, targets)


def mount(url, mountpoint, *, token=None, mkdir=True, timeout=_TIMEOUT, **options) -> Mount:
    """Mounts the zarr store at ``url`` on ``mountpoint`` and returns once it is live.

    Options map to ``zarrfs mount`` flags (``zarrfs mount --help``): ``pin``,
    ``token_file``, ``ca_cert``, ``cache_dir``, ``cache_size`` (``"50G"``),
    ``cache_min_free``, ``allow_other``, ``retry_timeout``/``refresh``/``attr_timeout``
    (seconds, a timedelta or ``"5m"``), ``log_level``, ``log_file``, ``metrics_addr``.
    ``token`` is passed to zarrfs in its environment (``ZARRFS_TOKEN``), never on its
    command line. ``mkdir`` creates the mount point if missing. The daemon outlives this
    process: unmount with :func:`unmount`, ``Mount.unmount()`` or a ``with`` block.
    """
    mnt = _os.path.abspath(_os.fspath(mountpoint))
    if mkdir:
        _os.makedirs(mnt, exist_ok=True)
    env = {"ZARRFS_TOKEN": str(token)} if token is not None else None
    _run(["mount"] + _flags(options) + ["--", str(url), mnt], env=env, timeout=timeout)
    return Mount(mnt, url=str(url))


def unmount(mountpoint, lazy=False):
    """Unmounts; with ``lazy``, detaches a busy mount now (it goes once unused)."""
    _run(["unmount"] + (["--lazy"] if lazy else []) + ["--", _os.path.abspath(_os.fspath(mountpoint))])


def stats(mountpoint) -> dict:
    """The counters of the mount holding ``mountpoint`` (``zarrfs stats --json``) as a dict."""
    out = _run(["stats", "--json", "--", _os.path.abspath(_os.fspath(mountpoint))], timeout=60)
    try:
        return _json.loads(out)
    except ValueError:
        raise ZarrfsError("zarrfs stats --json printed no JSON: %r" % out[:200]) from None


def refresh(mountpoint):
    """Picks up changes made to the store on the origin now."""
    _run(["refresh", "--", _os.path.abspath(_os.fspath(mountpoint))])


def prefetch(*paths, wait=False):
    """Fetches paths inside a mount into its cache (``zarrfs prefetch``); with ``wait``,
    returns when they are cached."""
    args = ["prefetch", "--quiet"] + (["--wait"] if wait else [])
    _run(args + ["--"] + [_os.path.abspath(_os.fspath(p)) for p in paths], timeout=None if wait else _TIMEOUT)


# --- the read order -----------------------------------------------------------------------

def _range(r) -> str:
    if isinstance(r, bool):
        raise TypeError("a row index cannot be a bool")
    if isinstance(r, int):
        if r < 0:
            raise ValueError("row index %d is negative" % r)
        return "[%d:%d]" % (r, r + 1)
    if isinstance(r, slice):
        if r.step not in (None, 1):
            raise ValueError("a row range cannot have a step")
        r = (r.start, r.stop)
    if isinstance(r, tuple) and len(r) == 2:
        lo, hi = r
        lo = 0 if lo is None else int(lo)
        if lo < 0:
            raise ValueError("row range %r starts below 0" % (r,))
        if hi is None:
            return "[%d:]" % lo
        hi = int(hi)
        if hi <= lo:
            raise ValueError("row range %r is empty" % (r,))
        return "[%d:%d]" % (lo, hi)
    raise TypeError("a row range is an int, a (start, stop) pair or a slice, not %r" % (r,))


def order_lines(base, targets) -> list:
    """The lines :func:`send_order` sends for ``targets`` under ``base`` (see there)."""
    base = _os.path.abspath(_os.fspath(base))
    lines = []
    for t in targets:
        if isinstance(t, (str, _os.PathLike)):
            path, rng = _os.fspath(t), ""
        elif isinstance(t, tuple) and t and isinstance(t[0], (str, _os.PathLike)):
            path = _os.fspath(t[0])
            rest = t[1:]
            if len(rest) == 1:
                rng = _range(rest[0])
            elif len(rest) == 2:
                rng = _range(tuple(rest))
            else:
                raise TypeError("target %r: want (path, index), (path, start, stop) or (path, slice)" % (t,))
        else:
            path, rng = "", _range(t)
        full = path if _os.path.isabs(path) else (_os.path.join(base, path) if path else base)
        line = _os.path.normpath(full) + rng
        if "\n" in line or "\r" in line:
            raise ValueError("target %r holds a line break" % (t,))
        lines.append(line)
    return lines


def send_order(mountpoint_or_array_path, targets, *, timeout=60):
    """Tells the mount the order in which data will be read, first to last.

    ``targets`` are, relative to ``mountpoint_or_array_path`` (a mount point, a group
    or an array inside a mount):

    - an int ``i``: row ``i`` along the first axis of that array (sent as ``[i:i+1]``);
    - a pair ``(start, stop)`` or a ``slice``: rows ``start`` to ``stop - 1``;
    - a string: a path under it (``"t2m"``, ``"t2m[480:504]"``) or an absolute path;
    - ``(path, i)``, ``(path, start, stop)``, ``(path, slice)``: rows of that array.

    Indices are rows along the first axis (sample indices, as a sampler yields them),
    not chunk indices; the daemon fetches the chunks that hold them. The lines go to
    ``zarrfs prefetch --order -`` on its standard input; zarrfs returns once the daemon
    has the order, which replaces any earlier order for the same mount. Raises
    NotAMountError if the path is not inside a zarrfs mount, ZarrfsError if zarrfs
    refuses the order.
    """
    base = _os.path.abspath(_os.fspath(mountpoint_or_array_path))
    find_mount(base)
    lines = order_lines(base, targets)
    _run(["prefetch", "--order", "-"], input="".join(l + "\n" for l in lines), timeout=timeout)
    return len(lines)
