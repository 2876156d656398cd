package serve

// Server-side bearer-token authentication for `zarrfs serve`.
//
// Tokens are kept only as SHA-256 digests, and a presented token is hashed
// and compared with every accepted digest in constant time, without an early
// exit: neither the length of a token nor how many leading bytes of a guess
// were right changes how long the answer takes. No locks: a TokenSet is
// immutable once built.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// MinTokenLength is the length below which a token is too easy to guess;
// generated tokens are 43 characters (256 random bits).
const MinTokenLength = 16

// ErrWeakToken: a token given to the server is shorter than MinTokenLength.
var ErrWeakToken = fmt.Errorf("token shorter than %d characters", MinTokenLength)

// TokenSet is the set of bearer tokens a server accepts. The zero value
// accepts nothing.
type TokenSet struct {
	digests [][sha256.Size]byte
}

// NewTokenSet returns a set accepting each of tokens. Empty tokens and tokens
// holding whitespace or control characters are refused, and so are tokens
// shorter than MinTokenLength (ErrWeakToken).
func NewTokenSet(tokens ...string) (*TokenSet, error) {
	s := &TokenSet{}
	for i, tok := range tokens {
		if err := checkTokenSyntax(tok); err != nil {
			// Never echo the token itself.
			return nil, fmt.Errorf("token %d: %w", i+1, err)
		}
		s.digests = append(s.digests, sha256.Sum256([]byte(tok)))
	}
	return s, nil
}

func checkTokenSyntax(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty token")
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return errors.New("token contains whitespace or control characters")
	case len(tok) < MinTokenLength:
		return ErrWeakToken
	}
	return nil
}

// Len is the number of accepted tokens.
func (s *TokenSet) Len() int { return len(s.digests) }

// Allows reports whether token is one of the set, in time independent of
// which token (if any) it matches and of how much of it is right.
func (s *TokenSet) Allows(token string) bool {
	given := sha256.Sum256([]byte(token))
	match := 0
	for i := range s.digests {
		match |= subtle.ConstantTimeCompare(given[:], s.digests[i][:])
	}
	return match == 1 && token != ""
}

// AllowsRequest checks the request's "Authorization: Bearer <token>" header.
// A missing or malformed header is hashed and compared like a wrong token,
// so it takes the same time to refuse.
func (s *TokenSet) AllowsRequest(r *http.Request) bool {
	token, ok := bearerToken(r.Header.Values("Authorization"))
	allowed := s.Allows(token)
	return ok && allowed
}

// bearerToken extracts the token of the single Authorization header
// "Bearer <token>" (scheme case-insensitive, RFC 6750).
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, found := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// credentialParams are query parameter names that carry credentials by
// convention. A request naming one is refused even if its header is right:
// a token in a URL ends up in logs, browser history and proxies.
var credentialParams = []string{
	"token", "access_token", "auth", "authorization", "bearer", "key",
	"api_key", "apikey", "password", "secret", "sig", "signature",
}

// queryHasCredential reports whether rawQuery has a parameter that looks
// like a credential. It parses leniently (a malformed query is still looked
// at) and never returns the value.
func queryHasCredential(rawQuery string) bool {
	if rawQuery == "" {
		return false
	}
	for part := range strings.FieldsFuncSeq(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(part, "=")
		name = strings.ToLower(strings.TrimSpace(unescapeLenient(name)))
		for _, c := range credentialParams {
			if name == c || strings.HasSuffix(name, "_"+c) || strings.HasSuffix(name, "-"+c) {
				return true
			}
		}
	}
	return false
}

func unescapeLenient(s string) string {
	out, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return out
}

// GenerateToken returns a new random token: 32 bytes from crypto/rand,
// base64url without padding (43 characters, safe in a shell and a URL-free
// header).
func GenerateToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ReadTokenFile reads the tokens in file: one per line; blank lines and
// lines starting with '#' are skipped; surrounding whitespace is trimmed.
// It fails if the file holds no token or a token that NewTokenSet refuses.
func ReadTokenFile(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	tokens, err := parseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", file, err)
	}
	return tokens, nil
}

func parseTokens(r io.Reader) ([]string, error) {
	var tokens []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		tok := strings.TrimSpace(sc.Text())
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if err := checkTokenSyntax(tok); err != nil {
			return nil, fmt.Errorf("line %d: %w (one token per line)", line, err)
		}
		tokens = append(tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, errors.New("no token in the file (one token per line; # starts a comment)")
	}
	return tokens, nil
}
