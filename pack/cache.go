package pack

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/renameio/v2"
)

// cacheVersion changes whenever the bytes pack writes for the same input
// change, so stale entries are never reused.
const cacheVersion = 1

// layerCache remembers the digest of layers already built from unchanged
// files, keyed by each file's path, size, mtime and inode plus every option
// that shapes the layer bytes. A hit lets a re-pack skip reading the model
// when the output already holds the blob. One small JSON file per entry, written
// atomically, so concurrent packs never corrupt it.
type layerCache struct {
	dir string
}

type cacheKeyEntry struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	MtimeNS  int64  `json:"mtimeNs"`
	Dev, Ino uint64
}

type cacheKey struct {
	Version     int             `json:"v"`
	Format      Format          `json:"format"`
	Level       int             `json:"level"`
	Epoch       int64           `json:"epoch"`
	Prioritized []string        `json:"prioritized"`
	Entries     []cacheKeyEntry `json:"entries"`
}

type cacheValue struct {
	Desc   v1.Descriptor `json:"desc"`
	DiffID v1.Hash       `json:"diffID"`
}

func newCacheKey(p layerPlan, f Format, level int, epoch int64, prioritized []string) cacheKey {
	k := cacheKey{Version: cacheVersion, Format: f, Level: level, Epoch: epoch, Prioritized: prioritized}
	for _, e := range p.Entries {
		abs, err := filepath.Abs(e.File.Path)
		if err != nil {
			abs = e.File.Path
		}
		k.Entries = append(k.Entries, cacheKeyEntry{Name: e.Name, Path: abs, Size: e.File.Size,
			MtimeNS: e.File.ModTime.UnixNano(), Dev: e.File.Dev, Ino: e.File.Ino})
	}
	return k
}

func (c *layerCache) file(k cacheKey) string {
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return filepath.Join(c.dir, hex.EncodeToString(sum[:])+".json")
}

func (c *layerCache) get(k cacheKey) (cacheValue, bool) {
	var v cacheValue
	if c == nil {
		return v, false
	}
	b, err := os.ReadFile(c.file(k))
	if err != nil || json.Unmarshal(b, &v) != nil || v.Desc.Digest.Hex == "" {
		return v, false
	}
	return v, true
}

// put records a built layer; failures only cost a future cache miss.
func (c *layerCache) put(k cacheKey, v cacheValue) {
	if c == nil {
		return
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	// Written with renameio (a temporary file beside it, fsynced, renamed
	// over it); a failed write only costs the entry.
	_ = renameio.WriteFile(c.file(k), b, 0o600, renameio.WithTempDir(c.dir))
}

// DefaultCacheDir is where the layer digest cache lives unless set:
// $XDG_CACHE_HOME/modelcar/layers (or ~/.cache/modelcar/layers).
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "modelcar", "layers")
}
