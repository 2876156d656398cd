package cache

// MarkStale is for a store that changed on an origin without per-key
// versions: the cache cannot tell which objects changed, so every entry must
// be revalidated (a conditional request; 304 keeps the bytes) before its next
// use by Open, and the keys remembered as missing are forgotten, since the
// change may have created them. Fetches in flight land unchecked too: they
// may have read the old version. OpenVersion is unaffected: an exact version
// still vouches for an entry.
func (c *Cache) MarkStale() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.staleGen++
	for _, e := range c.index {
		e.unchecked = true
	}
	c.notFound.Purge()
}
