package s3

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/zarrfs/zarrfs/internal/s3test"
	"github.com/zarrfs/zarrfs/vfs/store"
)

// listCounter forwards to an S3 server and counts the ListObjectsV2
// requests, with and without a delimiter. The Host header is kept, so the
// SigV4 signatures still verify.
type listCounter struct {
	next http.Handler

	mu           sync.Mutex
	flat, byDir  int
	requestCount int
}

func (c *listCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.requestCount++
	if q := r.URL.Query(); q.Get("list-type") == "2" {
		if q.Get("delimiter") == "" {
			c.flat++
		} else {
			c.byDir++
		}
	}
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

func (c *listCounter) take() (flat, byDir, requests int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	flat, byDir, requests = c.flat, c.byDir, c.requestCount
	c.flat, c.byDir, c.requestCount = 0, 0, 0
	return
}

// TestRefreshOverCapListsOnlyWhatItMust: a store without consolidated
// metadata and with more keys than a listing manifest holds is discovered
// at mount by finding it over the cap, then by the directory crawl. A
// refresh (the file system discovers it again) does not list the cap's
// worth of keys again: only the groups, one delimited listing each.
func TestRefreshOverCapListsOnlyWhatItMust(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "zarr")
	files := map[string][]byte{
		".zgroup":     []byte(`{"zarr_format":2}`),
		"g/.zgroup":   []byte(`{"zarr_format":2}`),
		"g/a/.zarray": []byte(`{"zarr_format":2,"shape":[40],"chunks":[1],"dtype":"<u1","compressor":null,"fill_value":0,"order":"C","filters":null}`),
		"b/.zarray":   []byte(`{"zarr_format":2,"shape":[40],"chunks":[1],"dtype":"<u1","compressor":null,"fill_value":0,"order":"C","filters":null}`),
	}
	for i := range 40 {
		files[fmt.Sprintf("g/a/%d", i)] = []byte{byte(i)}
		files[fmt.Sprintf("b/%d", i)] = []byte{byte(i)}
	}
	srv.Put(t, "zarr", "s.zarr/", files)
	u, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	lc := &listCounter{next: httputil.NewSingleHostReverseProxy(u)}
	proxy := httptest.NewServer(lc)
	t.Cleanup(proxy.Close)
	o := openT(t, srv, "s3://zarr/s.zarr", Options{Endpoint: proxy.URL, ManifestMaxKeys: 30, ListPageSize: 10})
	ctx := ctxT(t)

	first, err := store.Discover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if first.Manifest != nil || first.Tree.Lookup("g/a") == nil || first.Tree.Lookup("b") == nil {
		t.Fatalf("mount: manifest %v, arrays g/a %v, b %v; want none (over the cap) and both", first.Manifest != nil, first.Tree.Lookup("g/a"), first.Tree.Lookup("b"))
	}
	flat, byDir, n := lc.take()
	t.Logf("mount: %d flat listing pages, %d directory listings, %d requests", flat, byDir, n)
	if flat != 4 {
		t.Errorf("mount: %d flat listing pages, want 4 (30 keys in pages of 10, and the page that finds the 31st)", flat)
	}

	again, err := store.Discover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	flat, byDir, n = lc.take()
	t.Logf("refresh: %d flat listing pages, %d directory listings, %d requests", flat, byDir, n)
	if flat != 0 || byDir != 2 {
		t.Errorf("refresh: %d flat listing pages and %d directory listings; want none, and one for each of the 2 groups", flat, byDir)
	}
	if !store.SameShape(first.Tree, again.Tree) || !store.SameDocs(first.Docs, again.Docs) {
		t.Error("the refresh found another store")
	}
}
