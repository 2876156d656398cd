package main

import (
	"fmt"
	"math"
	"testing"
)

func TestParseRanges(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"0:10", "[[0 10]]", true},
		{"5", "[[5 6]]", true},
		{":10", "[[0 10]]", true},
		{"3:", fmt.Sprintf("[[3 %d]]", int64(math.MaxInt64)), true},
		{"0:10, 2:4", "[[0 10] [2 4]]", true},
		{"", "", false},
		{"4:2", "", false},
		{"-1:3", "", false},
		{"a:b", "", false},
		{"1:1", "", false},
	}
	for _, tt := range tests {
		got, err := parseRanges(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseRanges(%q): err %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && fmt.Sprint(got) != tt.want {
			t.Errorf("parseRanges(%q) = %v, want %s", tt.in, got, tt.want)
		}
	}
}
