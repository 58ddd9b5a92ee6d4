package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/modelcar/modelcar/internal/redact"
	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// transferFlags are shared by commands that talk to registries.
type transferFlags struct {
	plainHTTP, insecure, monolithic, quiet, jsonOut, passwordStdin bool
	jobs                                                           jobsValue
	retries                                                        int
	chunkSize, digestFile, username                                string
	idleTimeout                                                    time.Duration
}

// register adds the connection and credential flags; transfer adds the flags
// of commands that move blobs (--jobs, --json, --digest-file, --quiet).
// Upload-only flags come with registerUpload.
func (f *transferFlags) register(cmd *cobra.Command, transfer bool) {
	fl := cmd.Flags()
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "talk HTTP, not HTTPS, to registries")
	fl.BoolVar(&f.insecure, "insecure", false, "skip TLS certificate verification")
	fl.StringVarP(&f.username, "username", "u", "", "registry user name (with --password-stdin), for this run only: not saved")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the registry password or token from stdin")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", push.DefaultIdleTimeout, "fail (then resume or retry) a registry request whose connection moves no byte for this long; 0: wait forever")
	if !transfer {
		return
	}
	fl.Var(&f.jobs, "jobs", "blobs transferred at once, at least 1 (default: CPUs, 4 to 8)")
	fl.BoolVar(&f.jsonOut, "json", false, "print the result as JSON")
	fl.StringVar(&f.digestFile, "digest-file", "", "also write the manifest digest to this file")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress output")
}

// registerUpload adds the flags that shape uploads, for commands that write
// to a registry.
func (f *transferFlags) registerUpload(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.chunkSize, "chunk-size", "", "upload chunk size, e.g. 4MiB (default 64MiB; 4MiB for ghcr.io)")
	fl.BoolVar(&f.monolithic, "monolithic", false, "upload each blob in one PUT (for registries that mishandle chunks)")
	fl.IntVar(&f.retries, "retries", push.DefaultRetries, "failed requests in a row, none of which moved it on, that one blob upload survives (resuming after each)")
}

// jobsValue is --jobs: when given, at least 1; 0 means not given (the
// library picks). An invalid value fails flag parsing (exit status 2).
type jobsValue int

func (j *jobsValue) String() string { return strconv.Itoa(int(*j)) }
func (j *jobsValue) Type() string   { return "int" }

func (j *jobsValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("want a whole number, at least 1")
	}
	if n < 1 {
		return fmt.Errorf("want at least 1")
	}
	*j = jobsValue(n)
	return nil
}

// platformValue is --platform OS/ARCH[/VARIANT], checked when the flag is
// parsed (exit status 2), unlike v1.ParsePlatform, which takes "bogus" as
// an OS with no architecture.
type platformValue struct {
	s string
	p v1.Platform
}

func newPlatformValue(def string) *platformValue {
	v := &platformValue{}
	if err := v.Set(def); err != nil {
		panic(err)
	}
	return v
}

func (v *platformValue) String() string { return v.s }
func (v *platformValue) Type() string   { return "string" }

func (v *platformValue) Set(s string) error {
	p, err := pack.ParsePlatform(s)
	if err != nil {
		return err
	}
	v.s, v.p = s, p
	return nil
}

// options turns the flags into push options; refs are the references the
// command talks to, used to scope --username credentials.
func (f *transferFlags) options(cmd *cobra.Command, refs ...string) ([]push.Option, error) {
	opts := []push.Option{push.WithPlainHTTP(f.plainHTTP), push.WithInsecure(f.insecure), push.WithMonolithic(f.monolithic),
		push.WithIdleTimeout(f.idleTimeout)}
	if f.jobs > 0 {
		opts = append(opts, push.WithJobs(int(f.jobs)))
	}
	if cmd.Flags().Changed("retries") {
		if f.retries < 0 {
			return nil, usageError{fmt.Errorf("--retries %d: want 0 or more", f.retries)}
		}
		opts = append(opts, push.WithRetries(f.retries))
	}
	if f.chunkSize != "" {
		n, err := parseSize(f.chunkSize)
		if err != nil {
			return nil, usageError{fmt.Errorf("--chunk-size: %w", err)}
		}
		opts = append(opts, push.WithChunkSize(n))
	}
	if f.username != "" || f.passwordStdin {
		if f.username == "" || !f.passwordStdin {
			return nil, usageError{fmt.Errorf("--username and --password-stdin go together")}
		}
		pw, err := readPassword(cmd.InOrStdin(), f.username)
		if err != nil {
			return nil, err
		}
		store := credentials.NewMemoryStore()
		for _, r := range refs {
			if p, err := ref.Parse(r); err == nil && p.Kind == ref.Registry {
				host := credentials.ServerAddressFromRegistry(p.Name.Context().RegistryStr())
				store.Put(cmd.Context(), host, auth.Credential{Username: f.username, Password: pw})
			}
		}
		opts = append(opts, push.WithCredentials(store))
	}
	return opts, nil
}

// readPassword reads --password-stdin's password (or token) for user, and
// adds it to what output never shows (internal/redact).
func readPassword(r io.Reader, user string) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("--password-stdin: stdin is empty")
	}
	redact.Add(pw, user)
	return pw, nil
}

// transferProgress renders a byte bar on stderr when it is a terminal:
// the whole image's bytes from the start (push.Tally adds up the events).
type transferProgress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	tally push.Tally
	shown int64 // events race to show: the bar never goes back
}

func newTransferProgress(w io.Writer, quiet bool, what string) *transferProgress {
	if quiet || !isTerminal(w) {
		return nil
	}
	return &transferProgress{bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true), progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100_000_000), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())}
}

// event shows a push or mirror event.
func (p *transferProgress) event(e push.Event) {
	if p == nil {
		return
	}
	done, total := p.tally.Add(e)
	p.show(done, total)
}

// pullOptions has a pull report its total and bytes to the bar.
func (p *transferProgress) pullOptions(po push.PullOptions) push.PullOptions {
	if p == nil {
		return po
	}
	var mu sync.Mutex
	var done, total int64
	po.Total = func(n int64) { mu.Lock(); total = n; d := done; mu.Unlock(); p.show(d, n) }
	po.Progress = func(n int64) { mu.Lock(); done += n; d, t := done, total; mu.Unlock(); p.show(d, t) }
	return po
}

func (p *transferProgress) show(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if total > 0 && max(total, done) != p.bar.GetMax64() {
		p.bar.ChangeMax64(max(total, done))
	}
	if done > p.shown {
		p.shown = done
		p.bar.Set64(done)
	}
}

func (p *transferProgress) finish() {
	if p != nil {
		p.bar.Finish()
	}
}

// printResult is the stdout contract of every command that produces or
// checks an image (push, mirror, pull, verify): the digest file when asked
// for, then on stdout the pinned reference (REPO@sha256:...) alone, or
// with --json the result res (camelCase: reference, digest, mediaType,
// size...). Sentences for people go to stderr, never here.
func (f *transferFlags) printResult(cmd *cobra.Command, reference, digest string, res any) error {
	if f.digestFile != "" {
		if err := os.WriteFile(f.digestFile, []byte(digest+"\n"), 0o644); err != nil {
			return fmt.Errorf("--digest-file: %w", err)
		}
	}
	if f.jsonOut {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintln(cmd.OutOrStdout(), reference)
	return nil
}

func copyCmd(use, short, long, example string, mirror bool) *cobra.Command {
	var (
		f               transferFlags
		fromFile, split string
		referrers       bool
	)
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args: func(cmd *cobra.Command, args []string) error {
			if fromFile != "" {
				if len(args) != 0 {
					return usageError{fmt.Errorf("--from-file takes no SRC and DST arguments")}
				}
				return nil
			}
			if len(args) != 2 {
				return usageError{fmt.Errorf("%s takes SRC and DST, got %d arguments", cmd.Name(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pairs := [][2]string{}
			if fromFile != "" {
				var err error
				if pairs, err = readPairs(fromFile); err != nil {
					return err
				}
			} else {
				pairs = append(pairs, [2]string{args[0], args[1]})
			}
			var all []string
			for _, p := range pairs {
				all = append(all, p[0], p[1])
			}
			opts, err := f.options(cmd, all...)
			if err != nil {
				return err
			}
			if split != "" {
				n, err := parseSize(split)
				if err != nil {
					return usageError{fmt.Errorf("--split-size: %w", err)}
				}
				opts = append(opts, push.WithSplitSize(n))
			}
			opts = append(opts, push.WithReferrers(referrers))
			failed := 0
			for _, p := range pairs {
				prog := newTransferProgress(cmd.ErrOrStderr(), f.quiet, cmd.Name())
				res, err := push.Copy(cmd.Context(), p[0], p[1], append(opts, push.WithProgress(prog.event))...)
				prog.finish()
				if err != nil {
					if len(pairs) == 1 {
						return err
					}
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "Error: %s -> %s: %v\n", p[0], p[1], err)
					continue
				}
				if err := f.printResult(cmd, res.Reference, res.Digest, res); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d copies failed", failed, len(pairs))
			}
			return nil
		},
	}
	f.register(cmd, true)
	f.registerUpload(cmd)
	cmd.Flags().BoolVar(&referrers, "referrers", false, "also copy the image's referrers (signatures, SBOMs)")
	if mirror {
		cmd.Flags().StringVar(&fromFile, "from-file", "", "copy every 'SRC DST' pair listed in this file (one per line, # comments)")
		cmd.Flags().StringVar(&split, "split-size", "", "cut an oci-archive destination into volumes FILE.000, FILE.001... of this size (e.g. 4GiB)")
	}
	return cmd
}

// readPairs reads "SRC DST" lines.
func readPairs(file string) ([][2]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--from-file: %w", err)
	}
	var pairs [][2]string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, usageError{fmt.Errorf("--from-file %s line %d: want 'SRC DST', got %q", file, i+1, line)}
		}
		pairs = append(pairs, [2]string{fields[0], fields[1]})
	}
	if len(pairs) == 0 {
		return nil, usageError{fmt.Errorf("--from-file %s: no 'SRC DST' lines", file)}
	}
	return pairs, nil
}

func newPushCmd() *cobra.Command {
	return copyCmd("push SRC DST",
		"Push a modelcar to a registry and print its pinned reference",
		`Push copies an image from an OCI layout or archive (or another registry) to a
registry, byte for byte, and prints the pinned reference REGISTRY/REPO@sha256:...
on stdout. Blobs the registry has are skipped, blobs in another repository of the
same registry are mounted, the largest blobs go first, and uploads are chunked,
retried with backoff (5xx, 429 with Retry-After, dropped connections, and
connections on which nothing moves for --idle-timeout) and resumed: re-running
an interrupted push, even after kill -9, sends no finished blob again and
continues a partial one from the offset the registry acknowledged.
The tag is written last, only when everything it points to is there.

Credentials come from docker's config.json and credential helpers (DOCKER_CONFIG),
from 'modelcar login', or from --username with --password-stdin.`,
		`  # Push and record the digest for deployment
  modelcar push oci:./llama:v1 registry.example.com/models/llama:v1 --digest-file llama.digest

  # A local test registry over plain HTTP
  modelcar push oci-archive:llama.tar localhost:5000/models/llama:v1 --plain-http

  # CI with a token
  echo "$TOKEN" | modelcar push oci:./llama:v1 ghcr.io/acme/llama:v1 -u ci --password-stdin`, false)
}

func newMirrorCmd() *cobra.Command {
	return copyCmd("mirror SRC DST",
		"Copy a modelcar between registries, OCI layouts and archives, keeping its digest",
		`Mirror copies an image between any pair of registry, oci:PATH and
oci-archive:FILE, keeping every manifest byte so the digest is the same on
both sides. It skips what DST has, so re-running it is incremental. Archives
are read in place and written next to the target, then renamed: memory use
does not grow with the image.`,
		`  # Into an air gap: registry -> archive on a disk -> private registry
  modelcar mirror registry.example.com/models/llama:v1 oci-archive:/mnt/usb/llama.tar
  modelcar mirror oci-archive:/mnt/usb/llama.tar registry.airgap.local/models/llama:v1

  # Onto media with a 4 GiB file limit, then back (cat llama.tar.* > llama.tar also joins)
  modelcar mirror registry.example.com/models/llama:v1 oci-archive:/mnt/fat32/llama.tar --split-size 4GiB
  modelcar mirror oci-archive:/mnt/fat32/llama.tar registry.airgap.local/models/llama:v1

  # Many images; signatures and SBOMs too
  modelcar mirror --from-file images.txt --referrers`, true)
}

func newLoginCmd() *cobra.Command {
	var f transferFlags
	cmd := &cobra.Command{
		Use:   "login REGISTRY -u USER --password-stdin",
		Short: "Save registry credentials in docker's config.json (or its credential helper)",
		Example: `  echo "$TOKEN" | modelcar login ghcr.io -u ci --password-stdin
  modelcar login localhost:5000 -u admin --password-stdin --plain-http < password.txt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("login takes one registry host, got %d arguments", len(args))}
			}
			if f.username == "" || !f.passwordStdin {
				return usageError{fmt.Errorf("login needs --username and --password-stdin (passwords are never taken as flags)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd.InOrStdin(), f.username)
			if err != nil {
				return err
			}
			if err := push.Login(cmd.Context(), args[0], f.username, pw, push.WithPlainHTTP(f.plainHTTP), push.WithInsecure(f.insecure),
				push.WithIdleTimeout(f.idleTimeout)); err != nil {
				if credentialsRefused(err) {
					return loginRejected{host: args[0], user: f.username, err: err}
				}
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "Login succeeded")
			return nil
		},
	}
	f.register(cmd, false)
	cmd.Flags().Lookup("username").Usage = "registry user name; saved with the password (with --password-stdin)"
	return cmd
}

// credentialsRefused reports whether the registry answered 401 or 403 to
// credentials.
func credentialsRefused(err error) bool {
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		return er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden
	}
	return strings.Contains(err.Error(), "401 Unauthorized")
}

// loginRejected is login's error when the registry refuses the user and
// password: it names them and hints at them, not at 'modelcar login'.
type loginRejected struct {
	host, user string
	err        error
}

func (e loginRejected) Error() string {
	// push.Login's errors start with "login HOST as USER: ".
	detail := strings.TrimPrefix(e.err.Error(), fmt.Sprintf("login %s as %s: ", e.host, e.user))
	return fmt.Sprintf("login %s: the registry rejected the credentials of user %q: %s", e.host, e.user, detail)
}

func (e loginRejected) Unwrap() error { return e.err }
