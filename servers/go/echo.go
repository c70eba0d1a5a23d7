// echobench's Go reference server: the study's own model.
//
// net.Listen, an Accept loop, a goroutine per connection copying what it
// reads back to the peer (io.Copy-style, through one 64 KiB buffer so a
// connection holds at most that much), TCP_NODELAY (Go's default, set
// explicitly). Same contract as the Python models: one ready line
// (host:port) on stdout, logs on stderr, SIGINT/SIGTERM stop it with exit
// code 0, bad input is one line on stderr and exit code 1 or 2.
//
// --transport unix --path PATH listens on a Unix stream socket (the ready
// line is unix:PATH; Go removes the file when the listener closes; the
// Python wrapper clears a stale file before exec). --transport udp answers
// each datagram to its source from GOMAXPROCS goroutines reading one socket;
// each holds one datagram at a time (WriteTo waits for room in the send
// buffer), so memory stays bounded.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	flag.CommandLine.SetOutput(os.Stderr)
	host := flag.String("host", "127.0.0.1", "address to bind")
	port := flag.Int("port", 25000, "port to bind, 0 = any free port")
	transport := flag.String("transport", "tcp", "tcp, udp or unix")
	path := flag.String("path", "", "socket file for --transport unix")
	tlsCert := flag.String("tls-cert", "", "serve TLS 1.3 with this certificate chain (PEM; with --tls-key)")
	tlsKey := flag.String("tls-key", "", "the private key of --tls-cert (PEM)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: echo-go [--transport tcp|udp|unix] [--host H] [--port P] [--path PATH] [--tls-cert PEM --tls-key PEM]")
	}
	flag.Parse()
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(os.Stderr, "echo-go: error: port %d is outside 0..65535\n", *port)
		os.Exit(2)
	}
	addr := net.JoinHostPort(*host, strconv.Itoa(*port))
	switch *transport {
	case "udp":
		serveUDP(addr)
		return
	case "unix":
		if *path == "" {
			fmt.Fprintln(os.Stderr, "echo-go: error: --transport unix needs --path")
			os.Exit(2)
		}
		addr = *path
	case "tcp":
	default:
		fmt.Fprintf(os.Stderr, "echo-go: error: unknown transport %q (tcp, udp or unix)\n", *transport)
		os.Exit(2)
	}
	var tlsConfig *tls.Config
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(os.Stderr, "echo-go: error: --tls-cert and --tls-key go together")
		os.Exit(2)
	}
	if *tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo-go: error: cannot load the TLS certificate: %v\n", err)
			os.Exit(1)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
	}
	network := *transport
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-go: error: cannot bind %s: %v\n", addr, errors.Unwrap(err))
		os.Exit(1)
	}
	var mu sync.Mutex
	live := map[net.Conn]struct{}{}
	stopping := false

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		mu.Lock()
		stopping = true
		for c := range live {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
		os.Exit(0)
	}()

	if network == "unix" {
		fmt.Println("unix:" + addr) // the ready line
	} else {
		fmt.Println(ln.Addr().String()) // 127.0.0.1:PORT or [::1]:PORT: the ready line
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			mu.Lock()
			s := stopping
			mu.Unlock()
			if s {
				select {} // the signal goroutine exits the process
			}
			// EMFILE and friends: back off instead of spinning (as net/http does)
			if backoff == 0 {
				backoff = 5 * time.Millisecond
				fmt.Fprintf(os.Stderr, "echo-go: accept: %v; backing off\n", err)
			} else if backoff < time.Second {
				backoff *= 2
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if tlsConfig != nil { // crypto/tls: the handshake runs in the connection's goroutine, on its first Read
			c = tls.Server(c, tlsConfig)
		}
		mu.Lock()
		live[c] = struct{}{}
		mu.Unlock()
		go func(c net.Conn) {
			buf := make([]byte, 64<<10)
			for {
				n, rerr := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if rerr != nil { // io.EOF after a half-close: every byte is echoed, close sends FIN
					break
				}
			}
			c.Close()
			mu.Lock()
			delete(live, c)
			mu.Unlock()
		}(c)
	}
}

// serveUDP echoes datagrams until SIGINT/SIGTERM.
func serveUDP(addr string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-go: error: cannot bind udp %s: %v\n", addr, errors.Unwrap(err))
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		go func() {
			buf := make([]byte, 64<<10) // room for the largest UDP datagram
			for {
				n, from, rerr := pc.ReadFrom(buf)
				if rerr != nil {
					if errors.Is(rerr, net.ErrClosed) {
						return
					}
					continue // an ICMP error about one peer
				}
				pc.WriteTo(buf[:n], from) // an error (peer gone): this echo is dropped, as UDP allows
			}
		}()
	}
	fmt.Println(pc.LocalAddr().String()) // the ready line
	<-sig
	pc.Close()
	os.Exit(0)
}
