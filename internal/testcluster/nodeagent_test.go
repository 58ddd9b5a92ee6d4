package testcluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is the kubelet's registration service: it records what
// plugins register.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	got chan *pluginapi.RegisterRequest
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.got <- r
	return &pluginapi.Empty{}, nil
}

func startFakeKubelet(t *testing.T, dir string) (*fakeKubelet, func()) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{got: make(chan *pluginapi.RegisterRequest, 4)}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, k)
	go func() { _ = srv.Serve(l) }()
	return k, srv.Stop
}

// TestDevicePlugin: the agent's device plugin registers its resource with
// the kubelet, lists its fake devices, allocates them by ID, and registers
// again when the kubelet's socket is made anew (a kubelet restart).
func TestDevicePlugin(t *testing.T) {
	dir, err := os.MkdirTemp("", "mc-dp-") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	k, stop := startFakeKubelet(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serveDevicePlugin(ctx, agentConfig{DevicePluginDir: dir, Resource: "nvidia.com/gpu", Devices: 3}, io.Discard)
	}()
	var reg *pluginapi.RegisterRequest
	select {
	case reg = <-k.got:
	case <-ctx.Done():
		t.Fatal("the plugin never registered")
	}
	if reg.ResourceName != "nvidia.com/gpu" || reg.Version != pluginapi.Version || reg.Endpoint == "" {
		t.Fatalf("registered %+v", reg)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, reg.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)
	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Devices) != 3 {
		t.Fatalf("ListAndWatch: %d devices, want 3", len(list.Devices))
	}
	for _, d := range list.Devices {
		if d.Health != pluginapi.Healthy {
			t.Errorf("device %s is %s", d.ID, d.Health)
		}
	}
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{list.Devices[0].ID, list.Devices[2].ID}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 1 || resp.ContainerResponses[0].Envs["NVIDIA_VISIBLE_DEVICES"] != list.Devices[0].ID+","+list.Devices[2].ID {
		t.Errorf("Allocate: %+v", resp.ContainerResponses)
	}

	// A kubelet restart: a new socket, and the plugin registers again.
	stop()
	os.Remove(filepath.Join(dir, "kubelet.sock"))
	k2, stop2 := startFakeKubelet(t, dir)
	defer stop2()
	select {
	case reg = <-k2.got:
	case <-ctx.Done():
		t.Fatal("the plugin did not register with the restarted kubelet")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveDevicePlugin: %v", err)
	}
}

// TestForwardIntoNetNS: a port forwarded into a network namespace answers
// there with what a server on the host's loopback sends. Needs root.
func TestForwardIntoNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ip netns)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	ns := fmt.Sprintf("modelcar-fwd-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("from the host"))
			c.Close()
		}
	}()
	l, err := listenInNetNS("/run/netns/"+ns, host.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = forward(ctx, l, host.Addr().String()) }()
	c, err := dialInNetNS("/run/netns/"+ns, host.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "from the host" {
		t.Errorf("read %q (%v) through the forward", got, err)
	}
	// The host's loopback is not the namespace's: without the forward,
	// nothing listens there.
	if c, err := dialInNetNS("/run/netns/"+ns, "127.0.0.1:1"); err == nil {
		c.Close()
		t.Error("dialed 127.0.0.1:1 inside the namespace")
	}
}
