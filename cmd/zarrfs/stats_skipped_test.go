package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zarrfs/zarrfs/vfs/store"
)

func TestRenderStatsSkipped(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := sampleStats()
	if out := renderStats(s, nil, 0, now); strings.Contains(out, "skipped") {
		t.Errorf("a store with nothing left out has a skipped line:\n%s", out)
	}
	s.SkippedNodes = []store.Skipped{
		{Path: "zero", Problem: `zero/.zarray: chunks [0] is 0; chunk sizes must be positive`, Fix: "repair it"},
		{Path: "grp", Problem: "grp/.zgroup: is not valid JSON", Fix: "repair it"},
		{Path: "grp/a", Problem: `left out with "grp"`, Inside: "grp"},
		{Path: "x\x00y", Problem: "NUL", Fix: "rename it"},
	}
	out := renderStats(s, nil, 0, now)
	for _, want := range []string{
		"skipped   4 nodes left out of the mount",
		"zero: zero/.zarray: chunks [0] is 0",
		"fix: repair it",
		"grp (with 1 nodes inside it): grp/.zgroup",
		`"x\x00y": NUL`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "grp/a") || strings.Contains(out, "\x00") {
		t.Errorf("a node inside a skipped group has its own line, or a raw NUL is printed:\n%s", out)
	}

	for i := 0; i < 2*maxSkippedLines; i++ {
		s.SkippedNodes = append(s.SkippedNodes, store.Skipped{Path: fmt.Sprintf("n%d", i), Problem: "p"})
	}
	if out := renderStats(s, nil, 0, now); !strings.Contains(out, "zarrfs stats --json lists them all") || strings.Contains(out, "n15:") {
		t.Errorf("long lists are not cut:\n%s", out)
	}
}

// The JSON has skipped_nodes always (an empty list, not null), with the
// fields scripts read.
func TestStatsJSONSkipped(t *testing.T) {
	st := mountStats{SkippedNodes: []store.Skipped{}}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"skipped_nodes":[]`) {
		t.Errorf("empty list marshals as %s", b)
	}
	st.SkippedNodes = []store.Skipped{{Path: "g/a", Problem: "p", Fix: "f", Inside: "g"}}
	b, _ = json.Marshal(st)
	if !strings.Contains(string(b), `"skipped_nodes":[{"path":"g/a","problem":"p","fix":"f","inside":"g"}]`) {
		t.Errorf("marshals as %s", b)
	}
	var back statsView
	if err := json.Unmarshal(b, &back); err != nil || len(back.SkippedNodes) != 1 || back.SkippedNodes[0].Inside != "g" {
		t.Errorf("reads back as %+v, %v", back.SkippedNodes, err)
	}
}
