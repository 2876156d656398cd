package serve

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func nowForTest() time.Time { return time.Now() }

func TestTokenSet(t *testing.T) {
	a, b := "alpha-0123456789abcdef", "bravo-0123456789abcdef"
	s, err := NewTokenSet(a, b)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token string
		want  bool
	}{
		{a, true}, {b, true},
		{"", false}, {a[:len(a)-1], false}, {a + "x", false}, {strings.ToUpper(a), false}, {"charlie-0123456789abcd", false},
	}
	for _, tc := range tests {
		if got := s.Allows(tc.token); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.token, got, tc.want)
		}
	}
	var empty TokenSet
	if empty.Allows("") || empty.Allows(a) {
		t.Error("the empty set allows something")
	}
	for _, bad := range []string{"", "sh0rt", "has space-0123456789", "tab\t0123456789abcdef", "nl\n0123456789abcdef"} {
		if _, err := NewTokenSet(bad); err == nil {
			t.Errorf("NewTokenSet(%q) accepted", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("the error echoes the token: %v", err)
		}
	}
	if _, err := NewTokenSet("sh0rt"); !errors.Is(err, ErrWeakToken) {
		t.Errorf("short token: %v, want ErrWeakToken", err)
	}
}

func TestAllowsRequest(t *testing.T) {
	s, _ := NewTokenSet(testToken)
	tests := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{"Bearer " + testToken}, true},
		{[]string{"BEARER " + testToken}, true},
		{[]string{"Bearer   " + testToken}, true},
		{[]string{"Bearer " + testToken, "Bearer " + testToken}, false},
		{[]string{"Basic " + testToken}, false},
		{[]string{testToken}, false},
		{[]string{"Bearer"}, false},
		{[]string{"Bearer " + testToken + " extra"}, false},
	}
	for _, tc := range tests {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		for _, v := range tc.values {
			r.Header.Add("Authorization", v)
		}
		if got := s.AllowsRequest(r); got != tc.want {
			t.Errorf("Authorization %q: %v, want %v", tc.values, got, tc.want)
		}
	}
}

func TestQueryHasCredential(t *testing.T) {
	tests := map[string]bool{
		"":                      false,
		"prefix=a/":             false,
		"v=1&x=2":               false,
		"token=abc":             true,
		"TOKEN=abc":             true,
		"a=1&access_token=abc":  true,
		"a=1;token=abc":         true,
		"%74oken=abc":           true,
		"X-Amz-Signature=abc":   true,
		"api_key=1":             true,
		"my_token=1":            true,
		"tokenizer=1":           false,
		"key":                   true,
		"password=&user=x":      true,
		"%zz=1":                 false,
		"prefix=token%3Dnot-it": false,
	}
	for q, want := range tests {
		if got := queryHasCredential(q); got != want {
			t.Errorf("queryHasCredential(%q) = %v, want %v", q, got, want)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		want    []string
		ok      bool
	}{
		{"tok-0123456789abcdef\n", []string{"tok-0123456789abcdef"}, true},
		{"# tokens\n\n  one-0123456789abcdef  \r\ntwo-0123456789abcdef", []string{"one-0123456789abcdef", "two-0123456789abcdef"}, true},
		{"", nil, false},
		{"# only a comment\n", nil, false},
		{"two words-0123456789abcdef\n", nil, false},
		{"short\n", nil, false},
	}
	for i, tc := range tests {
		p := filepath.Join(dir, "tokens")
		os.WriteFile(p, []byte(tc.content), 0o600)
		got, err := ReadTokenFile(p)
		if (err == nil) != tc.ok || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("case %d: %q, %v; want %q ok=%v", i, got, err, tc.want, tc.ok)
		}
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing token file was accepted")
	}
	g1, g2 := GenerateToken(), GenerateToken()
	if g1 == g2 || len(g1) != 43 {
		t.Errorf("GenerateToken: %q, %q", g1, g2)
	}
	if _, err := NewTokenSet(g1); err != nil {
		t.Errorf("a generated token is refused: %v", err)
	}
}
