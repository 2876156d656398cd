package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/zarrfs/zarrfs/remote/serve"
)

type serveFlags struct {
	addr         string
	tlsCert      string
	tlsKey       string
	stateDir     string
	tokenFiles   []string
	noAuth       bool
	insecureHTTP bool
	publicHost   string
	maxConns     int
	accessLog    bool
}

// tokenStateFile holds the generated token in the state directory.
const tokenStateFile = "token"

func runServe(args []string) error {
	var f serveFlags
	fl := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, `Usage: zarrfs serve [flags] DIR

Publish the zarr store DIR (or every store in DIR) read-only over HTTPS, for
'zarrfs mount' on a compute machine. On first start it generates a TLS
certificate and a token, keeps them in the state directory, and prints the
exact mount command to run on the client. Stop it with Ctrl-C or SIGTERM.

Examples:
  zarrfs serve /data/era5.zarr
  zarrfs serve --addr :9443 /data/stores
  zarrfs serve --tls-cert cert.pem --tls-key key.pem --token-file tokens /data/stores
  zarrfs serve --insecure-http --addr 127.0.0.1:8080 /data/stores   # behind a TLS proxy or tunnel

Flags:
`)
		fl.PrintDefaults()
	}
	fl.StringVar(&f.addr, "addr", ":8443", "address to listen on, HOST:PORT")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve instead of a generated self-signed one")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fl.StringVar(&f.stateDir, "state-dir", "", "where the generated certificate, key and token are kept (default ~/.local/state/zarrfs/serve)")
	fl.StringArrayVar(&f.tokenFiles, "token-file", nil, "file of accepted bearer tokens, one per line (repeatable; default: a token generated once and kept in the state directory)")
	fl.BoolVar(&f.noAuth, "no-auth", false, "serve without a token: anyone who can reach the address can read the stores")
	fl.BoolVar(&f.insecureHTTP, "insecure-http", false, "serve plain HTTP (only on loopback, or behind a TLS-terminating proxy or tunnel)")
	fl.StringVar(&f.publicHost, "public-host", "", "host name or address clients use to reach this machine, for the printed URLs (default: the --addr host, else this machine's name)")
	fl.IntVar(&f.maxConns, "max-conns", 256, "maximum concurrent client connections")
	fl.BoolVar(&f.accessLog, "access-log", true, "log every request (method, path, status, bytes, duration) to stderr")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: serve: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("%w: serve takes one DIR, got %d arguments", errUsage, fl.NArg())
	}
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", errUsage)
	case f.insecureHTTP && f.tlsCert != "":
		return fmt.Errorf("%w: --insecure-http serves plain HTTP; it cannot be combined with --tls-cert", errUsage)
	case f.noAuth && len(f.tokenFiles) > 0:
		return fmt.Errorf("%w: --no-auth and --token-file contradict each other", errUsage)
	}
	dir, err := filepath.Abs(fl.Arg(0))
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("serve: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("serve: %s is not a directory: give the store's directory (the one holding .zgroup or zarr.json) or a directory of stores", dir)
	}
	if f.stateDir == "" {
		f.stateDir = defaultStateDir()
	}
	if f.stateDir, err = filepath.Abs(f.stateDir); err != nil {
		return err
	}
	return serveDir(dir, f)
}

func defaultStateDir() string {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "zarrfs", "serve")
}

func serveDir(dir string, f serveFlags) error {
	level := slog.LevelInfo
	if !f.accessLog {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Secrets must never be inside what is served.
	secrets := append([]string(nil), f.tokenFiles...)
	if f.tlsKey != "" {
		secrets = append(secrets, f.tlsKey)
	}
	if !f.insecureHTTP && f.tlsCert == "" || !f.noAuth && len(f.tokenFiles) == 0 {
		secrets = append(secrets, f.stateDir)
	}
	for _, p := range secrets {
		if within(dir, p) {
			return fmt.Errorf("serve: %s is inside the served directory %s, so it would be published: keep keys and tokens elsewhere (see --state-dir)", p, dir)
		}
	}

	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w (choose another port with --addr)", f.addr, err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	host, addrs := publicHost(f.publicHost, f.addr)

	var b strings.Builder // the banner, printed once the server is ready
	out := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	scheme, pin := "https", ""
	var cert *serve.Cert
	if !f.insecureHTTP {
		if f.tlsCert != "" {
			cert, err = serve.LoadCert(f.tlsCert, f.tlsKey)
		} else {
			cert, err = serve.LoadOrCreateCert(f.stateDir, append([]string{host}, addrs...))
		}
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		if cert.SelfSigned {
			pin = cert.Fingerprint
		}
	} else {
		scheme = "http"
	}

	var (
		tokens     *serve.TokenSet
		newToken   string // generated by this start: printed once
		tokenWhere string
	)
	switch {
	case f.noAuth:
	case len(f.tokenFiles) > 0:
		var all []string
		for _, tf := range f.tokenFiles {
			got, err := serve.ReadTokenFile(tf)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			all = append(all, got...)
		}
		if tokens, err = serve.NewTokenSet(all...); err != nil {
			return fmt.Errorf("serve: --token-file: %w", err)
		}
		tokenWhere = strings.Join(f.tokenFiles, ", ")
	default:
		tokenFile := filepath.Join(f.stateDir, tokenStateFile)
		got, err := serve.ReadTokenFile(tokenFile)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrNotExist):
			newToken = serve.GenerateToken()
			if err := writeNewFile(f.stateDir, tokenFile, newToken+"\n"); err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			got = []string{newToken}
		default:
			return fmt.Errorf("serve: %w", err)
		}
		if tokens, err = serve.NewTokenSet(got...); err != nil {
			return fmt.Errorf("serve: %s: %w", tokenFile, err)
		}
		tokenWhere = tokenFile
	}

	srv, err := serve.New(serve.Config{
		Dir:      dir,
		Tokens:   tokens,
		NoAuth:   f.noAuth,
		Logger:   log,
		MaxConns: f.maxConns,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	stores := findStores(dir)
	base := scheme + "://" + net.JoinHostPort(host, port)
	out("zarrfs serve: serving %s read-only at %s/", dir, base)
	if len(addrs) > 0 {
		out("  this machine's addresses: %s (use one if %q does not resolve on the client)", strings.Join(addrs, ", "), host)
	}
	switch {
	case cert == nil:
	case cert.Generated:
		out("  TLS certificate: generated now, self-signed, kept in %s", cert.CertFile)
	case cert.SelfSigned:
		out("  TLS certificate: %s (self-signed)", cert.CertFile)
	default:
		out("  TLS certificate: %s", cert.CertFile)
	}
	if cert != nil {
		out("  fingerprint:     %s", cert.Fingerprint)
	}
	switch {
	case f.noAuth:
		out("  token:           none (--no-auth)")
	case newToken != "":
		out("  token:           generated now and saved in %s; it is shown only this once:", tokenWhere)
		out("                   %s", newToken)
	default:
		out("  token:           in %s (copy it to the compute machine)", tokenWhere)
	}
	if len(stores) == 0 {
		out("\nNo zarr store (a directory with .zgroup, .zarray, .zmetadata or zarr.json) found in %s or directly below it; serving it anyway.", dir)
	}
	for i, st := range stores {
		if i == 8 {
			out("\n(and %d more stores)", len(stores)-i)
			break
		}
		storeURL := base + "/" + escapePath(st)
		name := mountName(dir, st)
		args := []string{"zarrfs mount"}
		if pin != "" {
			args = append(args, "--pin "+pin)
		}
		label := st
		if label == "" {
			label = filepath.Base(dir)
		}
		out("\nTo mount %s on the compute machine (in a notebook cell, start the line with !):", label)
		if newToken != "" {
			out("  ZARRFS_TOKEN=%s %s %s /content/%s", newToken, strings.Join(args, " "), storeURL, name)
			out("or with the token in a file:")
		}
		if !f.noAuth {
			args = append(args, "--token-file ~/.zarrfs-token")
		}
		out("  %s %s /content/%s", strings.Join(args, " "), storeURL, name)
	}
	if !f.noAuth && newToken == "" && len(stores) > 0 {
		out("(~/.zarrfs-token on the compute machine holds a token from %s)", tokenWhere)
	}
	if f.insecureHTTP {
		fmt.Fprintf(os.Stderr, "zarrfs serve: WARNING: --insecure-http: tokens and data cross the network unencrypted; use it only on loopback or behind a TLS-terminating proxy or tunnel\n")
	}
	if f.noAuth {
		fmt.Fprintf(os.Stderr, "zarrfs serve: WARNING: --no-auth: anyone who can reach %s can read everything in %s\n", f.addr, dir)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var tlsConf *tls.Config
	if cert != nil {
		tlsConf = serve.TLSConfig(cert)
	}
	fmt.Print(b.String())
	fmt.Println("\nServing; stop with Ctrl-C.")
	if err := srv.Serve(ctx, ln, tlsConf); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "zarrfs serve: stopped")
	return nil
}

// within reports whether p (a file or directory) is dir or below it,
// following symlinks where they exist.
func within(dir, p string) bool {
	abs := func(s string) string {
		s, _ = filepath.Abs(s)
		// Resolve the longest existing ancestor: p may not exist yet.
		rest := ""
		for cur := s; ; {
			if r, err := filepath.EvalSymlinks(cur); err == nil {
				return filepath.Join(r, rest)
			}
			parent := filepath.Dir(cur)
			if parent == cur {
				return s
			}
			rest = filepath.Join(filepath.Base(cur), rest)
			cur = parent
		}
	}
	rel, err := filepath.Rel(abs(dir), abs(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// writeNewFile creates file (mode 0600, in a 0700 directory) with content;
// it never overwrites.
func writeNewFile(dir, file, content string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	fh, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(fh, content); err != nil {
		fh.Close()
		os.Remove(file)
		return err
	}
	return fh.Close()
}

// publicHost picks the host name for printed URLs and lists this machine's
// non-loopback addresses when listening on all of them.
func publicHost(flagHost, addr string) (host string, addrs []string) {
	bindHost, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(bindHost); bindHost == "" || (ip != nil && ip.IsUnspecified()) {
		if ifAddrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range ifAddrs {
				if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
					addrs = append(addrs, ipn.IP.String())
				}
			}
		}
		bindHost = ""
	}
	switch {
	case flagHost != "":
		return flagHost, addrs
	case bindHost != "":
		return bindHost, nil
	}
	if name, err := os.Hostname(); err == nil && name != "" {
		return name, addrs
	}
	if len(addrs) > 0 {
		return addrs[0], addrs
	}
	return "localhost", addrs
}

// storeMarkers are the files that make a directory a zarr store (or group).
var storeMarkers = []string{".zgroup", ".zarray", ".zmetadata", "zarr.json"}

func isStore(dir string) bool {
	for _, m := range storeMarkers {
		if _, err := os.Stat(filepath.Join(dir, m)); err == nil {
			return true
		}
	}
	return false
}

// findStores returns "" if dir is a store, else the names of the stores
// directly below it, sorted.
func findStores(dir string) []string {
	if isStore(dir) {
		return []string{""}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && isStore(filepath.Join(dir, e.Name())) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// mountName suggests a mount point name: the store's name without .zarr.
func mountName(dir, store string) string {
	name := store
	if name == "" {
		name = filepath.Base(dir)
	}
	name = strings.TrimSuffix(name, ".zarr")
	if name == "" || name == "/" || name == "." {
		name = "store"
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\'' || r == '"' || r == '$' || r == '`' || r == '\\' {
			return '_'
		}
		return r
	}, name)
}

func escapePath(p string) string {
	if p == "" {
		return ""
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
