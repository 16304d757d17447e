package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `#date	2026-12-01
#cpu	Test CPU
#cores	2
#kernel	6.1.0
#go	go1.26.8
#postfix	3.7.11
#command	make bench, i.e. scripts/bench-compare -d 3s -rounds 2
#load	` + "`tlsmgrctl bench -d 3s`" + `
#rounds	2
#duration	3s
#server	postfix	Postfix	Postfix's own tlsmgr
#server	memory	ours memory	ours, memory store
#server	null	IPC limit	tlsmgr-null
#workload	mix	lookup=60,update=20,seed=20
postfix	lookup	1	1	10000	50.0	100.0	200.0	0
memory	lookup	1	1	30000	20.0	40.0	80.0	0
null	lookup	1	1	60000	10.0	20.0	40.0	0
postfix	lookup	1	2	12000	50.0	140.0	200.0	0
memory	lookup	1	2	34000	20.0	60.0	80.0	0
null	lookup	1	2	64000	10.0	20.0	40.0	0
postfix	mix	8	1	5000	50.0	1000.0	2000.0	0
memory	mix	8	1	40000	20.0	200.0	300.0	3
null	mix	8	1	80000	10.0	50.0	90.0	0
`

func write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReport(t *testing.T) {
	in := write(t, "r.tsv", sample)
	dir := t.TempDir()
	md, pngPath := filepath.Join(dir, "2026-12-01.md"), filepath.Join(dir, "2026-12-01.png")
	var stderr bytes.Buffer
	if code := run([]string{"-in", in, "-md", md, "-png", pngPath}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		"# tlsmgr benchmark, 2026-12-01",
		"Machine: Test CPU, 2 cores, Linux 6.1.0, go1.26.8, Postfix 3.7.11.",
		"Command: `make bench, i.e. scripts/bench-compare -d 3s -rounds 2`.",
		"mean of 2 rounds of 3s",
		"![requests/s and p99 per workload](2026-12-01.png)",
		// Means over rounds; ratios to Postfix; fractions of the limit.
		"| lookup, 1 connection | 11000 | 32000 | 62000 | 2.91× | 18% | 52% |",
		"| mix, 8 connections | 5000 | 40000 | 80000 | 8.00× | 6% | 50% |",
		"| lookup, 1 connection | 120 µs | 50 µs | 20 µs | 0.42× |",
		"| mix, 8 connections | 1000 µs | 200 µs | 50 µs | 0.20× |",
		"## lookup, 1 connection",
		"| ours memory | 32000 | 12% | 50 µs | 2.91× | 0.42× | 52% |",
		"| Postfix | 11000 | 18% | 120 µs | 1.00× | 1.00× | 18% |",
		"## mix, 8 connections",
		"Mix `lookup=60,update=20,seed=20`.",
		"| ours memory | 40000 | – | 200 µs | 8.00× | 0.20× | 50% |",
		"ours memory: 3 requests failed.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 900 {
		t.Errorf("chart is %v", b)
	}
}

// TestNoPostfix: without Postfix's column the ratios are left out, with
// a note saying why.
func TestNoPostfix(t *testing.T) {
	var lines []string
	for _, l := range strings.Split(sample, "\n") {
		switch {
		case strings.HasPrefix(l, "postfix\t"), strings.HasPrefix(l, "#server\tpostfix"):
			continue
		case strings.HasPrefix(l, "#postfix"):
			l = "#postfix\tabsent: Postfix is not installed"
		}
		lines = append(lines, l)
	}
	in := write(t, "r.tsv", strings.Join(lines, "\n"))
	md := filepath.Join(t.TempDir(), "r.md")
	var stderr bytes.Buffer
	if code := run([]string{"-in", in, "-md", md}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, _ := os.ReadFile(md)
	text := string(b)
	if strings.Contains(text, "÷ Postfix") || strings.Contains(text, "Postfix 3.7") || strings.Contains(text, "![") {
		t.Errorf("report without Postfix (and without a chart) mentions them:\n%s", text)
	}
	for _, want := range []string{
		"not measured (Postfix is not installed); the ratio columns are left out.",
		"| lookup, 1 connection | 32000 | 62000 | 52% |",
		"| ours memory | 32000 | 12% | 50 µs | 52% |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}

func TestBadInput(t *testing.T) {
	for name, text := range map[string]string{
		"empty":        "",
		"only meta":    "#date\t2026-12-01\n",
		"short line":   "memory\tlookup\t1\t1\t3000\n",
		"bad number":   "memory\tlookup\t1\t1\tfast\t1\t2\t3\t0\n",
		"bad metadata": "#server\tonly-two\n",
	} {
		in := write(t, "r.tsv", text)
		var stderr bytes.Buffer
		if code := run([]string{"-in", in, "-md", filepath.Join(t.TempDir(), "r.md")}, &stderr); code != 1 {
			t.Errorf("%s: exit %d, want 1 (%s)", name, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"-md", "x.md"}, &stderr); code != 2 {
		t.Errorf("no -in: exit %d, want 2", code)
	}
}

func TestLatency(t *testing.T) {
	for v, want := range map[float64]string{
		5.5: "5.5µs", 67: "67µs", 999: "999µs", 1500: "1.5ms", 1000: "1ms", 23456: "23ms", 1.2e6: "1.2s",
	} {
		if got := latency(v); got != want {
			t.Errorf("latency(%v) = %q, want %q", v, got, want)
		}
	}
	if got := ratio(1, 500); got != "0.002×" {
		t.Errorf("ratio(1, 500) = %q", got)
	}
}

// TestDoc: -doc replaces the page's generated block, and only it, with
// the summary tables and links relative to the page (here in docs/, as
// docs/performance.md is); a page without the block is an error and is
// left alone.
func TestDoc(t *testing.T) {
	btree := sample + "#server\tbtree\tours btree\tours, btree store\n" +
		"btree\tlookup\t1\t1\t27000\t20.0\t80.0\t90.0\t0\n" +
		"btree\tlookup\t1\t2\t29000\t20.0\t60.0\t90.0\t0\n" +
		"btree\tmix\t8\t1\t30000\t20.0\t300.0\t400.0\t0\n"
	dir := t.TempDir()
	res := filepath.Join(dir, "bench", "results")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(res, "2026-12-01.tsv")
	if err := os.WriteFile(in, []byte(btree), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "docs", "performance.md")
	before, after := "# Performance\n\n## Method\n\n", "\n\n## Go benchmarks\n"
	write := func(text string) {
		if err := os.WriteFile(doc, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(before + docBegin + "old.tsv -->\nhand-made table\n" + docEnd + after)
	args := []string{"-in", in, "-md", filepath.Join(res, "2026-12-01.md"), "-png", filepath.Join(res, "2026-12-01.png"), "-doc", doc}
	var stderr bytes.Buffer
	for range 2 { // a second run finds its own block
		if code := run(args, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	}
	b, _ := os.ReadFile(doc)
	text := string(b)
	if !strings.HasPrefix(text, before+docBegin+"../bench/results/2026-12-01.tsv -->\n") || !strings.HasSuffix(text, docEnd+after) {
		t.Errorf("block not in place of the old one:\n%s", text)
	}
	for _, want := range []string{
		"Latest, [../bench/results/2026-12-01.md](../bench/results/2026-12-01.md): Test CPU, 2 cores",
		"2 rounds of 3s",
		"| workload | Postfix req/s | ours memory req/s | IPC limit req/s | ours btree req/s | ours memory ÷ Postfix | ours btree ÷ Postfix | ours btree ÷ memory |",
		"| lookup, 1 connection | 11000 | 32000 | 62000 | 28000 | 2.91× | 2.55× | 0.88× |",
		"| mix, 8 connections | 1000 µs | 200 µs | 50 µs | 300 µs | 0.20× | 0.30× | 1.50× |",
		"![requests/s and p99 per workload, with the IPC limit](../bench/results/2026-12-01.png)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the page lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "hand-made") {
		t.Errorf("old block kept:\n%s", text)
	}

	write("# no block\n")
	stderr.Reset()
	if code := run(args, &stderr); code != 1 || !strings.Contains(stderr.String(), "bench-compare: begin") {
		t.Errorf("page without the block: exit %d, %s", code, stderr.String())
	}
	if b, _ := os.ReadFile(doc); string(b) != "# no block\n" {
		t.Errorf("page without the block changed: %q", b)
	}
}

// TestDocIsGenerated: the repository's docs/performance.md holds exactly
// what benchreport makes of the results its block names, so that its
// performance tables are never hand copies.
func TestDocIsGenerated(t *testing.T) {
	const page = "../../docs/performance.md"
	dir := filepath.Dir(page)
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, docBegin)
	j := strings.Index(text, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no generated block (%q ... %q)", page, docBegin, docEnd)
	}
	block := text[i : j+len(docEnd)]
	in := strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(block, docBegin), "\n", 2)[0], " -->")
	f, err := os.Open(filepath.Join(dir, in))
	if err != nil {
		t.Fatalf("the block's results: %v", err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatalf("%s: %v", in, err)
	}
	stem := strings.TrimSuffix(in, ".tsv")
	for _, p := range []string{stem + ".md", stem + ".png"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("the block links to %s: %v", p, err)
		}
	}
	if want := res.docBlock(in, stem+".md", stem+".png"); block != want {
		t.Errorf("%s's block is not what %s makes; rerun scripts/bench-compare or benchreport -doc.\ngot:\n%s\nwant:\n%s", page, in, block, want)
	}
}
