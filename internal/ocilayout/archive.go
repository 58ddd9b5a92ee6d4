package ocilayout

import (
	"archive/tar"
	"encoding/json"
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
)

// WriteArchive writes the layout in dir as an OCI archive (a tar of the
// layout, as skopeo's oci-archive transport reads it) to file, atomically:
// the tar is written next to file and renamed over it only when complete.
func WriteArchive(dir, file string) (err error) {
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
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
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
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return fmt.Errorf("writing archive %s: %w", file, err)
	}
	return nil
}

type onlyReader struct{ io.Reader }

// Archive is an OCI archive opened in place: its entries are indexed once
// and blobs are read as sections of the tar file.
type Archive struct {
	File    string
	f       *os.File
	entries map[string]section
}

type section struct{ off, size int64 }

// OpenArchive indexes the tar file's entries.
func OpenArchive(file string) (*Archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("opening archive: %w", err)
	}
	a := &Archive{File: file, f: f, entries: map[string]section{}}
	cr := &offsetReader{r: f}
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

// Close closes the archive file.
func (a *Archive) Close() error { return a.f.Close() }

// Index reads index.json.
func (a *Archive) Index() (*v1.IndexManifest, error) {
	s, ok := a.entries[indexFile]
	if !ok {
		return nil, fmt.Errorf("archive %s: no index.json", a.File)
	}
	if s.size > 64<<20 {
		return nil, fmt.Errorf("archive %s: index.json is %d bytes", a.File, s.size)
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
