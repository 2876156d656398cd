#!/usr/bin/env bash
# Demo: build zarrfs, publish a sample zarr store with `zarrfs serve` (HTTPS,
# a generated certificate pinned by the client, a bearer token), mount it,
# read it through the mount with zarr-python, and unmount. Run as root (or
# with sudo) on Debian/Ubuntu:  sudo bash docs/demo.sh
set -euo pipefail
# sudo resets PATH (secure_path), which drops a go.dev install of Go.
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

cd "$(dirname "$0")/.."
work=${ZARRFS_DEMO_DIR:-/tmp/zarrfs-demo}
port=${ZARRFS_DEMO_PORT:-8765}
py=/usr/bin/python3

command -v go >/dev/null || {
  echo "demo: needs Go 1.26 or later on PATH to build zarrfs (https://go.dev/dl/), or use a release" >&2
  echo "      tarball or 'pip install zarrfs' and follow the steps below by hand" >&2
  exit 1
}

# Python dependencies are checked in isolated mode (-I): run from the repository root, a
# plain 'python3 -c "import zarr"' would import the Go package directory zarr/ as a namespace
# package and pass without zarr-python being installed.
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
[ -x "$py" ] && $py -I -c 'import zarr, numpy' 2>/dev/null || need+=(python3-zarr python3-numpy)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $py -I -c 'import zarr, numpy' || { echo "demo: zarr-python still cannot be imported by $py" >&2; exit 1; }
fi

echo "== building zarrfs"
mkdir -p "$work/bin"
go build -o "$work/bin/zarrfs" ./cmd/zarrfs
zarrfs="$work/bin/zarrfs"

server_pid=
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && { "$zarrfs" unmount "$work/mnt" || fusermount3 -uz "$work/mnt"; }
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; fi || true
}
trap cleanup EXIT

echo "== writing a sample store on the 'storage machine' ($work/origin/sample.zarr)"
rm -rf "$work/origin" "$work/mnt" "$work/cache"
mkdir -p "$work/origin" "$work/mnt"
$py -I - "$work/origin/sample.zarr" <<'EOF'
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

echo "== zarrfs serve: publishing it over HTTPS on 127.0.0.1:$port"
rm -rf "$work/state"
"$zarrfs" serve --addr "127.0.0.1:$port" --state-dir "$work/state" "$work/origin" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q '^Serving' "$work/serve.log" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
sed -n '1,12p' "$work/serve.log"
# What the storage machine printed: the certificate's fingerprint and the token.
pin=$(grep -o 'sha256:[0-9a-f]*' "$work/serve.log" | head -n 1)
cp "$work/state/token" "$work/token"

url="https://127.0.0.1:$port/sample.zarr"
echo "== zarrfs mount --pin $pin --token-file $work/token $url $work/mnt"
"$zarrfs" mount --pin "$pin" --token-file "$work/token" --cache-dir "$work/cache" --cache-size 256MiB "$url" "$work/mnt"
ls -la "$work/mnt" "$work/mnt/climate"

echo "== reading through the mount with zarr-python"
$py -I - "$work/origin/sample.zarr" "$work/mnt" <<'EOF'
import sys, numpy as np, zarr
origin, mnt = (zarr.open_consolidated(p, mode="r") for p in sys.argv[1:3])
for name in ["images", "labels", "climate/t2m"]:
    a, b = origin[name][...], mnt[name][...]
    assert a.dtype == b.dtype and np.array_equal(a, b), name
    print(f"{name:12s} {str(b.shape):18s} {b.dtype}  identical to the origin")
print("attrs:", dict(mnt.attrs))
EOF
"$zarrfs" stats "$work/mnt"

echo "== zarrfs unmount $work/mnt"
"$zarrfs" unmount "$work/mnt"
echo "demo finished: the store was read through zarrfs and matched the origin"
