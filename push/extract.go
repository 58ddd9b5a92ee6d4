package push

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Names and limits used by Extract and ExtractLayer.
const (
	extractDefaultPrefix = "/models"

	// extractStateName ends the name of the resume state Extract keeps beside
	// the target directory DIR (.DIR.modelcar-pull.json) while it runs and
	// which, listing every layer, stamps DIR as a complete pull after; it is
	// the whole name where the state is kept inside DIR (see stateAt).
	extractStateName = ".modelcar-pull.json"
	extractStateTemp = ".modelcar-pull.json.tmp"

	// extractPartialSuffix ends the temporary name a file or symlink is written
	// under until its layer is verified and committed.
	extractPartialSuffix = ".modelcar-partial"

	extractMaxName      = 4095         // bytes in an entry name or symlink target (PATH_MAX less its NUL)
	extractMaxDepth     = 128          // components in an entry name
	extractMaxComponent = 255          // bytes in one component of a name (NAME_MAX)
	extractMaxTempBase  = 200          // bytes of the final name kept in a temporary name
	extractCopyBuf      = layerBufSize // io.CopyBuffer buffer per layer
	extractMaxState     = 1 << 20
)

// extractSkipNames are the eStargz metadata entries at the root of a layer tar;
// they are never model files.
var extractSkipNames = map[string]bool{
	"stargz.index.json":     true,
	".prefetch.landmark":    true,
	".no.prefetch.landmark": true,
}

var (
	// errExtractAborted cancels the layers after one that failed: they could not
	// be committed in manifest order anyway.
	errExtractAborted = errors.New("aborted: an earlier layer failed")
)

// ExtractOptions controls Extract.
type ExtractOptions struct {
	// Prefix is the directory inside the image holding the model, default
	// "/models". Only entries under it are extracted, with the prefix
	// stripped; "/" extracts every entry. An image with no entry at or
	// under the prefix is an error naming its top-level directories.
	Prefix string
	// Jobs is how many layers are read and extracted in parallel (default
	// GOMAXPROCS; negative is an error). Whatever its value, layers are committed (their files
	// renamed to their final names) one at a time in manifest order, so when
	// two layers write the same file the later layer wins.
	Jobs int
	// Progress, when set, is called with the number of bytes read since the
	// previous call: compressed bytes, as the blobs are stored. Layers
	// skipped on resume are reported with their compressed size. Extract calls it from
	// several goroutines but never concurrently.
	Progress func(n int64)
	// Total, when set, is called once, before any layer is read, with the
	// bytes Progress reports in all: the compressed size of every layer,
	// those skipped on resume included.
	Total func(n int64)
}

// Extract writes the model files of img into dir: the entries of its layers
// under opts.Prefix, with the prefix stripped.
//
// dir must not exist, or be empty, or hold what a failed Extract of the same
// image (same manifest digest and prefix) left behind, in which case the
// layers that Extract had completed are skipped (resume). While it runs,
// Extract keeps its resume state beside dir, in PARENT/.NAME.modelcar-pull.json
// (see PullStatePath), rewritten atomically after each layer, so that dir
// holds nothing but the model files for a server reading it; once it lists
// every layer it stamps dir as a complete pull, so pulling the same image
// again is instant. Where dir's parent cannot hold it (dir is / or a
// mount point under a read-only parent), the state is kept inside dir as
// dir/.modelcar-pull.json, as modelcar did before; a pull begun that way
// is resumed from there and the state moves beside dir once it can.
//
// Every layer is read once and verified: Extract reads Layer.Compressed,
// checks its digest against Layer.Digest, decompresses it (gzip and zstd are
// recognised from the stream's magic bytes, whatever the media type says;
// see limits.ZstdWindow for the memory a zstd layer may use) and checks the
// tar stream against Layer.DiffID. Files and symlinks are written under temporary names and
// renamed to their final names only once their whole layer has been read and
// verified, so a failed Extract never leaves a partial or unverified file
// under its final name.
//
// The safety rules of ExtractLayer apply to every layer.
func Extract(ctx context.Context, img v1.Image, dir string, opts ExtractOptions) error {
	prefix, err := extractPrefix(opts.Prefix)
	if err != nil {
		return err
	}
	manifest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("extract: image digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("extract: image layers: %w", err)
	}
	infos := make([]extractLayerInfo, len(layers))
	for i, l := range layers {
		li := extractLayerInfo{idx: i, total: len(layers), layer: l}
		if li.digest, err = l.Digest(); err != nil {
			return fmt.Errorf("extract: layer %d: digest: %w", i+1, err)
		}
		if li.diffID, err = l.DiffID(); err != nil {
			return fmt.Errorf("extract: layer %d %s: diff ID: %w", i+1, li.digest, err)
		}
		if li.size, err = l.Size(); err != nil {
			li.size = 0 // only used for progress
		}
		infos[i] = li
	}

	if opts.Jobs < 0 {
		return fmt.Errorf("extract: jobs must be at least 1 (or 0 for the default), not %d", opts.Jobs)
	}
	_, statErr := os.Lstat(dir)
	existed := statErr == nil
	e := &extractJob{prefix: prefix, jobs: opts.Jobs}
	if opts.Progress != nil {
		e.progress = func(n int64) {
			e.progressMu.Lock()
			defer e.progressMu.Unlock()
			opts.Progress(n)
		}
	}
	if err := e.open(dir, manifest, infos); err != nil {
		return err
	}
	defer e.close()

	done := len(e.state.Layers)
	if opts.Total != nil {
		var total int64
		for _, li := range infos {
			total += max(li.size, 0)
		}
		opts.Total(total)
	}
	if e.progress != nil {
		for _, li := range infos[:done] {
			if li.size > 0 {
				e.progress(li.size)
			}
		}
	}
	if err := e.run(ctx, infos[done:]); err != nil {
		return fmt.Errorf("extract %s into %s: %w", manifest, dir, err)
	}
	if err := e.checkPrefix(dir, existed); err != nil {
		return err
	}
	// The state file stays beside DIR, listing every layer: it stamps DIR
	// as a complete pull of this manifest, so pulling it again (an init
	// container on a node-local cache path, or a re-run after a kill) is
	// instant.
	return nil
}

// PullStatePath is where Extract keeps the resume state of a pull into dir,
// and then the stamp of a complete one: beside dir, as
// PARENT/.NAME.modelcar-pull.json, out of the directory a server reads.
// It fails for a dir with no parent (/).
func PullStatePath(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("extract: %w", err)
	}
	parent, name := filepath.Split(abs)
	if name == "" {
		return "", fmt.Errorf("extract: %s has no parent directory to keep the pull state in", dir)
	}
	return filepath.Join(parent, "."+name+extractStateName), nil
}

// checkPrefix fails an Extract that found nothing under its prefix and
// left dir holding nothing but the state file (a wrong --prefix): it
// removes the state file, and dir if Extract created it, so dir does not
// look like a complete pull, and names the directories the image has.
func (e *extractJob) checkPrefix(dir string, existed bool) error {
	if e.prefix == "" || e.matched {
		return nil
	}
	f, err := e.root.Open(".")
	if err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("extract: reading %s: %w", dir, err)
	}
	for _, n := range names {
		if n != extractStateName {
			return nil // earlier runs extracted something (resume)
		}
	}
	for _, l := range []stateAt{e.inside, e.beside} {
		if err := l.remove(); err != nil {
			return fmt.Errorf("extract: %w", err)
		}
	}
	if !existed {
		os.Remove(dir) // only if empty
	}
	tops := make([]string, 0, len(e.tops))
	for t := range e.tops {
		tops = append(tops, "/"+t)
	}
	slices.Sort(tops)
	have := "no directories at all"
	if len(tops) > 0 {
		have = "these top-level directories: " + strings.Join(tops, ", ")
	}
	return fmt.Errorf("extract: the image has nothing under the prefix /%s; it has %s", e.prefix, have)
}

// ExtractLayer extracts one uncompressed tar stream into dir (created if
// missing; it may already hold files): the entries under prefix ("" means
// "/models", "/" means every entry), with the prefix stripped. Extract uses
// it for each layer; it is exported for tools and fuzzing.
//
// Every filesystem operation goes through an os.Root opened on dir, so
// nothing can be written outside dir. On top of that:
//
//   - entries whose name is absolute, has a ".." component, contains a NUL,
//     is longer than 4096 bytes or deeper than 128 components are refused,
//     wherever they are;
//   - entries outside prefix, PAX global headers and the eStargz metadata
//     entries at the root of the tar are skipped;
//   - under prefix, hard links, device nodes, FIFOs, sparse files and any
//     other special entry are refused, and so are OCI whiteouts (.wh.*) and names that
//     Extract reserves (*.modelcar-partial, .modelcar-pull.json);
//   - a symlink is allowed only when its target is relative and, resolved
//     from the link's directory, stays inside dir; it is stored with its
//     target cleaned, so it can never climb out through another symlink;
//   - nothing is ever written through a symlink: every parent of an entry
//     must be a real directory (created 0755 when missing), and files are
//     created with O_EXCL under a fresh temporary name;
//   - directories get the entry's permission bits within 0755 (plus owner
//     rwx), regular files are always 0644;
//   - a file's content is streamed, and must be exactly as long as its
//     header says.
//
// Files and symlinks are written under temporary names and renamed into
// place once the whole stream has been read without error; a later entry
// for the same name replaces an earlier one, but an entry never replaces a
// directory and a directory entry never replaces a file. On error, the
// temporary files are removed and no file of the stream is left under its
// final name. The error names the offending entry.
func ExtractLayer(ctx context.Context, r io.Reader, dir, prefix string) error {
	p, err := extractPrefix(prefix)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	x := newExtractLayer(root, p, "0", nil)
	if err := x.extract(ctx, &extractCtxReader{ctx: ctx, r: r}); err != nil {
		x.discard()
		return err
	}
	if err := x.commit(); err != nil {
		x.discard()
		return err
	}
	return nil
}

// extractPrefix turns an ExtractOptions.Prefix into the tar-name form: no
// leading or trailing slash, "" for the whole tar.
func extractPrefix(p string) (string, error) {
	if p == "" {
		p = extractDefaultPrefix
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("extract: prefix %q has a \"..\" component", p)
		}
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("extract: prefix %q contains a NUL byte", p)
	}
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	return c, nil
}

// EntryError reports a tar entry that ExtractLayer refused or failed to
// write.
type EntryError struct {
	Name string // the entry's name as the tar header gives it
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %q: %v", e.Name, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// extractPending is a file or symlink written under a temporary name.
type extractPending struct {
	name string // tar entry name, for errors
	rel  string // final name relative to the root
	tmp  string // temporary name relative to the root
	link bool   // a symlink, not a regular file
}

// extractLayer writes the entries of one tar stream under a root.
type extractLayer struct {
	root    *os.Root
	prefix  string
	tag     string // tells this stream's temporary names from others'
	buf     []byte
	seq     int
	pending []extractPending
	byRel   map[string]int  // rel -> index in pending
	dirs    map[string]bool // rels verified to be real directories
	// matched is set once an entry is at or under the prefix; tops holds
	// the top-level directories of the entries outside it (bounded).
	matched bool
	tops    map[string]bool
}

// extractMaxTops bounds the top-level directories remembered for the
// error of a prefix that matches nothing.
const extractMaxTops = 32

// outside records an entry outside the prefix: its top-level directory.
func (x *extractLayer) outside(name string, dir bool) {
	clean := path.Clean(name)
	top, _, nested := strings.Cut(clean, "/")
	if (!nested && !dir) || top == "." || len(x.tops) >= extractMaxTops {
		return
	}
	if x.tops == nil {
		x.tops = map[string]bool{}
	}
	x.tops[top] = true
}

// newExtractLayer starts a layer; buf is its copy buffer (nil: a new one).
func newExtractLayer(root *os.Root, prefix, tag string, buf []byte) *extractLayer {
	if buf == nil {
		buf = make([]byte, extractCopyBuf)
	}
	return &extractLayer{
		root:   root,
		prefix: prefix,
		tag:    tag,
		buf:    buf,
		byRel:  map[string]int{},
		dirs:   map[string]bool{},
	}
}

// extract reads the tar stream r to its end-of-archive marker, writing
// entries under temporary names. It does not commit.
func (x *extractLayer) extract(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	last := ""
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		insecure := false
		if err != nil {
			// With GODEBUG=tarinsecurepath=0 the reader flags names that
			// our own checks refuse as well.
			if hdr == nil || !errors.Is(err, tar.ErrInsecurePath) {
				if last != "" {
					return fmt.Errorf("reading tar header after entry %q: %w", last, err)
				}
				return fmt.Errorf("reading tar header: %w", err)
			}
			insecure = true
		}
		last = hdr.Name
		if err := x.entry(hdr, tr, insecure); err != nil {
			return &EntryError{Name: hdr.Name, Err: err}
		}
	}
}

// relName checks a tar entry name and returns it relative to the prefix;
// ok is false for entries to skip.
func (x *extractLayer) relName(name string) (rel string, ok bool, err error) {
	if len(name) > extractMaxName {
		return "", false, fmt.Errorf("name is %d bytes long, over the %d-byte limit", len(name), extractMaxName)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", false, errors.New("name contains a NUL byte")
	}
	if strings.HasPrefix(name, "/") {
		return "", false, errors.New("absolute name refused")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", false, errors.New(`name with a ".." component refused`)
		}
		// Checked before anything of the layer is renamed into place: the
		// rename of such a name would fail after the names before it.
		if len(c) > extractMaxComponent {
			return "", false, fmt.Errorf("a component of the name is %d bytes long, over the filesystem's %d-byte limit (NAME_MAX)", len(c), extractMaxComponent)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", false, nil
	}
	if d := strings.Count(clean, "/") + 1; d > extractMaxDepth {
		return "", false, fmt.Errorf("name is %d components deep, over the %d limit", d, extractMaxDepth)
	}
	if extractSkipNames[clean] {
		return "", false, nil
	}
	switch {
	case x.prefix == "":
		return clean, true, nil
	case clean == x.prefix:
		return ".", true, nil
	case strings.HasPrefix(clean, x.prefix+"/"):
		return clean[len(x.prefix)+1:], true, nil
	}
	return "", false, nil
}

func (x *extractLayer) entry(hdr *tar.Header, r io.Reader, insecure bool) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, ok, err := x.relName(hdr.Name)
	if err != nil {
		return err
	}
	if insecure {
		return errors.New("insecure name refused")
	}
	if !ok {
		x.outside(hdr.Name, hdr.Typeflag == tar.TypeDir)
		return nil
	}
	x.matched = true
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the prefix /%s itself must be a directory, not type %q", x.prefix, hdr.Typeflag)
		}
		return nil
	}
	for _, c := range strings.Split(rel, "/") {
		if strings.HasPrefix(c, ".wh.") {
			return errors.New("OCI whiteout refused: model layers never delete files")
		}
		if strings.HasSuffix(c, extractPartialSuffix) {
			return fmt.Errorf("names ending in %s are reserved", extractPartialSuffix)
		}
	}
	if rel == extractStateName || rel == extractStateTemp {
		return fmt.Errorf("name %s is reserved", rel)
	}

	for k := range hdr.PAXRecords {
		// The reader expands holes: a few bytes of tar could fill the disk.
		if strings.HasPrefix(k, "GNU.sparse.") {
			return errors.New("sparse file refused")
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.parents(rel); err != nil {
			return err
		}
		return x.dir(rel, fs.FileMode(hdr.Mode)&0o755|0o700)
	case tar.TypeReg:
		return x.file(hdr.Name, rel, hdr.Size, r)
	case tar.TypeSymlink:
		return x.symlink(hdr.Name, rel, hdr.Linkname)
	case tar.TypeLink:
		return fmt.Errorf("hard link to %q refused", hdr.Linkname)
	case tar.TypeChar:
		return errors.New("character device refused")
	case tar.TypeBlock:
		return errors.New("block device refused")
	case tar.TypeFifo:
		return errors.New("FIFO refused")
	default:
		return fmt.Errorf("entry type %q refused", hdr.Typeflag)
	}
}

// parents makes sure every parent of rel is a real directory, creating
// missing ones.
func (x *extractLayer) parents(rel string) error {
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			if err := x.dir(rel[:i], 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// dir makes sure p is a real directory (not a symlink to one), creating it
// with perm when missing.
func (x *extractLayer) dir(p string, perm fs.FileMode) error {
	if x.dirs[p] {
		return nil
	}
	if i, ok := x.byRel[p]; ok {
		if x.pending[i].link {
			return fmt.Errorf("%q is a symlink (entry %q); refusing to write through it", p, x.pending[i].name)
		}
		return fmt.Errorf("%q is a file (entry %q), not a directory", p, x.pending[i].name)
	}
	fi, err := x.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		err = x.root.Mkdir(p, perm)
		if err == nil {
			x.dirs[p] = true
			return nil
		}
		if !errors.Is(err, fs.ErrExist) { // else made concurrently by another layer
			return err
		}
		fi, err = x.root.Lstat(p)
	}
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		x.dirs[p] = true
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%q is a symlink; refusing to write through it", p)
	default:
		return fmt.Errorf("%q exists and is not a directory", p)
	}
}

// notDir refuses to put a file or symlink where a directory is.
func (x *extractLayer) notDir(rel string) error {
	if x.dirs[rel] {
		return fmt.Errorf("%q is a directory; refusing to replace it", rel)
	}
	fi, err := x.root.Lstat(rel)
	if err == nil && fi.IsDir() {
		return fmt.Errorf("%q is a directory; refusing to replace it", rel)
	}
	return nil
}

func (x *extractLayer) tempName(rel string) string {
	dir, base := path.Split(rel)
	if len(base) > extractMaxTempBase {
		base = base[:extractMaxTempBase]
	}
	x.seq++
	return dir + "." + base + "." + x.tag + "-" + strconv.Itoa(x.seq) + extractPartialSuffix
}

// create prepares rel for a new file or symlink and returns the temporary
// name to write it under.
func (x *extractLayer) create(rel string) (string, error) {
	if err := x.parents(rel); err != nil {
		return "", err
	}
	if err := x.notDir(rel); err != nil {
		return "", err
	}
	tmp := x.tempName(rel)
	if err := x.root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	return tmp, nil
}

func (x *extractLayer) file(name, rel string, size int64, r io.Reader) error {
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	tmp, err := x.create(rel)
	if err != nil {
		return err
	}
	// O_EXCL: never opens an existing file, nor follows a symlink.
	f, err := x.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	// Hide ReadFrom and WriteTo so that the 1 MiB buffer is used.
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{r}, x.buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("header says %d bytes, tar holds %d", size, n)
	}
	if err != nil {
		_ = x.root.Remove(tmp)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("truncated: header says %d bytes, stream ended after %d: %w", size, n, err)
		}
		return err
	}
	x.add(extractPending{name: name, rel: rel, tmp: tmp})
	return nil
}

func (x *extractLayer) symlink(name, rel, target string) error {
	switch {
	case target == "":
		return errors.New("symlink with an empty target refused")
	case len(target) > extractMaxName:
		return fmt.Errorf("symlink target is %d bytes long, over the %d-byte limit", len(target), extractMaxName)
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("symlink target contains a NUL byte")
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink to absolute path %q refused", target)
	}
	// Cleaning removes "x/.." pairs that the kernel would resolve through x
	// if x were itself a symlink; what is left climbs only through the real
	// directories above the link, then descends.
	clean := path.Clean(target)
	resolved := path.Join(path.Dir(rel), clean)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("symlink to %q points outside the target directory", target)
	}
	tmp, err := x.create(rel)
	if err != nil {
		return err
	}
	if err := x.root.Symlink(clean, tmp); err != nil {
		return err
	}
	x.add(extractPending{name: name, rel: rel, tmp: tmp, link: true})
	return nil
}

func (x *extractLayer) add(p extractPending) {
	if i, ok := x.byRel[p.rel]; ok { // a later entry for the same name wins
		_ = x.root.Remove(x.pending[i].tmp)
		x.pending[i] = p
		return
	}
	x.byRel[p.rel] = len(x.pending)
	x.pending = append(x.pending, p)
}

// commit renames the pending entries to their final names.
func (x *extractLayer) commit() error {
	for i, p := range x.pending {
		if err := x.root.Rename(p.tmp, p.rel); err != nil {
			x.pending = x.pending[i:]
			return &EntryError{Name: p.name, Err: x.renameError(p, err)}
		}
	}
	x.pending = nil
	clear(x.byRel)
	return nil
}

// renameError says why p could not take its name: another layer, read at
// the same time, made a directory there (a conflict between layers), or
// the system's reason, naming the path rather than the temporary name.
func (x *extractLayer) renameError(p extractPending, err error) error {
	what := "file"
	if p.link {
		what = "symlink"
	}
	if fi, lerr := x.root.Lstat(p.rel); lerr == nil && fi.IsDir() {
		return fmt.Errorf("conflict between layers: this layer's %s %q is where another layer made a directory", what, p.rel)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	return fmt.Errorf("cannot put %s %q in place: %w", what, p.rel, err)
}

// discard removes the pending entries' temporary files.
func (x *extractLayer) discard() {
	for _, p := range x.pending {
		_ = x.root.Remove(p.tmp)
	}
	x.pending = nil
	clear(x.byRel)
}

// extractCtxReader stops reading once its context is done.
type extractCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *extractCtxReader) Read(p []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// extractProgressReader reports the bytes read through it.
type extractProgressReader struct {
	r  io.Reader
	fn func(int64)
}

func (p *extractProgressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(int64(n))
	}
	return n, err
}

type extractLayerInfo struct {
	idx, total     int
	layer          v1.Layer
	digest, diffID v1.Hash
	size           int64
}

func (li extractLayerInfo) errorf(err error) error {
	return fmt.Errorf("layer %d/%d %s: %w", li.idx+1, li.total, li.digest, err)
}

// extractState is the resume state kept in dir/.modelcar-pull.json.
type extractState struct {
	Manifest string   `json:"manifest"`
	Prefix   string   `json:"prefix"`
	Layers   []string `json:"layers"` // digests of the completed leading layers, in manifest order
}

type extractJob struct {
	root   *os.Root
	prefix string
	jobs   int
	// parallel is how many layers are read at once (jobs, at most the
	// layers left): they share limits.ZstdWindowBudget, each with one of
	// the decoders kept for the next layer.
	parallel int
	decoders chan *layerDecoder
	state    extractState
	// beside is where the state is kept (see PullStatePath), inside the
	// fallback in dir; inDir is set while the state is in dir.
	beside, inside stateAt
	inDir          bool
	progress       func(int64)
	progressMu     sync.Mutex
	// matched and tops gather extractLayer's of every layer read.
	seenMu  sync.Mutex
	matched bool
	tops    map[string]bool
}

// seen gathers what x saw of the prefix.
func (e *extractJob) seen(x *extractLayer) {
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	e.matched = e.matched || x.matched
	for t := range x.tops {
		if len(e.tops) >= extractMaxTops {
			break
		}
		if e.tops == nil {
			e.tops = map[string]bool{}
		}
		e.tops[t] = true
	}
}

// open prepares dir and loads or starts the resume state.
func (e *extractJob) open(dir string, manifest v1.Hash, infos []extractLayerInfo) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	e.root = root
	e.inside = stateAt{root: root, name: extractStateName}
	if p, err := PullStatePath(dir); err == nil {
		if proot, err := os.OpenRoot(filepath.Dir(p)); err == nil {
			e.beside = stateAt{root: proot, name: filepath.Base(p)}
		}
	}
	fail := func(err error) error {
		e.close()
		return err
	}
	f, err := root.Open(".")
	if err != nil {
		return fail(fmt.Errorf("extract: %w", err))
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fail(fmt.Errorf("extract: reading %s: %w", dir, err))
	}
	want := extractState{Manifest: manifest.String(), Prefix: "/" + e.prefix, Layers: []string{}}
	if len(names) == 1 && names[0] == extractStateTemp {
		// Killed while writing the first state file: nothing else was written.
		names = nil
	}
	if len(names) == 0 {
		e.state = want
		if err := e.saveState(); err != nil {
			return fail(err)
		}
		return nil
	}
	st, err := e.loadState()
	if errors.Is(err, fs.ErrNotExist) {
		return fail(fmt.Errorf("extract: %s is not empty and holds no partial pull (no %s beside it)", dir, e.beside.name))
	}
	if err != nil {
		return fail(fmt.Errorf("extract: %s: %w", dir, err))
	}
	if st.Manifest != want.Manifest || st.Prefix != want.Prefix {
		return fail(fmt.Errorf("extract: %s holds a pull (%d layers extracted) of %s (prefix %s), not of %s (prefix %s); remove it or use another directory",
			dir, len(st.Layers), st.Manifest, st.Prefix, want.Manifest, want.Prefix))
	}
	if len(st.Layers) > len(infos) {
		return fail(fmt.Errorf("extract: %s: %s lists %d completed layers, the image has %d", dir, e.stateName(), len(st.Layers), len(infos)))
	}
	for i, d := range st.Layers {
		if d != infos[i].digest.String() {
			return fail(fmt.Errorf("extract: %s: %s lists layer %d as %s, the image has %s", dir, e.stateName(), i+1, d, infos[i].digest))
		}
	}
	e.state = st
	if err := e.sweep(); err != nil {
		return fail(fmt.Errorf("extract: %s: removing partial files: %w", dir, err))
	}
	return nil
}

// close closes the roots of dir and of its parent.
func (e *extractJob) close() {
	e.root.Close()
	if e.beside.root != nil {
		e.beside.root.Close()
	}
	e.root = nil
}

// stateName names the state file where it is now.
func (e *extractJob) stateName() string {
	if e.inDir {
		return e.inside.name
	}
	return e.beside.name
}

// loadState reads the state inside dir, where an older modelcar or a
// parent that could not hold it left it, else beside dir. Inside wins: it
// exists only while the state could not be written beside (every write
// beside removes it), so it is never older than what is beside.
func (e *extractJob) loadState() (extractState, error) {
	st, err := e.inside.load()
	if err == nil {
		e.inDir = true
		return st, nil
	}
	if !errors.Is(err, fs.ErrNotExist) || e.beside.root == nil {
		return st, err
	}
	return e.beside.load()
}

// saveState replaces the state beside dir atomically, and then removes one
// left inside dir; where nothing can be written beside dir, it replaces
// the state inside dir.
func (e *extractJob) saveState() error {
	b, err := json.Marshal(e.state)
	if err != nil {
		return err
	}
	if e.beside.root != nil {
		if err = e.beside.save(b); err == nil {
			if e.inDir {
				if err := e.inside.remove(); err != nil {
					return fmt.Errorf("extract: %w", err)
				}
				e.inDir = false
			}
			return nil
		}
	}
	if ierr := e.inside.save(b); ierr != nil {
		return ierr
	}
	e.inDir = true
	return nil
}

// stateAt is one place for the state file: name in root.
type stateAt struct {
	root *os.Root
	name string
}

func (l stateAt) load() (extractState, error) {
	var st extractState
	fi, err := l.root.Lstat(l.name)
	if err != nil {
		return st, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > extractMaxState {
		return st, fmt.Errorf("%s is not a small regular file", l.name)
	}
	b, err := l.root.ReadFile(l.name)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", l.name, err)
	}
	if st.Layers == nil {
		st.Layers = []string{}
	}
	return st, nil
}

// save replaces the file with b atomically (a temporary file, synced,
// renamed over it).
//
// Not renameio.WriteFile with WithRoot, though it would do the same
// write: its temporary name is random, and a killed extract must leave
// only NAME.tmp, a name remove and the next run know, not stray hidden
// files in the user's model directory.
func (l stateAt) save(b []byte) error {
	tmp := l.name + ".tmp"
	if err := l.root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("extract: %w", err)
	}
	f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.root.Rename(tmp, l.name)
	}
	if err != nil {
		_ = l.root.Remove(tmp)
		return fmt.Errorf("extract: saving %s: %w", l.name, err)
	}
	return nil
}

// remove removes the file and its temporary, if there (nothing to remove
// where root is nil).
func (l stateAt) remove() error {
	if l.root == nil {
		return nil
	}
	for _, n := range []string{l.name, l.name + ".tmp"} {
		if err := l.root.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// sweep removes the temporary files a killed Extract may have left.
func (e *extractJob) sweep() error {
	var rm []string
	err := fs.WalkDir(e.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), extractPartialSuffix) {
			rm = append(rm, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	rm = append(rm, extractStateTemp)
	for _, p := range rm {
		if err := e.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// run extracts the layers in todo, Jobs at a time, committing them in
// order. A failing layer cancels the layers after it; those before it still
// complete and are recorded for resume. The error is that of the first
// failing layer.
func (e *extractJob) run(ctx context.Context, todo []extractLayerInfo) error {
	n := len(todo)
	if n == 0 {
		return nil
	}
	jobs := e.jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	jobs = min(jobs, n)
	e.parallel = jobs
	e.decoders = make(chan *layerDecoder, jobs)
	defer func() {
		for range len(e.decoders) {
			(<-e.decoders).close()
		}
	}()

	ctxs := make([]context.Context, n)
	cancels := make([]context.CancelCauseFunc, n)
	for i := range todo {
		ctxs[i], cancels[i] = context.WithCancelCause(ctx)
	}
	defer func() {
		for _, c := range cancels {
			c(context.Canceled)
		}
	}()
	turns := make([]chan struct{}, n+1)
	for i := range turns {
		turns[i] = make(chan struct{})
	}
	close(turns[0])
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range jobs {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := e.layer(ctxs[i], todo[i], turns[i], turns[i+1]); err != nil {
					errs[i] = err
					for j := i + 1; j < n; j++ {
						cancels[j](errExtractAborted)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// decoder returns a free decoder, or a new one when all are in use (at
// most parallel are).
func (e *extractJob) decoder() *layerDecoder {
	select {
	case d := <-e.decoders:
		return d
	default:
		return newLayerDecoder(e.parallel)
	}
}

// release keeps d for the next layer.
func (e *extractJob) release(d *layerDecoder) {
	select {
	case e.decoders <- d:
	default:
		d.close()
	}
}

// layer extracts one layer, waits for its turn, commits it and records it in
// the state file.
func (e *extractJob) layer(ctx context.Context, li extractLayerInfo, turn <-chan struct{}, next chan<- struct{}) error {
	d := e.decoder()
	defer e.release(d)
	x := newExtractLayer(e.root, e.prefix, strconv.Itoa(li.idx), d.buf)
	if err := e.read(ctx, li, x, d); err != nil {
		x.discard()
		return li.errorf(err)
	}
	e.seen(x)
	select {
	case <-turn:
	case <-ctx.Done():
		x.discard()
		return li.errorf(context.Cause(ctx))
	}
	if err := x.commit(); err != nil {
		x.discard()
		return li.errorf(err)
	}
	e.state.Layers = append(e.state.Layers, li.digest.String())
	if err := e.saveState(); err != nil {
		return li.errorf(err)
	}
	close(next)
	return nil
}

func extractNewHash(h v1.Hash) (hash.Hash, error) {
	switch h.Algorithm {
	case "sha256":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %q", h.Algorithm)
}

func extractCheckHash(what string, h hash.Hash, want v1.Hash) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("%s digest mismatch: read %s:%s, want %s", what, want.Algorithm, got, want)
	}
	return nil
}

// read streams one layer into x through d and verifies its digests: the
// blob's against Layer.Digest as it is read, the uncompressed tar stream's
// against Layer.DiffID. Whatever the media type says, gzip and zstd are
// recognised from the blob's first bytes and decompressed with bounded
// memory (see layerDecoder).
func (e *extractJob) read(ctx context.Context, li extractLayerInfo, x *extractLayer, d *layerDecoder) error {
	uh, err := extractNewHash(li.diffID)
	if err != nil {
		return err
	}
	ch, err := extractNewHash(li.digest)
	if err != nil {
		return err
	}
	rc, err := li.layer.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = &extractCtxReader{ctx: ctx, r: rc}
	if e.progress != nil {
		r = &extractProgressReader{r: r, fn: e.progress}
	}
	br, dec, err := d.open(io.TeeReader(r, ch))
	if err != nil {
		return err
	}
	// An uncompressed layer's diffID is its digest: hash it once.
	same := dec == io.Reader(br) && li.digest == li.diffID
	u := dec
	if !same {
		u = io.TeeReader(dec, uh)
	}
	if err := x.extract(ctx, u); err != nil {
		return err
	}
	// Hash what follows the end-of-archive marker, then anything left of
	// the blob, so that both digests cover whole streams.
	if _, err := io.CopyBuffer(io.Discard, u, x.buf); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(io.Discard, br, x.buf); err != nil {
		return err
	}
	if err := extractCheckHash("blob", ch, li.digest); err != nil {
		return err
	}
	if same {
		return nil
	}
	return extractCheckHash("uncompressed (diff ID)", uh, li.diffID)
}
