package push

import (
	"bytes"
	"io"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

func typesOf(mt string) types.MediaType { return types.MediaType(mt) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
