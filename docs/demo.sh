#!/usr/bin/env bash
# Demo: build zarrfs, publish a sample zarr store over HTTP, mount it, read it
# through the mount with zarr-python, and unmount. Run as root (or with sudo)
# on Debian/Ubuntu:  sudo bash docs/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."
work=${ZARRFS_DEMO_DIR:-/tmp/zarrfs-demo}
port=${ZARRFS_DEMO_PORT:-8765}
py=/usr/bin/python3

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
$py -c 'import zarr' 2>/dev/null || need+=(python3-zarr)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== building zarrfs"
mkdir -p "$work/bin"
go build -o "$work/bin/zarrfs" ./cmd/zarrfs
zarrfs="$work/bin/zarrfs"

server_pid=
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && { "$zarrfs" unmount "$work/mnt" || fusermount3 -uz "$work/mnt"; }
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

echo "== writing a sample store on the 'storage machine' ($work/origin/sample.zarr)"
rm -rf "$work/origin" "$work/mnt" "$work/cache"
mkdir -p "$work/origin" "$work/mnt"
$py - "$work/origin/sample.zarr" <<'EOF'
import sys, numpy as np, zarr
root = zarr.open_group(sys.argv[1], mode="w")
root.attrs["title"] = "zarrfs demo"
rng = np.random.default_rng(0)
root.create_dataset("images", data=rng.integers(0, 255, (256, 3, 32, 32), dtype="u1"), chunks=(32, 3, 32, 32))
root.create_dataset("labels", data=rng.integers(0, 10, 256), chunks=(32,))
g = root.create_group("climate")
g.create_dataset("t2m", data=rng.standard_normal((48, 90, 180)).astype("f4"), chunks=(12, 90, 180))
zarr.consolidate_metadata(sys.argv[1])
EOF

echo "== serving it over HTTP on 127.0.0.1:$port"
$py -m http.server --bind 127.0.0.1 "$port" --directory "$work/origin" >"$work/http.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do
  $py -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/sample.zarr/.zmetadata')" 2>/dev/null && break
  sleep 0.1
done

echo "== zarrfs mount http://127.0.0.1:$port/sample.zarr $work/mnt"
"$zarrfs" mount --cache-dir "$work/cache" --cache-size 256MiB "http://127.0.0.1:$port/sample.zarr" "$work/mnt"
ls -la "$work/mnt" "$work/mnt/climate"

echo "== reading through the mount with zarr-python"
$py - "$work/origin/sample.zarr" "$work/mnt" <<'EOF'
import sys, numpy as np, zarr
origin, mnt = (zarr.open_consolidated(p, mode="r") for p in sys.argv[1:3])
for name in ["images", "labels", "climate/t2m"]:
    a, b = origin[name][...], mnt[name][...]
    assert a.dtype == b.dtype and np.array_equal(a, b), name
    print(f"{name:12s} {str(b.shape):18s} {b.dtype}  identical to the origin")
print("attrs:", dict(mnt.attrs))
EOF

echo "== zarrfs unmount $work/mnt"
"$zarrfs" unmount "$work/mnt"
echo "demo finished: the store was read through zarrfs and matched the origin"
