package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWithPutsLabelsFirst: labels added by With come before the sample's
// own, both in the stats name ("smtpd_lookup_store_calls") and in the
// Prometheus series, and each sample gets its own copy of them.
func TestWithPutsLabelsFirst(t *testing.T) {
	r := New()
	r.Register(func(_ context.Context, emit Emit) {
		emit = emit.With(Label{"cache", "smtpd"})
		for _, op := range []string{"lookup", "update"} {
			emit.Counter(Desc{Name: "store_calls", Help: "Store calls.", Labels: []Label{{"op", op}}}, 1)
		}
	})
	samples := r.Gather(context.Background())
	got := Pairs(samples)
	want := [][2]string{{"smtpd_lookup_store_calls", "1"}, {"smtpd_update_store_calls", "1"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Pairs = %q, want %q", got, want)
	}
	for i, op := range []string{"lookup", "update"} {
		if l := samples[i].Labels; len(l) != 2 || l[0] != (Label{"cache", "smtpd"}) || l[1] != (Label{"op", op}) {
			t.Errorf("sample %d labels %v, want cache=smtpd then op=%s", i, l, op)
		}
	}

	srv := httptest.NewServer(Handler(r))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`tlsmgr_store_calls_total{cache="smtpd",op="lookup"} 1`,
		`tlsmgr_store_calls_total{cache="smtpd",op="update"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
