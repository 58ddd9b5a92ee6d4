//go:build linux

package push

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpProgress returns how many bytes the kernel has seen move on the TCP
// connection c: those of ours the peer acknowledged plus those received
// from it, read or not. Bytes that sit in socket buffers, draining to a
// slow peer, move this counter when the application sees nothing move.
func tcpProgress(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n uint64
	var got bool
	err = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
		if err == nil {
			n, got = info.Bytes_acked+info.Bytes_received, true
		}
	})
	return n, got && err == nil
}
