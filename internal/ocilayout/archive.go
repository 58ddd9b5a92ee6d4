package ocilayout

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/limits"
)

// WriteArchive writes the layout in dir as an OCI archive (a tar of the
// layout, as skopeo's oci-archive transport reads it) to file, atomically:
// the tar is written next to file and renamed over it only when complete.
func WriteArchive(dir, file string) error { return WriteArchiveSplit(dir, file, 0) }

// VolumeName is the name of volume i of a split archive: FILE.000, FILE.001...
// `cat FILE.* > FILE` joins them into the plain archive.
func VolumeName(file string, i int) string { return fmt.Sprintf("%s.%03d", file, i) }

// WriteArchiveSplit is WriteArchive cut into volumes of at most volume
// bytes (0: one file). Volumes are renamed into place only when all are
// complete, the first last, so FILE.000 existing means the set is whole.
//
// Writing one form removes the other: volumes replace a single FILE, and a
// single FILE replaces volumes, so that neither a reader nor `cat FILE.* >
// FILE` can find the old image afterwards. The new form is published first
// and the old one removed after; in between (or after a crash there) both
// exist, which OpenArchive refuses (unless both hold the same image)
// rather than pick one.
func WriteArchiveSplit(dir, file string, volume int64) (err error) {
	var names []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && d.Name() == tmpDir {
			return filepath.SkipDir
		}
		if rel != "." && (d.IsDir() || d.Type().IsRegular()) {
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("archiving layout %s: %w", dir, err)
	}
	// oci-layout and index.json first, then blobs; readers can stop early.
	rank := func(n string) int {
		switch n {
		case layoutFile:
			return 0
		case indexFile:
			return 1
		}
		return 2
	}
	sort.Slice(names, func(i, j int) bool {
		if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	f := &volumeWriter{file: file, size: volume}
	defer func() {
		if err != nil {
			f.abort()
		}
	}()
	tw := tar.NewWriter(f)
	buf := make([]byte, 1<<20)
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("writing archive %s: %w", file, err)
		}
		h := &tar.Header{Name: n, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, n+"/", 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, st.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing archive %s: %w", file, err)
		}
		if st.IsDir() {
			continue
		}
		src, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("writing archive %s: %w", file, err)
		}
		_, err = io.CopyBuffer(tw, onlyReader{src}, buf)
		src.Close()
		if err != nil {
			return fmt.Errorf("writing archive %s: %s: %w", file, n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	if err := f.commit(); err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	return nil
}

// volumeWriter writes temporary volume files and renames them at commit.
type volumeWriter struct {
	file  string
	size  int64 // 0: one volume
	vols  []*os.File
	inCur int64
}

func (v *volumeWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if len(v.vols) == 0 || (v.size > 0 && v.inCur == v.size) {
			f, err := createTemp(filepath.Dir(v.file), "."+filepath.Base(v.file)+".partial-", filePerm)
			if err != nil {
				return n, err
			}
			v.vols = append(v.vols, f)
			v.inCur = 0
		}
		chunk := p
		if v.size > 0 && int64(len(chunk)) > v.size-v.inCur {
			chunk = chunk[:v.size-v.inCur]
		}
		m, err := v.vols[len(v.vols)-1].Write(chunk)
		n += m
		v.inCur += int64(m)
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

func (v *volumeWriter) commit() error {
	for _, f := range v.vols {
		if err := f.Close(); err != nil {
			return err
		}
	}
	if v.size == 0 {
		if err := os.Rename(v.vols[0].Name(), v.file); err != nil {
			return err
		}
		v.vols = nil
		if testHookPublished != nil {
			testHookPublished()
		}
		// Old volumes would otherwise be joined back into the old image;
		// until they are gone, FILE beside FILE.000 is refused by readers.
		return removeVolumes(v.file, 0)
	}
	// Stale volumes of an earlier, longer set would corrupt a join.
	if err := removeVolumes(v.file, len(v.vols)); err != nil {
		return err
	}
	if err := removeIfExists(VolumeName(v.file, 0)); err != nil {
		return err
	}
	for i := len(v.vols) - 1; i >= 0; i-- {
		if err := os.Rename(v.vols[i].Name(), VolumeName(v.file, i)); err != nil {
			return err
		}
	}
	v.vols = nil
	if testHookPublished != nil {
		testHookPublished()
	}
	// A single archive of an earlier write would shadow the volumes.
	return removeIfExists(v.file)
}

// testHookPublished, when set by a test, runs in commit between publishing
// the new form and removing the other.
var testHookPublished func()

// removeVolumes removes FILE.NNN from volume from on, up to the first
// missing one (FILE.000 may be missing before FILE.001: it is removed first).
func removeVolumes(file string, from int) error {
	for i := from; ; i++ {
		err := os.Remove(VolumeName(file, i))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if i > from || from > 0 {
				return nil
			}
		case err != nil:
			return fmt.Errorf("removing the stale volume: %w", err)
		}
	}
}

func removeIfExists(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale archive: %w", err)
	}
	return nil
}

func (v *volumeWriter) abort() {
	for _, f := range v.vols {
		f.Close()
		os.Remove(f.Name())
	}
}

type onlyReader struct{ io.Reader }

// Archive is an OCI archive opened in place: its entries are indexed once
// and blobs are read as sections of the tar file (or of its volumes).
type Archive struct {
	File    string
	f       readerAtCloser
	entries map[string]section
}

type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

type section struct{ off, size int64 }

// CheckArchiveTarget refuses to write an archive over file when file is
// something other than an OCI archive (a model, a log, a layout directory
// given the wrong prefix): writing replaces it whole.
func CheckArchiveTarget(file string) error {
	st, err := os.Stat(file)
	if err != nil {
		return nil // nothing there (or a split archive, checked when written)
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, want an archive file", file)
	}
	if st.Size() == 0 {
		return nil
	}
	a, err := OpenArchive(file)
	if err != nil {
		return fmt.Errorf("%s exists and is not an OCI archive (%v): remove it or write to another file", file, err)
	}
	return a.Close()
}

// OpenArchive indexes the tar file's entries.
// A split archive is opened by its base name when FILE.000 exists.
// When both FILE and FILE.000 exist (volumes joined with `cat FILE.* >
// FILE`, or a crash while one form replaced the other, or an older version
// that left the other form behind) they must hold the same index.json, and
// FILE is read; two different images are an error naming both rather than
// a silent choice of one.
func OpenArchive(file string) (*Archive, error) {
	_, serr := os.Lstat(file)
	_, verr := os.Lstat(VolumeName(file, 0))
	if serr != nil || verr != nil {
		f, size, err := openVolumes(file)
		if err != nil {
			return nil, fmt.Errorf("opening archive: %w", err)
		}
		return indexArchive(file, f, size)
	}
	both := func(why string) error {
		return fmt.Errorf("archive %s: both %s and the split volumes %s... exist and %s; remove the stale one",
			file, file, VolumeName(file, 0), why)
	}
	single, err := openSingle(file)
	if err != nil {
		return nil, fmt.Errorf("opening archive: %w", err)
	}
	a, err := indexArchive(file, single, sizeOf(single))
	if err != nil {
		return nil, err
	}
	f, size, err := openSplit(file)
	if err != nil {
		a.Close()
		return nil, both(fmt.Sprintf("the volumes cannot be read (%v)", err))
	}
	split, err := indexArchive(file, f, size)
	if err != nil {
		a.Close()
		return nil, both(fmt.Sprintf("the volumes cannot be read (%v)", err))
	}
	defer split.Close()
	i1, err1 := a.rawEntry(indexFile)
	i2, err2 := split.rawEntry(indexFile)
	if err1 != nil || err2 != nil || !bytes.Equal(i1, i2) {
		a.Close()
		return nil, both("hold different images")
	}
	return a, nil
}

func sizeOf(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// indexArchive indexes the tar entries of f; it closes f on error.
func indexArchive(file string, f readerAtCloser, size int64) (*Archive, error) {
	a := &Archive{File: file, f: f, entries: map[string]section{}}
	cr := &offsetReader{r: io.NewSectionReader(f, 0, size)}
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("archive %s: reading tar: %w", file, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		a.entries[name] = section{off: cr.off, size: h.Size}
	}
	if _, ok := a.entries[layoutFile]; !ok {
		f.Close()
		return nil, fmt.Errorf("archive %s: not an OCI archive (no oci-layout entry)", file)
	}
	return a, nil
}

// rawEntry reads a small entry (index.json) as it is stored.
func (a *Archive) rawEntry(name string) ([]byte, error) {
	s, ok := a.entries[name]
	if !ok || s.size > limits.MaxManifestBytes {
		return nil, fmt.Errorf("archive %s: no usable %s", a.File, name)
	}
	return io.ReadAll(io.NewSectionReader(a.f, s.off, s.size))
}

// Close closes the archive file.
func (a *Archive) Close() error { return a.f.Close() }

// Index reads index.json.
func (a *Archive) Index() (*v1.IndexManifest, error) {
	s, ok := a.entries[indexFile]
	if !ok {
		return nil, fmt.Errorf("archive %s: no index.json", a.File)
	}
	if s.size > limits.MaxManifestBytes {
		return nil, &limits.TooLargeError{What: fmt.Sprintf("archive %s: index.json", a.File), Size: s.size, Limit: limits.MaxManifestBytes}
	}
	var idx v1.IndexManifest
	if err := json.NewDecoder(io.NewSectionReader(a.f, s.off, s.size)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("archive %s: index.json: %w", a.File, err)
	}
	return &idx, nil
}

// Blob returns the blob h as a section of the archive, or an error if absent.
func (a *Archive) Blob(h v1.Hash) (*io.SectionReader, error) {
	s, ok := a.entries["blobs/"+h.Algorithm+"/"+h.Hex]
	if !ok {
		return nil, fmt.Errorf("archive %s: blob %s is missing", a.File, h)
	}
	return io.NewSectionReader(a.f, s.off, s.size), nil
}

// offsetReader tracks the offset of the underlying file so tar entries can
// be located; Seek lets the tar reader skip bodies without reading them.
type offsetReader struct {
	r   io.ReadSeeker
	off int64
}

func (o *offsetReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.off += int64(n)
	return n, err
}

func (o *offsetReader) Seek(offset int64, whence int) (int64, error) {
	n, err := o.r.Seek(offset, whence)
	if err == nil {
		o.off = n
	}
	return n, err
}

// openVolumes opens file, or its volumes FILE.000, FILE.001... as one.
func openVolumes(file string) (readerAtCloser, int64, error) {
	if f, err := openSingle(file); err == nil {
		return f, sizeOf(f), nil
	} else if !os.IsNotExist(err) {
		return nil, 0, err
	}
	return openSplit(file)
}

// openSingle opens an archive file, a regular one (see openRegular).
func openSingle(file string) (*os.File, error) {
	f, _, err := openRegular(file)
	return f, err
}

// openSplit opens the volumes FILE.000, FILE.001... as one file.
func openSplit(file string) (readerAtCloser, int64, error) {
	var m multiFile
	for i := 0; ; i++ {
		f, _, err := openRegular(VolumeName(file, i))
		if os.IsNotExist(err) && i > 0 {
			break
		}
		if err != nil {
			m.Close()
			if i == 0 && os.IsNotExist(err) {
				return nil, 0, fmt.Errorf("%s: no such file (nor volumes %s...)", file, VolumeName(file, 0))
			}
			return nil, 0, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			m.Close()
			return nil, 0, err
		}
		m.files = append(m.files, f)
		m.offs = append(m.offs, m.size)
		m.size += st.Size()
	}
	return &m, m.size, nil
}

// multiFile reads volumes as one file.
type multiFile struct {
	files []*os.File
	offs  []int64
	size  int64
}

func (m *multiFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= m.size {
			return n, io.EOF
		}
		i := sort.Search(len(m.offs), func(i int) bool { return m.offs[i] > pos }) - 1
		end := m.size
		if i+1 < len(m.offs) {
			end = m.offs[i+1]
		}
		want := min(int64(len(p)-n), end-pos)
		k, err := m.files[i].ReadAt(p[n:n+int(want)], pos-m.offs[i])
		n += k
		if err != nil && err != io.EOF {
			return n, err
		}
		if int64(k) < want {
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}

func (m *multiFile) Close() error {
	for _, f := range m.files {
		f.Close()
	}
	return nil
}
