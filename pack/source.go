package pack

import (
	"io/fs"
	"time"
)

// SourceFile is one regular file of a model directory, as pack will store it.
type SourceFile struct {
	// Rel is the slash-separated path relative to the model directory,
	// for example "config.json" or "tokenizer/vocab.txt".
	Rel string
	// Path is the path to open: symlinks (such as a Hugging Face cache
	// snapshot's links into ../../blobs) are already resolved.
	Path string
	// Size, Mode and ModTime describe the resolved regular file.
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
	// Dev and Ino identify the resolved file for the digest cache.
	Dev, Ino uint64
}
