package testmodel

import (
	"encoding/binary"
	"hash/fnv"
	"io"
	"math"
	"math/bits"
	"strings"
	"sync"
)

// chunkSize is how much tensor data is produced and written at a time.
const chunkSize = 1 << 20

// bf16Table maps 16 random bits to a bf16 value: entry k is the bf16
// nearest to the (k+0.5)/65536 quantile of a normal distribution, so a
// uniform index gives normally distributed values whose bytes compress
// about like real weights.
type bf16Table [1 << 16]uint16

var (
	tablesOnce  sync.Once
	weightTable *bf16Table // N(0, 0.02): projections and embeddings
	normTable   *bf16Table // N(1, 0.05): RMSNorm scales
)

func tables() (weights, norms *bf16Table) {
	tablesOnce.Do(func() {
		weightTable = newBF16Table(0, 0.02)
		normTable = newBF16Table(1, 0.05)
	})
	return weightTable, normTable
}

func newBF16Table(mean, stddev float64) *bf16Table {
	t := new(bf16Table)
	for k := range t {
		p := (float64(k) + 0.5) / float64(len(t))
		z := float64(math.Sqrt2 * math.Erfinv(float64(2*p)-1))
		t[k] = toBF16(mean + float64(stddev*z))
	}
	return t
}

// toBF16 rounds v to the nearest bf16 (ties to even), through float32.
func toBF16(v float64) uint16 {
	b := math.Float32bits(float32(v))
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// RandomData returns a tensor data writer for WriteSafetensors that writes
// deterministic pseudo-random bf16 weights: each tensor's bytes depend only
// on seed and the tensor's name (not on the file or the order it is written
// in). Tensors named *norm.weight get values around 1, all others values
// around 0 with standard deviation 0.02. The writer reuses one 1 MiB buffer
// and is not safe for concurrent use.
func RandomData(seed int64) func(name string, n int64, w io.Writer) error {
	weights, norms := tables()
	var buf []byte
	return func(name string, n int64, w io.Writer) error {
		if buf == nil {
			buf = make([]byte, chunkSize)
		}
		g := rng{state: tensorSeed(seed, name), table: weights}
		if strings.HasSuffix(name, "norm.weight") {
			g.table = norms
		}
		for n > 0 {
			c := buf[:min(n, int64(len(buf)))]
			g.fill(c)
			if _, err := w.Write(c); err != nil {
				return err
			}
			n -= int64(len(c))
		}
		return nil
	}
}

// tensorSeed mixes the model seed and the tensor name into a stream state.
func tensorSeed(seed int64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return splitmix64(uint64(seed) ^ splitmix64(h.Sum64()))
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// rng is a wyrand generator turning each 64-bit output into four bf16
// values through a quantile table.
type rng struct {
	state uint64
	table *bf16Table
}

func (g *rng) next() uint64 {
	g.state += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(g.state, g.state^0xe7037ed1a0b428db)
	return hi ^ lo
}

// fill fills p with little-endian bf16 values. The stream only depends on
// the sequence of lengths filled; every fill but a tensor's last is a
// multiple of 8 bytes, so the stream does not depend on chunking either.
func (g *rng) fill(p []byte) {
	t := g.table
	s := g.state
	i := 0
	for ; i+8 <= len(p); i += 8 {
		s += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(s, s^0xe7037ed1a0b428db)
		r := hi ^ lo
		v := uint64(t[uint16(r)]) |
			uint64(t[uint16(r>>16)])<<16 |
			uint64(t[uint16(r>>32)])<<32 |
			uint64(t[uint16(r>>48)])<<48
		binary.LittleEndian.PutUint64(p[i:], v)
	}
	g.state = s
	if i < len(p) {
		r := g.next()
		var tail [8]byte
		binary.LittleEndian.PutUint64(tail[:], uint64(t[uint16(r)])|
			uint64(t[uint16(r>>16)])<<16|
			uint64(t[uint16(r>>32)])<<32|
			uint64(t[uint16(r>>48)])<<48)
		copy(p[i:], tail[:])
	}
}
