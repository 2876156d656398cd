package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// orderWrapper stands in for zarrfs on ZARRFS_BIN: it appends what it was asked (argv, the
// standard input of `prefetch --order -`, its parent's pid) to $ORDER_LOG, then runs the real
// zarrfs ($REAL_ZARRFS) with the same arguments and input, and records its exit status.
const orderWrapper = `#!/usr/bin/python3
import json, os, subprocess, sys
args = sys.argv[1:]
data = sys.stdin.read() if args[:3] == ["prefetch", "--order", "-"] else None
p = subprocess.run([os.environ["REAL_ZARRFS"]] + args, input=data, universal_newlines=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
sys.stdout.write(p.stdout)
sys.stderr.write(p.stderr)
with open(os.environ["ORDER_LOG"], "a") as f:
    f.write(json.dumps({"argv": args, "stdin": data, "ppid": os.getppid(), "rc": p.returncode,
                        "stderr": p.stderr.strip()}) + "\n")
sys.exit(p.returncode)
`

// chunkOrder is what an epoch that reads rows in this order must send for order.zarr: the rows
// of each chunk of x (10 rows) and y (25 rows) at its first touch, consecutive chunks of one
// array as one range.
func chunkOrder(mnt string, read []int) []string {
	type run struct {
		name      string
		lo, hi, n int
	}
	seen := map[string]bool{}
	var out []run
	for _, i := range read {
		for _, a := range []struct {
			name string
			n    int
		}{{"x", 10}, {"y", 25}} {
			c := i / a.n
			k := fmt.Sprintf("%s/%d", a.name, c)
			if seen[k] {
				continue
			}
			seen[k] = true
			if l := len(out) - 1; l >= 0 && out[l].name == a.name && out[l].hi == c {
				out[l].hi = c + 1
			} else {
				out = append(out, run{a.name, c, c + 1, a.n})
			}
		}
	}
	lines := make([]string, len(out))
	for i, r := range out {
		lines[i] = fmt.Sprintf("%s/%s[%d:%d]", mnt, r.name, r.lo*r.n, r.hi*r.n)
	}
	return lines
}

// TestOrderedSamplerOverMount: over a real mount, a torch DataLoader (num_workers 0 and 2, two
// epochs each) with zarrfs.torch.OrderedSampler around a shuffled sampler hands
// `zarrfs prefetch --order -` exactly the chunks of the order the loader then reads, once per
// epoch, from the main process; chunk lengths come from the arrays' metadata read through
// the mount, and the mount is recognised by its control attribute. The daemon takes every
// order, and the last one, as its stats report it, is the one the loader then read to the end.
func TestOrderedSamplerOverMount(t *testing.T) {
	pythonReady.require(t)
	torchReady.require(t)
	fuseReady.require(t)
	tmp := t.TempDir()
	script, err := filepath.Abs(filepath.Join("py", "order_e2e.py"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYTHONPATH", filepath.Join(repoRoot(t), "python")) // the zarrfs package of this checkout
	if out, err := runScript(t, pythonBin, script, "gen", tmp); err != nil {
		t.Fatalf("generate the store: %v\n%s", err, out)
	}
	o := newOrigin(t, tmp)
	m := mount(t, o.URL("order.zarr"))

	wrapper := filepath.Join(tmp, "zarrfs-wrapper")
	writeFile(t, wrapper, []byte(orderWrapper))
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	orderLog := filepath.Join(tmp, "orders.jsonl")
	t.Setenv("ZARRFS_BIN", wrapper)
	t.Setenv("REAL_ZARRFS", zarrfsBin)
	t.Setenv("ORDER_LOG", orderLog)
	out, err := runScript(t, pythonBin, script, "run", m.Dir)
	if err != nil {
		t.Fatalf("order_e2e.py: %v\n%s", err, out)
	}
	var res struct {
		PID    int `json:"pid"`
		Epochs []struct {
			NumWorkers int      `json:"num_workers"`
			Epoch      int      `json:"epoch"`
			Read       []int    `json:"read"`
			Sent       []string `json:"sent"`
			Warnings   []string `json:"warnings"`
		} `json:"epochs"`
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("no JSON summary (%v):\n%s", err, out)
	}

	type call struct {
		Argv   []string `json:"argv"`
		Stdin  *string  `json:"stdin"`
		PPID   int      `json:"ppid"`
		RC     int      `json:"rc"`
		Stderr string   `json:"stderr"`
	}
	var calls []call
	f, err := os.Open(orderLog)
	if err != nil {
		t.Fatalf("zarrfs was never run for an order: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		if strings.Join(c.Argv, " ") == "prefetch --order -" {
			calls = append(calls, c)
		}
	}
	if len(res.Epochs) != 4 || len(calls) != 4 {
		t.Fatalf("%d epochs and %d orders, want 4 of each (num_workers 0 and 2, two epochs each)", len(res.Epochs), len(calls))
	}
	for i, e := range res.Epochs {
		c := calls[i]
		want := chunkOrder(m.Dir, e.Read)
		got := strings.Split(strings.TrimSuffix(*c.Stdin, "\n"), "\n")
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("num_workers=%d epoch %d: zarrfs got the order\n%s\nwant (the chunks the loader read, in order)\n%s",
				e.NumWorkers, e.Epoch, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if c.PPID != res.PID {
			t.Errorf("num_workers=%d epoch %d: the order came from pid %d, not the main process %d", e.NumWorkers, e.Epoch, c.PPID, res.PID)
		}
		switch {
		case c.RC != 0:
			t.Errorf("num_workers=%d epoch %d: zarrfs refused the order: %s", e.NumWorkers, e.Epoch, c.Stderr)
		case strings.Join(e.Sent, "\n") != strings.Join(want, "\n"):
			t.Errorf("num_workers=%d epoch %d: zarrfs took the order but sampler.last_order is %q", e.NumWorkers, e.Epoch, e.Sent)
		}
		t.Logf("num_workers=%d epoch %d: %d order lines, zarrfs exit %d %s", e.NumWorkers, e.Epoch, len(got), c.RC, c.Stderr)
	}
	if a, b := res.Epochs[0].Read, res.Epochs[1].Read; fmt.Sprint(a) == fmt.Sprint(b) {
		t.Errorf("two epochs of a shuffled sampler read the same order")
	}
	// The daemon's view of the last order: the fourth, of as many targets as lines were
	// sent, read to the end in that order.
	ord, _ := mountStats(t, m.Dir)["order"].(map[string]any)
	last := strings.Count(*calls[3].Stdin, "\n")
	if ord["id"] != float64(4) || ord["targets"] != float64(last) || ord["state"] != "finished" || ord["targets_read"] != float64(last) {
		t.Errorf("the daemon's last order: %v; want order 4 of %d targets, finished, every target read", ord, last)
	}
}
