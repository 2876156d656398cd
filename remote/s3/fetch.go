package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/zarrfs/zarrfs/remote"
)

// getObject sends one GetObject and returns its output, whose Body the
// caller must close; stop ends the attempt's context (the body's too).
func (o *Origin) getObject(ctx context.Context, key string, in *s3.GetObjectInput) (out *s3.GetObjectOutput, stop func(), err error) {
	actx, cancel := context.WithCancel(ctx)
	err = o.call(actx, "GET", key, func(ctx context.Context, at attempt) error {
		if !o.sdkGet {
			fout, ok, err := o.getObjectFast(ctx, in, at.br, at.region)
			if ok {
				out = fout
				return err
			}
		}
		var err error
		out, err = o.client.GetObject(ctx, in, at.sdkOpts()...)
		return err
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	o.readProven.Store(true)
	return out, cancel, nil
}

// Get reads a small object whole, refusing one larger than maxBytes.
func (o *Origin) Get(ctx context.Context, key string, maxBytes int64) ([]byte, remote.Object, error) {
	if maxBytes <= 0 {
		return nil, remote.Object{}, fmt.Errorf("get %s: maxBytes must be positive, got %d", key, maxBytes)
	}
	var buf bytes.Buffer
	var obj remote.Object
	err := o.withResume(ctx, "GET", key, func(b *budget) (bool, error) {
		buf.Reset()
		s3key, err := o.objectKey(key)
		if err != nil {
			return false, err
		}
		out, stop, err := o.getObject(ctx, key, &s3.GetObjectInput{Bucket: &o.bucket, Key: &s3key})
		if err != nil {
			return false, err
		}
		defer stop()
		defer out.Body.Close()
		size := aws.ToInt64(out.ContentLength)
		if size > maxBytes {
			return false, fmt.Errorf("GET %s: object is %d bytes, more than the %d-byte limit", o.url(key), size, maxBytes)
		}
		n, rerr := o.copyBody(ctx, stop, &buf, io.LimitReader(out.Body, maxBytes+1))
		switch {
		case rerr != nil:
			return n > 0, rerr
		case int64(buf.Len()) > maxBytes:
			return false, fmt.Errorf("GET %s: object is more than the %d-byte limit", o.url(key), maxBytes)
		case out.ContentLength != nil && n != size:
			return n > 0, &bodyError{fmt.Errorf("body ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)}
		}
		obj = remote.Object{Size: n, ETag: aws.ToString(out.ETag), LastModified: aws.ToTime(out.LastModified)}
		return false, nil
	})
	if err != nil {
		return nil, remote.Object{}, err
	}
	return buf.Bytes(), obj, nil
}

// Fetch streams the whole object to w and returns its ETag.
func (o *Origin) Fetch(ctx context.Context, key string, w io.Writer) (string, error) {
	v, _, err := o.fetch(ctx, key, "", w)
	return v, err
}

// FetchIfChanged is Fetch with If-None-Match: version. A 304 writes nothing
// and returns (version, false, nil).
func (o *Origin) FetchIfChanged(ctx context.Context, key, version string, w io.Writer) (string, bool, error) {
	v, notModified, err := o.fetch(ctx, key, version, w)
	if err != nil {
		return "", false, err
	}
	if notModified {
		return version, false, nil
	}
	return v, true, nil
}

// fetch streams the object; a body that breaks is resumed at the byte it
// stopped with Range and If-Match: ETag, so w gets every byte once.
func (o *Origin) fetch(ctx context.Context, key, ifNoneMatch string, w io.Writer) (etag string, notModified bool, err error) {
	s3key, err := o.objectKey(key)
	if err != nil {
		return "", false, err
	}
	var written, size int64 = 0, -1
	err = o.withResume(ctx, "GET", key, func(b *budget) (bool, error) {
		in := &s3.GetObjectInput{Bucket: &o.bucket, Key: &s3key}
		switch {
		case written > 0:
			in.Range = aws.String("bytes=" + strconv.FormatInt(written, 10) + "-")
			in.IfMatch = aws.String(etag)
		case ifNoneMatch != "":
			in.IfNoneMatch = aws.String(ifNoneMatch)
		}
		out, stop, err := o.getObject(ctx, key, in)
		if errors.Is(err, errNotModified) && written == 0 && ifNoneMatch != "" {
			notModified = true
			return false, nil
		}
		if err != nil {
			return false, err
		}
		defer stop()
		defer out.Body.Close()
		if written == 0 {
			etag = aws.ToString(out.ETag)
			size = aws.ToInt64(out.ContentLength)
		} else {
			first, _, total, ok := parseContentRange(aws.ToString(out.ContentRange))
			if !ok || first != written || total != size {
				return false, fmt.Errorf("GET %s: %w: resumed at byte %d, got Content-Range %q", o.url(key), remote.ErrChanged, written, aws.ToString(out.ContentRange))
			}
		}
		n, rerr := o.copyBody(ctx, stop, w, out.Body)
		written += n
		if rerr == nil && written != size {
			rerr = &bodyError{fmt.Errorf("body ended after %d of %d bytes: %w", written, size, io.ErrUnexpectedEOF)}
		}
		if rerr != nil && etag == "" {
			return false, fmt.Errorf("GET %s: body broke after %d bytes and the object has no ETag to resume under: %w", o.url(key), written, rerr)
		}
		return n > 0, rerr
	})
	if err != nil {
		return "", false, err
	}
	return etag, notModified, nil
}

// FetchRange streams bytes [off, off+n) of the object at version ("": any).
func (o *Origin) FetchRange(ctx context.Context, key, version string, off, n int64, w io.Writer) (remote.Piece, error) {
	if off < 0 || n <= 0 {
		return remote.Piece{}, fmt.Errorf("fetch range of %s: offset %d and length %d: want offset >= 0 and length > 0", key, off, n)
	}
	return o.fetchPiece(ctx, key, version, off, n, w)
}

// FetchSuffix streams the last n bytes, learning size and version.
func (o *Origin) FetchSuffix(ctx context.Context, key, version string, n int64, w io.Writer) (remote.Piece, error) {
	if n <= 0 {
		return remote.Piece{}, fmt.Errorf("fetch suffix of %s: length %d: want > 0", key, n)
	}
	return o.fetchPiece(ctx, key, version, -1, n, w)
}

func (o *Origin) fetchPiece(ctx context.Context, key, version string, off, n int64, w io.Writer) (remote.Piece, error) {
	s3key, err := o.objectKey(key)
	if err != nil {
		return remote.Piece{}, err
	}
	etag := version
	var (
		got     remote.Piece
		written int64
		known   bool
	)
	err = o.withResume(ctx, "GET", key, func(b *budget) (bool, error) {
		var rng string
		switch {
		case known:
			rng = fmt.Sprintf("bytes=%d-%d", got.Offset+written, got.Offset+got.Length-1)
		case off < 0:
			rng = "bytes=-" + strconv.FormatInt(n, 10)
		default:
			rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
		}
		in := &s3.GetObjectInput{Bucket: &o.bucket, Key: &s3key, Range: &rng}
		if etag != "" {
			in.IfMatch = aws.String(etag)
		}
		out, stop, err := o.getObject(ctx, key, in)
		if err != nil {
			return false, err
		}
		defer stop()
		defer out.Body.Close()
		cr := aws.ToString(out.ContentRange)
		first, last, total, ok := parseContentRange(cr)
		if !ok {
			// S3 answers a range covering a whole object of n bytes with
			// 206 and a Content-Range; anything else ignored the range.
			return false, fmt.Errorf("GET %s with Range %s: %w (no usable Content-Range %q)", o.url(key), rng, remote.ErrRangesUnsupported, cr)
		}
		if tag := aws.ToString(out.ETag); etag == "" {
			etag = tag
		} else if tag != "" && tag != etag {
			return false, fmt.Errorf("GET %s: %w: ETag %s, want %s", o.url(key), remote.ErrChanged, tag, etag)
		}
		if !known {
			want := off
			if off < 0 {
				want = max(0, total-n)
			}
			if first != want || last != min(want+n, total)-1 {
				return false, fmt.Errorf("GET %s: asked for %s of %d bytes, got Content-Range %q", o.url(key), rng, total, cr)
			}
			got = remote.Piece{Offset: first, Length: last - first + 1, Total: total}
			known = true
		} else if first != got.Offset+written || last != got.Offset+got.Length-1 || total != got.Total {
			return false, fmt.Errorf("GET %s: %w: resumed %s, got Content-Range %q", o.url(key), remote.ErrChanged, rng, cr)
		}
		want := last - first + 1
		m, rerr := o.copyBody(ctx, stop, w, io.LimitReader(out.Body, want))
		written += m
		if rerr == nil && m < want {
			rerr = &bodyError{fmt.Errorf("range body ended after %d of %d bytes: %w", m, want, io.ErrUnexpectedEOF)}
		}
		if rerr != nil && etag == "" {
			return false, fmt.Errorf("GET %s: body broke and the object has no ETag to resume under: %w", o.url(key), rerr)
		}
		return m > 0, rerr
	})
	if err != nil {
		return remote.Piece{}, err
	}
	got.ETag = etag
	return got, nil
}

// parseContentRange parses "bytes first-last/total".
func parseContentRange(s string) (first, last, total int64, ok bool) {
	var err error
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	var a, b, c string
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		a, rest = rest[:i], rest[i+1:]
	} else {
		return 0, 0, 0, false
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		b, c = rest[:i], rest[i+1:]
	} else {
		return 0, 0, 0, false
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, false
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil {
		return 0, 0, 0, false
	}
	if total, err = strconv.ParseInt(c, 10, 64); err != nil {
		return 0, 0, 0, false
	}
	if first < 0 || last < first || total <= last {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// bodyError is a response body that broke or stalled: retryable by
// resuming, unlike an error of the caller's writer.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the response body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

var errStalled = errors.New("no data for the stall timeout")

// copyBufs recycles copyBody's buffers: a chunk read is often smaller than
// the buffer, and a fresh 64 KiB per request was most of the garbage.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyBody copies r to w; a read that makes no progress for StallTimeout
// cuts the attempt (stop) and fails with a bodyError. A write error is
// returned as is: it is the caller's, never retried.
func (o *Origin) copyBody(ctx context.Context, stop func(), w io.Writer, r io.Reader) (int64, error) {
	var stalled atomic.Bool
	t := time.AfterFunc(o.opts.Remote.StallTimeout, func() { stalled.Store(true); stop() })
	defer t.Stop()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			t.Reset(o.opts.Remote.StallTimeout)
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if t.Stop() || !stalled.Load() {
				return n, &bodyError{rerr}
			}
			o.k.Stalled.Add(1)
			return n, &bodyError{fmt.Errorf("%w (%s)", errStalled, o.opts.Remote.StallTimeout)}
		}
	}
}

// budget is one operation's resume budget: RetryDeadline from the start or
// the last progress.
type budget struct {
	start    time.Time
	attempts int
}

// withResume runs attempt until it succeeds or fails for good. An attempt
// that fails with a bodyError is repeated (it resumes where it stopped)
// while the budget lasts; progress (true) restarts the budget.
func (o *Origin) withResume(ctx context.Context, op, key string, attempt func(*budget) (progressed bool, err error)) error {
	b := &budget{start: time.Now()}
	wait := 100 * time.Millisecond
	for {
		b.attempts++
		progressed, err := attempt(b)
		if err == nil {
			return nil
		}
		var be *bodyError
		if !errors.As(err, &be) || ctx.Err() != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%s %s: %w", op, o.url(key), ctx.Err())
			}
			o.operationFailed(ctx, err)
			return err
		}
		if be.err != errStalled && !errors.Is(be.err, errStalled) {
			o.k.Network.Add(1)
		}
		if progressed {
			b.start, wait = time.Now(), 100*time.Millisecond
		}
		if time.Since(b.start)+wait > o.opts.Remote.RetryDeadline {
			err = fmt.Errorf("%s %s: gave up after %d attempts: %w", op, o.url(key), b.attempts, err)
			o.operationFailed(ctx, err)
			if o.health.Down(err) {
				o.log.Warn("s3: the origin is down: operations fail at once while one probe at a time checks whether it is back",
					"op", op, "url", o.url(key), "error", err.Error())
			}
			return err
		}
		if o.health.IsDown() {
			// Another operation gave up on the origin meanwhile.
			err = fmt.Errorf("%s %s: %w (the origin is down: last error: %w)", op, o.url(key), remote.ErrUnreachable, err)
			o.operationFailed(ctx, err)
			return err
		}
		o.k.Retries.Add(1)
		o.log.Debug("s3: resuming a broken body", "url", o.url(key), "attempt", b.attempts, "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: %w", op, o.url(key), ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
