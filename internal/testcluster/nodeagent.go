package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The node agent is the one helper process of a real node that is ours
// rather than Kubernetes': it runs in the host's network namespace and
//
//   - forwards TCP ports from inside the node's network namespace to the
//     host's loopback (the apiserver and the registries bind 127.0.0.1 on
//     the host; the kubelet and containerd dial the same 127.0.0.1:PORT
//     inside the node), so one reference and one kubeconfig work on both
//     sides;
//   - serves a device plugin on the kubelet's device-plugin socket that
//     offers fake GPUs as a real extended resource (nvidia.com/gpu), so
//     GPU requests schedule on the real node exactly as on a GPU node.
//
// It is this same executable started again with NodeAgentEnv naming its
// configuration (Main and the testcluster command run it): a test binary or
// `testcluster up` needs no other program built.

// NodeAgentEnv names the agent's configuration file when this executable
// runs as a real node's agent.
const NodeAgentEnv = "MODELCAR_TESTCLUSTER_NODE_AGENT"

// agentConfig is the node agent's configuration (JSON).
type agentConfig struct {
	// NetNS is the path of the node's network namespace (/run/netns/NAME).
	NetNS string `json:"netns"`
	// Forwards are the ports forwarded into the node.
	Forwards []agentForward `json:"forwards"`
	// DevicePluginDir is the kubelet's device-plugin directory (holding
	// kubelet.sock); empty: no device plugin.
	DevicePluginDir string `json:"devicePluginDir,omitempty"`
	// Resource is the extended resource offered (nvidia.com/gpu).
	Resource string `json:"resource,omitempty"`
	// Devices is how many fake devices it offers.
	Devices int `json:"devices,omitempty"`
}

// agentForward listens on Listen inside the node's namespace and connects
// each accepted connection to Target in the host's namespace.
type agentForward struct {
	Listen string `json:"listen"`
	Target string `json:"target"`
}

// RunNodeAgentIfRequested runs the node agent and exits when this process
// was started as one (NodeAgentEnv set); otherwise it returns at once. Main
// calls it first; so does every program that starts real nodes.
func RunNodeAgentIfRequested() {
	path := os.Getenv(NodeAgentEnv)
	if path == "" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runNodeAgent(ctx, path, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "node agent: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runNodeAgent(ctx context.Context, configPath string, log io.Writer) error {
	// SIGHUP: read the configuration again and open the forwards it added.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	errc := make(chan error, 1)
	active := map[string]bool{}
	pluginStarted := false
	apply := func() error {
		var cfg agentConfig
		if err := readJSONFile(configPath, &cfg); err != nil {
			return err
		}
		for _, f := range cfg.Forwards {
			if active[f.Listen] {
				continue
			}
			l, err := listenInNetNS(cfg.NetNS, f.Listen)
			if err != nil {
				return fmt.Errorf("listening on %s in %s: %w", f.Listen, cfg.NetNS, err)
			}
			active[f.Listen] = true
			fmt.Fprintf(log, "node agent: forwarding %s (in %s) to %s\n", f.Listen, cfg.NetNS, f.Target)
			go func() {
				if err := forward(ctx, l, f.Target); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}()
		}
		if cfg.DevicePluginDir != "" && !pluginStarted {
			pluginStarted = true
			go func() {
				if err := serveDevicePlugin(ctx, cfg, log); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}()
		}
		return nil
	}
	if err := apply(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-hup:
			if err := apply(); err != nil {
				fmt.Fprintf(log, "node agent: reloading %s: %v\n", configPath, err)
			}
		}
	}
}

// inNetNS runs fn on a thread that has entered the network namespace at
// nsPath; sockets fn opens keep that namespace whichever thread uses them.
func inNetNS(nsPath string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// This goroutine's thread changes namespace: it stays locked, and
		// is thrown away with the goroutine, unless it gets back.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(fnErr, fmt.Errorf("setns back from %s: %w", nsPath, err))
			return
		}
		runtime.UnlockOSThread()
		done <- fnErr
	}()
	return <-done
}

// listenInNetNS opens a TCP listener inside the network namespace at nsPath.
func listenInNetNS(nsPath, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetNS(nsPath, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil && l != nil {
		l.Close()
		l = nil
	}
	return l, err
}

// dialInNetNS connects to addr from inside the network namespace at nsPath.
func dialInNetNS(nsPath, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		c = nil
	}
	return c, err
}

// forward accepts on l until ctx ends and splices each connection to target.
func forward(ctx context.Context, l net.Listener, target string) error {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var d net.Dialer
	for {
		in, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer in.Close()
			out, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if c, ok := dst.(*net.TCPConn); ok {
					_ = c.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(out, in)
			go pipe(in, out)
			<-done
			<-done
		}()
	}
}

// devicePlugin offers Devices fake devices of Resource. Allocate gives each
// container the device IDs in NVIDIA_VISIBLE_DEVICES, as NVIDIA's plugin
// does, and nothing else: there is no device file to mount.
type devicePlugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *devicePlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *devicePlugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (p *devicePlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		ids := ""
		for i, id := range c.DevicesIds {
			if i > 0 {
				ids += ","
			}
			ids += id
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": ids},
		})
	}
	return resp, nil
}

func (p *devicePlugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// deviceEndpoint is the device plugin's socket, in the kubelet's directory.
const deviceEndpoint = "modelcar-fake-gpu.sock"

// serveDevicePlugin serves the plugin on its own socket in the kubelet's
// device-plugin directory and registers it with the kubelet, again each time
// the kubelet's socket is made anew (a kubelet restart forgets plugins).
func serveDevicePlugin(ctx context.Context, cfg agentConfig, log io.Writer) error {
	p := &devicePlugin{}
	for i := range cfg.Devices {
		p.devices = append(p.devices, &pluginapi.Device{ID: "fake-gpu-" + strconv.Itoa(i), Health: pluginapi.Healthy})
	}
	const endpoint = deviceEndpoint
	kubeletSock := filepath.Join(cfg.DevicePluginDir, "kubelet.sock")
	var registered os.FileInfo
	var srv *grpc.Server
	defer func() {
		if srv != nil {
			srv.Stop()
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		fi, err := os.Stat(kubeletSock)
		_, ownErr := os.Stat(filepath.Join(cfg.DevicePluginDir, endpoint))
		if err == nil && (registered == nil || !sameSocket(fi, registered) || ownErr != nil) {
			// The kubelet removes every other socket in the directory when
			// it starts: serve anew, then register.
			if srv != nil {
				srv.Stop()
			}
			sock := filepath.Join(cfg.DevicePluginDir, endpoint)
			_ = os.Remove(sock)
			l, err := net.Listen("unix", sock)
			if err != nil {
				return fmt.Errorf("device plugin: %w", err)
			}
			srv = grpc.NewServer()
			pluginapi.RegisterDevicePluginServer(srv, p)
			go func() { _ = srv.Serve(l) }()
			if err := registerDevicePlugin(ctx, kubeletSock, endpoint, cfg.Resource); err != nil {
				fmt.Fprintf(log, "node agent: registering %s with the kubelet: %v (retrying)\n", cfg.Resource, err)
			} else {
				registered = fi
				fmt.Fprintf(log, "node agent: registered %d fake %s with the kubelet\n", cfg.Devices, cfg.Resource)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C: // the kubelet gives no notice of a restart: look again
		}
	}
}

// sameSocket tells a socket file from one made anew in its place (its inode
// may be reused, its change time not).
func sameSocket(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime())
}

func registerDevicePlugin(ctx context.Context, kubeletSock, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}
