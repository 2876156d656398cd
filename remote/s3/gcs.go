package s3

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// bearerMiddleware adds "Authorization: Bearer TOKEN" to every GCS request
// after the (anonymous, so absent) signature: GCS's XML API takes OAuth
// tokens where S3 takes SigV4.
func (o *Origin) bearerMiddleware(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("zarrfsBearerToken",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok {
				return next.HandleFinalize(ctx, in)
			}
			tok, err := o.token()
			if err != nil {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, err
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

// tokenFile caches the bearer token file, re-reading it when its
// modification time or size changes, so a token refreshed by another
// program is used without a remount.
type tokenFile struct {
	mu      sync.Mutex
	path    string
	mod     time.Time
	size    int64
	token   string
	checked time.Time
}

var tokens sync.Map // path -> *tokenFile, shared by the origins of a process

func (o *Origin) token() (string, error) {
	if o.opts.TokenFile == "" {
		return o.opts.Remote.Token, nil
	}
	v, _ := tokens.LoadOrStore(o.opts.TokenFile, &tokenFile{path: o.opts.TokenFile})
	return v.(*tokenFile).get()
}

func (t *tokenFile) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// A stat a second at most: requests come by the hundred.
	if t.token != "" && time.Since(t.checked) < time.Second {
		return t.token, nil
	}
	t.checked = time.Now()
	fi, err := os.Stat(t.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if t.token != "" && fi.ModTime().Equal(t.mod) && fi.Size() == t.size {
		return t.token, nil
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", errors.New("token file: want the token alone on one line")
	}
	t.token, t.mod, t.size = tok, fi.ModTime(), fi.Size()
	return tok, nil
}
