package push

import (
	"context"
	"fmt"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// Login checks the credentials against the registry and, when they work,
// saves them where docker would: its credential helper or config.json
// (DOCKER_CONFIG selects the directory). The password is never logged.
func Login(ctx context.Context, host, user, password string, opts ...Option) error {
	o, err := newOptions(opts)
	if err != nil {
		return err
	}
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true})
	if err != nil {
		return fmt.Errorf("reading docker credentials: %w", err)
	}
	o.creds = store
	client, err := o.httpClient()
	if err != nil {
		return err
	}
	reg, err := remote.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("login %s: %w", host, err)
	}
	reg.PlainHTTP = o.plainHTTP
	reg.Client = client.api
	if err := credentials.Login(ctx, store, reg, auth.Credential{Username: user, Password: password}); err != nil {
		return fmt.Errorf("login %s as %s: %w", host, user, err)
	}
	return nil
}
