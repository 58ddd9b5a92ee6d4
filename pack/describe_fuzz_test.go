package pack

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FuzzDescribe feeds arbitrary manifests and configs to Describe (what
// inspect shows for any image, from any registry): it never panics.
func FuzzDescribe(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:`+
		"0000000000000000000000000000000000000000000000000000000000000000"+`","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:`+
		"1111111111111111111111111111111111111111111111111111111111111111"+`","size":10,"annotations":{"org.opencontainers.image.title":"a,b"}}]}`),
		[]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:`+"1111111111111111111111111111111111111111111111111111111111111111"+`"]}}`))
	f.Add([]byte(`{"layers":[{}]}`), []byte(`{}`)) // found by this fuzzer: a config without a platform crashed inspect
	f.Add([]byte(`null`), []byte(`null`))
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		info, err := Describe("fuzz", v1.Hash{Algorithm: "sha256", Hex: "00"}, manifest, config)
		if err != nil || info == nil {
			return
		}
		if info.Platform == "" {
			t.Fatalf("Describe returned no platform: %+v", info)
		}
	})
}
