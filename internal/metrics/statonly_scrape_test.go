package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatOnlyLeftOutOfScrape: a StatOnly metric (text that changes, such
// as a key's name) is in stats replies but never in a scrape, where each
// value would make a new series; the metrics beside it are.
func TestStatOnlyLeftOutOfScrape(t *testing.T) {
	r := New()
	r.Register(func(_ context.Context, emit Emit) {
		emit.Info(Desc{Name: "ticket_key_name", Help: "Name of the current key.", StatOnly: true}, "0123abcd")
		emit.Counter(Desc{Name: "ticket_keys_made", Help: "Keys made."}, 2)
	})
	got := Pairs(r.Gather(context.Background()))
	if len(got) != 2 || got[0] != [2]string{"ticket_key_name", "0123abcd"} {
		t.Errorf("Pairs = %q, want the StatOnly metric first", got)
	}
	srv := httptest.NewServer(Handler(r))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d:\n%s", resp.StatusCode, text)
	}
	if !strings.Contains(text, "tlsmgr_ticket_keys_made_total 2") {
		t.Errorf("scrape lacks the counter:\n%s", text)
	}
	if strings.Contains(text, "ticket_key_name") || strings.Contains(text, "0123abcd") {
		t.Errorf("scrape shows the StatOnly metric")
	}
}
