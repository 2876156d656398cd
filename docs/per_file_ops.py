#!/usr/bin/python3
"""Per-call cost of reading every file under a directory: open, isatty (the ioctl
Python's open() does to choose its buffering), read, close; µs per file, per round.

    cd /tmp && OPSR=3 /usr/bin/python3 /path/to/docs/per_file_ops.py MOUNTPOINT

Used in docs/benchmarks.md ("Where a small file's time went through the mount")."""
import os, sys, time, fcntl, termios
root = sys.argv[1]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
for rnd in range(int(os.environ.get("OPSR","3"))):
    t_open=t_ioctl=t_read=t_close=0.0
    for p in files:
        a=time.perf_counter(); fd=os.open(p, os.O_RDONLY); b=time.perf_counter()
        try: fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        except OSError: pass
        c=time.perf_counter(); os.read(fd, 1<<20); d=time.perf_counter(); os.close(fd); e=time.perf_counter()
        t_open+=b-a; t_ioctl+=c-b; t_read+=d-c; t_close+=e-d
    n=len(files)
    print(f"round {rnd}: per file us: open {t_open/n*1e6:.0f} ioctl {t_ioctl/n*1e6:.0f} read {t_read/n*1e6:.0f} close {t_close/n*1e6:.0f}")
