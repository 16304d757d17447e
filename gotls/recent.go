package gotls

import "sync"

// recentLen bounds what the adapters remember per process about recent
// sessions.
const recentLen = 1024

// recent is a map of at most recentLen entries, safe for concurrent use:
// when it is full, a random entry makes room. Values that leave it other
// than by take are given to wipe (their secrets), if it is set.
type recent[K comparable, V any] struct {
	mu   sync.Mutex
	m    map[K]V
	wipe func(V)
}

func (r *recent[K, V]) put(k K, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[K]V)
	}
	old, ok := r.m[k]
	if !ok && len(r.m) >= recentLen {
		for k2, v2 := range r.m { // map order: a random entry
			old, ok = v2, true
			delete(r.m, k2)
			break
		}
	}
	if ok && r.wipe != nil {
		r.wipe(old)
	}
	r.m[k] = v
}

// take returns and forgets the value of k.
func (r *recent[K, V]) take(k K) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[k]
	delete(r.m, k)
	return v, ok
}

// forget drops the value of k.
func (r *recent[K, V]) forget(k K) {
	if v, ok := r.take(k); ok && r.wipe != nil {
		r.wipe(v)
	}
}

// holds reports whether k has a value for which f is true; f runs with
// the map locked, so the value is not wiped under it.
func (r *recent[K, V]) holds(k K, f func(V) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[k]
	return ok && f(v)
}
