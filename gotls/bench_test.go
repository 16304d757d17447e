package gotls

import (
	"crypto/tls"
	"testing"
	"time"
)

// BenchmarkHandshake: one connection over loopback per op (dial,
// handshake, one line read so that TLS 1.3 tickets are taken in, close),
// for TLS 1.2 and 1.3:
//
//	full           no session cache: a full handshake every time
//	gotickets      resumed with Go's own tickets and LRU client cache
//	stateful       resumed, server with SetStatefulSessions (a daemon
//	               lookup and an update per handshake)
//	clientcache    resumed, client with NewClientSessionCache (a daemon
//	               lookup and an update per handshake), Go's tickets
//	both           resumed, both adapters
//
// The resumed fraction is reported as resumed/op; ns/op of an adapter
// over gotickets is its added cost.
func BenchmarkHandshake(b *testing.B) {
	dm := startDaemon(b)
	c := getCert(b)
	d := dm.dial(b, time.Second, nil)
	for _, v := range versions {
		for _, mode := range []string{"full", "gotickets", "stateful", "clientcache", "both"} {
			b.Run(v.name+"/"+mode, func(b *testing.B) {
				scfg := serverConfig(c.cert, v.v)
				var cache tls.ClientSessionCache
				switch mode {
				case "full":
					scfg.SessionTicketsDisabled = true
				case "gotickets":
					cache = tls.NewLRUClientSessionCache(16)
				case "stateful":
					SetStatefulSessions(scfg, d, "smtpd")
					cache = tls.NewLRUClientSessionCache(16)
				case "clientcache":
					cache = NewClientSessionCache(d, "smtp")
				case "both":
					SetStatefulSessions(scfg, d, "smtpd")
					cache = NewClientSessionCache(d, "smtp")
				}
				addr := startServer(b, scfg)
				ccfg := clientConfig(c.pool, v.v, cache)
				mustConnect(b, addr, ccfg) // the first session
				before := d.Stats()
				resumed := 0
				b.ResetTimer()
				for b.Loop() {
					if mustConnect(b, addr, ccfg).DidResume {
						resumed++
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
				if st := d.Stats(); st.Failures != before.Failures {
					b.Fatalf("daemon failures during the benchmark: %+v", st)
				}
				if mode != "full" && resumed != b.N {
					b.Fatalf("%d of %d resumed", resumed, b.N)
				}
			})
		}
	}
}
