package httpproblem

import (
	"net"
	"sync/atomic"
	"time"
)

// Bounds of the lingering close of a connection whose request body was refused. The client
// has the 413 and the end of the stream once the linger begins, so these only bound what a
// client that keeps uploading regardless may cost: a body larger than lingerBytes, or still
// arriving after lingerTime, or pausing longer than lingerIdle, is cut off with a reset.
const (
	lingerBytes = 64 << 20
	lingerTime  = 30 * time.Second
	lingerIdle  = 5 * time.Second
)

// Listener wraps ln so that a connection answered 413 because its body was over the limit
// closes gracefully. fasthttp refuses such a body on its Content-Length (or once a chunked
// body passes the limit), writes the answer and closes the connection while the client is
// still sending: closing a socket with unread data makes the kernel send a reset, and a client
// that is still writing (Go's net/http, browsers, most HTTP libraries) reports the reset, not
// the answer. So such a connection first ends its sending side (the client reads the 413 and
// then end of stream), then reads and discards what the client still sends until the client
// closes, within the bounds above, and only then closes.
//
// Only connections marked by Handler.Handle's 413 linger; every other close is immediate.
func Listener(ln net.Listener) net.Listener { return &lingerListener{Listener: ln} }

type lingerListener struct{ net.Listener }

func (l *lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c}, nil
}

type lingerConn struct {
	net.Conn
	linger atomic.Bool
}

// NetConn is the wrapped connection.
func (c *lingerConn) NetConn() net.Conn { return c.Conn }

func (c *lingerConn) Close() error {
	if c.linger.CompareAndSwap(true, false) {
		c.drain()
	}
	return c.Conn.Close()
}

// drain half-closes the connection and discards what the peer still sends, until it closes
// its side or a bound is reached.
func (c *lingerConn) drain() {
	// Without a half-close (a listener of another kind), the Connection: close of the answer
	// still tells the client to hang up.
	if cw, ok := find[interface{ CloseWrite() error }](c.Conn); ok && cw.CloseWrite() != nil {
		return
	}
	end := time.Now().Add(lingerTime)
	buf := make([]byte, 32<<10)
	for read := 0; read < lingerBytes; {
		deadline := time.Now().Add(lingerIdle)
		if deadline.After(end) {
			deadline = end
		}
		if err := c.SetReadDeadline(deadline); err != nil {
			return
		}
		n, err := c.Read(buf)
		read += n
		if err != nil {
			return
		}
	}
}

// lingerOnClose marks conn (a connection Listener accepted, possibly wrapped again) to linger
// when it closes. Connections of other listeners are left alone.
func lingerOnClose(conn net.Conn) {
	if lc, ok := find[*lingerConn](conn); ok {
		lc.linger.Store(true)
	}
}

// find looks for a T in conn and the connections it wraps (by their NetConn method, as
// crypto/tls.Conn has).
func find[T any](conn net.Conn) (T, bool) {
	for conn != nil {
		if t, ok := conn.(T); ok {
			return t, true
		}
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = u.NetConn()
	}
	var zero T
	return zero, false
}
