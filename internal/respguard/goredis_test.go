package respguard

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gotlsmgr/tlsmgr/internal/redisfake"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// genGoRedis writes a random reply whose contents go-redis can convert
// (numbers are numbers, map keys are scalars, verbatim strings have their
// format), so that any error is one of framing.
func genGoRedis(r *rand.Rand, w *bytes.Buffer, d int, scalar, inAttr bool) {
	kinds := "+-:,(#_$!=*~%|"
	switch {
	case scalar || d >= 4:
		kinds = kinds[:10]
	case inAttr:
		kinds = kinds[:13]
	}
	word := func() string {
		b := make([]byte, r.IntN(30))
		for i := range b {
			b[i] = "ab\r$*:+\n"[r.IntN(8)]
		}
		return string(b)
	}
	switch k := kinds[r.IntN(len(kinds))]; k {
	case '+', '-':
		b := []byte(word())
		for i := range b {
			if b[i] == '\n' {
				b[i] = 'n'
			}
		}
		if len(b) > 0 && b[len(b)-1] == '\r' {
			b[len(b)-1] = 'r'
		}
		fmt.Fprintf(w, "%c%s\r\n", k, b)
	case ':':
		fmt.Fprintf(w, ":%d\r\n", r.Int64()-r.Int64())
	case ',':
		fmt.Fprintf(w, ",%s\r\n", strconv.FormatFloat(r.NormFloat64()*1e6, 'g', -1, 64))
	case '(':
		fmt.Fprintf(w, "(%d%018d\r\n", r.Int64(), r.Int64()%1e18)
	case '#':
		w.WriteString([]string{"#t\r\n", "#f\r\n"}[r.IntN(2)])
	case '_':
		w.WriteString("_\r\n")
	case '$', '!':
		if r.IntN(8) == 0 {
			fmt.Fprintf(w, "%c-1\r\n", k)
			return
		}
		s := word()
		if r.IntN(10) == 0 {
			s = string(bytes.Repeat([]byte("x"), r.IntN(200000)))
		}
		fmt.Fprintf(w, "%c%d\r\n%s\r\n", k, len(s), s)
	case '=':
		s := "txt:" + word()
		fmt.Fprintf(w, "=%d\r\n%s\r\n", len(s), s)
	case '*', '~':
		n := r.IntN(5)
		fmt.Fprintf(w, "%c%d\r\n", k, n)
		for range n {
			genGoRedis(r, w, d+1, false, inAttr)
		}
	case '%':
		n := r.IntN(3)
		fmt.Fprintf(w, "%%%d\r\n", n)
		for i := range n {
			// Distinct scalar keys: go-redis makes a Go map.
			fmt.Fprintf(w, "$%d\r\nkey%d\r\n", len(strconv.Itoa(i))+3, i)
			genGoRedis(r, w, d+1, false, inAttr)
		}
	case '|':
		n := r.IntN(3)
		fmt.Fprintf(w, "|%d\r\n", n)
		for range 2 * n {
			genGoRedis(r, w, d+1, true, true)
		}
		genGoRedis(r, w, d, false, inAttr)
	}
}

// go-redis reads every valid reply that the guard passes, one after the
// other on one connection, each as the reply to its own command: the two
// agree on where every reply ends, and the guard refuses none of them, nor
// the RESP3 invalidation pushes between them.
func TestGoRedisAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	replies := make([]string, 3000)
	for i := range replies {
		var w bytes.Buffer
		genGoRedis(r, &w, 0, false, false)
		replies[i] = w.String()
	}
	srv := redisfake.Start(t, func(c *redisfake.Conn, args []string) bool {
		if args[0] != "GET" {
			return false
		}
		i, _ := strconv.Atoi(args[1])
		if c.Proto == 3 && i%5 == 0 {
			// An invalidation push before the reply, as Redis sends
			// them to a tracking RESP3 connection.
			c.Send(">2\r\n$10\r\ninvalidate\r\n*2\r\n$9\r\ntlsmgr:k1\r\n$9\r\ntlsmgr:k2\r\n")
		}
		c.Send(replies[i])
		return true
	})
	for _, proto := range []int{2, 3} {
		var refusals []error
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return Wrap(c, Default, func(e *Error) { refusals = append(refusals, e) }), nil
		}
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: proto, Dialer: dial, PoolSize: 1, MaxRetries: -1,
			DisableIdentity: true, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i, reply := range replies {
			v, err := rdb.Do(ctx, "GET", strconv.Itoa(i)).Result()
			if err != nil && err != redis.Nil && !isRedisError(err) {
				t.Fatalf("RESP%d reply %d %.200q: %v, %v", proto, i, reply, v, err)
			}
			// The next reply must start where both think this one ended.
			if v, err := rdb.Ping(ctx).Result(); err != nil || v != "PONG" {
				t.Fatalf("RESP%d after reply %d %.200q: PING: %q, %v", proto, i, reply, v, err)
			}
		}
		cancel()
		rdb.Close()
		if len(refusals) > 0 {
			t.Errorf("RESP%d: refused %v", proto, refusals)
		}
		if st := rdb.PoolStats(); st.Misses != 1 {
			t.Errorf("RESP%d: %d connections for %d replies, want one", proto, st.Misses, len(replies))
		}
	}
}

func isRedisError(err error) bool {
	_, ok := err.(redis.Error)
	return ok
}
