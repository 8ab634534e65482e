package rabbitmq_test

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proxy is a TCP proxy between the client and the broker that can hold
// back what the broker sends (freeze) and cut every connection: a network
// fault placed exactly, affecting only the connections made through it.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

// startProxy proxies to the broker of amqpURL and returns the URL to dial
// through it.
func startProxy(t *testing.T, amqpURL string) (*proxy, string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{t: t, ln: ln, target: u.Host}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(server, client, false) })
		p.wg.Go(func() { p.pipe(client, server, true) })
	}
}

// pipe copies from src to dst; what comes from the broker waits while the
// proxy is frozen.
func (p *proxy) pipe(dst, src net.Conn, fromBroker bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for fromBroker && p.frozen.Load() {
				time.Sleep(time.Millisecond)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze holds back everything the broker sends until cut or thaw.
func (p *proxy) freeze() { p.frozen.Store(true) }

// thaw lets the broker's bytes through again.
func (p *proxy) thaw() { p.frozen.Store(false) }

// cut closes every proxied connection, both sides, dropping what was held
// back, and thaws the proxy for the connections made next.
func (p *proxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	for _, c := range conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.thaw()
}
