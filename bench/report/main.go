// Command benchreport turns the results of scripts/bench-compare (a TSV
// file: "#"-lines of metadata, then one line per run) into a Markdown
// report and a PNG chart, and rewrites the performance tables of the
// documentation (docs/performance.md) from them.
//
//	go run ./bench/report -in RESULTS.tsv -md REPORT.md -png CHART.png [-doc docs/performance.md]
//
// With -doc, the text between the page's lines "<!-- bench-compare:
// begin ... -->" and "<!-- bench-compare: end -->" is replaced by the
// summary tables, with links to the report and the chart relative to the
// page; the begin line names the results it came from, so that a test can
// tell a hand edit.
//
// Metadata lines are "#KEY<TAB>VALUE...": date, cpu, cores, kernel, go,
// postfix (its version, or "absent: why"), command, load, rounds,
// duration, placement, elapsed; "#server NAME SHORT DESCRIPTION" for each
// server and "#workload NAME MIX" for each workload. Run lines are
// "SERVER WORKLOAD CONNS ROUND REQ/S P50 P99 P999 ERRORS", latencies in
// microseconds, as tlsmgrctl bench -tsv prints them after the first four.
// The server named "postfix" is the baseline of the ratios and the one
// named "null" the IPC limit.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gotlsmgr/tlsmgr/internal/benchchart"
)

const (
	baseline    = "postfix"
	limit       = "null"
	memoryStore = "memory"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "results (TSV) to read")
	mdOut := fs.String("md", "", "Markdown report to write")
	pngOut := fs.String("png", "", "PNG chart to write")
	doc := fs.String("doc", "", "Markdown page whose performance tables to rewrite, e.g. docs/performance.md (needs -md)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *in == "" || (*mdOut == "" && *pngOut == "") || (*doc != "" && *mdOut == "") || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: benchreport -in RESULTS.tsv [-md REPORT.md] [-png CHART.png] [-doc docs/performance.md]")
		return 2
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %v\n", err)
		return 1
	}
	res, err := parse(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "benchreport: %s: %v\n", *in, err)
		return 1
	}
	if *pngOut != "" {
		var buf bytes.Buffer
		if err := res.chart().WritePNG(&buf); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
		if err := os.WriteFile(*pngOut, buf.Bytes(), 0o644); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
	}
	if *mdOut != "" {
		image := ""
		if *pngOut != "" {
			image, _ = filepath.Rel(filepath.Dir(*mdOut), *pngOut)
		}
		if err := os.WriteFile(*mdOut, []byte(res.markdown(image)), 0o644); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
	}
	if *doc != "" {
		if err := rewriteDoc(*doc, res, *in, *mdOut, *pngOut); err != nil {
			fmt.Fprintf(stderr, "benchreport: %v\n", err)
			return 1
		}
	}
	return 0
}

// The markers of the generated block in the documentation page.
const (
	docBegin = "<!-- bench-compare: begin "
	docEnd   = "<!-- bench-compare: end -->"
)

// rewriteDoc replaces the generated block of the Markdown page at path.
func rewriteDoc(path string, res *results, in, md, png string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rel := func(p string) string {
		if p == "" {
			return ""
		}
		if r, err := filepath.Rel(filepath.Dir(path), p); err == nil {
			return filepath.ToSlash(r)
		}
		return p
	}
	out, err := replaceBlock(string(text), res.docBlock(rel(in), rel(md), rel(png)))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// replaceBlock puts block in place of the generated block of text.
func replaceBlock(text, block string) (string, error) {
	i := strings.Index(text, docBegin)
	j := strings.Index(text, docEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %q ... %q block", docBegin+"-->", docEnd)
	}
	return text[:i] + block + text[j+len(docEnd):], nil
}

// docBlock is the page's generated block, from the results in, with
// links to the report md and the chart png (paths relative to the page).
func (r *results) docBlock(in, md, png string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s -->\n", docBegin, in)
	m := r.meta
	fmt.Fprintf(&b, "Latest, [%s](%s): %s", md, md, r.machine())
	if m["machine_note"] != "" {
		fmt.Fprintf(&b, " (%s)", m["machine_note"])
	}
	fmt.Fprintf(&b, "; %s of %s", rounds(m["rounds"]), orDefault(m["duration"], "?"))
	if m["elapsed"] != "" {
		fmt.Fprintf(&b, ", %s in all", m["elapsed"])
	}
	if m["command"] != "" {
		fmt.Fprintf(&b, "; `%s`", m["command"])
	}
	b.WriteString(". Generated from the run by `scripts/bench-compare`; do not edit.\n\n")
	b.WriteString(r.summary())
	if png != "" {
		fmt.Fprintf(&b, "\n![requests/s and p99 per workload, with the IPC limit](%s)\n", png)
	}
	b.WriteString(docEnd)
	return b.String()
}

type server struct{ name, short, desc string }

type workload struct {
	name, mix string
	conns     int
}

func (w workload) title() string {
	conn := "connections"
	if w.conns == 1 {
		conn = "connection"
	}
	return fmt.Sprintf("%s, %d %s", w.name, w.conns, conn)
}

type run1 struct{ rps, p99 float64 }

// cell is one server under one workload, over its rounds.
type cell struct {
	runs   []run1
	errors int
}

func (c *cell) rps() float64 { return mean(c.runs, func(r run1) float64 { return r.rps }) }
func (c *cell) p99() float64 { return mean(c.runs, func(r run1) float64 { return r.p99 }) }

// spread is (max-min)/mean of the rounds' req/s.
func (c *cell) spread() float64 {
	if len(c.runs) < 2 {
		return math.NaN()
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range c.runs {
		lo, hi = min(lo, r.rps), max(hi, r.rps)
	}
	return (hi - lo) / c.rps()
}

func mean(runs []run1, f func(run1) float64) float64 {
	if len(runs) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, r := range runs {
		s += f(r)
	}
	return s / float64(len(runs))
}

type results struct {
	meta      map[string]string
	servers   []server
	workloads []workload
	cells     map[string]map[int]*cell // server + "\x00" + workload name -> conns
	mixes     map[string]string
}

func (r *results) cell(srv string, w workload) *cell {
	return r.cells[srv+"\x00"+w.name][w.conns]
}

func (r *results) has(srv string) bool {
	for _, s := range r.servers {
		if s.name == srv {
			return true
		}
	}
	return false
}

func parse(in io.Reader) (*results, error) {
	r := &results{meta: map[string]string{}, cells: map[string]map[int]*cell{}, mixes: map[string]string{}}
	sc := bufio.NewScanner(in)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		f := strings.Split(text, "\t")
		if strings.HasPrefix(f[0], "#") {
			key := strings.TrimPrefix(f[0], "#")
			switch {
			case key == "server" && len(f) == 4:
				r.servers = append(r.servers, server{f[1], f[2], f[3]})
			case key == "workload" && len(f) == 3:
				r.mixes[f[1]] = f[2]
			case len(f) == 2:
				r.meta[key] = f[1]
			default:
				return nil, fmt.Errorf("line %d: bad metadata %q", line, text)
			}
			continue
		}
		if len(f) != 9 {
			return nil, fmt.Errorf("line %d: %d fields, want 9", line, len(f))
		}
		conns, err1 := strconv.Atoi(f[2])
		rps, err2 := strconv.ParseFloat(f[4], 64)
		p99, err3 := strconv.ParseFloat(f[6], 64)
		nerr, err4 := strconv.Atoi(f[8])
		if err := errors.Join(err1, err2, err3, err4); err != nil || conns < 1 {
			return nil, fmt.Errorf("line %d: %q: %v", line, text, err)
		}
		srv, w := f[0], workload{name: f[1], conns: conns}
		if !r.has(srv) {
			r.servers = append(r.servers, server{srv, srv, srv})
		}
		key := srv + "\x00" + w.name
		if r.cells[key] == nil {
			r.cells[key] = map[int]*cell{}
		}
		c := r.cells[key][conns]
		if c == nil {
			c = &cell{}
			r.cells[key][conns] = c
			known := false
			for _, x := range r.workloads {
				known = known || x.name == w.name && x.conns == conns
			}
			if !known {
				w.mix = r.mixes[w.name]
				r.workloads = append(r.workloads, w)
			}
		}
		c.runs = append(c.runs, run1{rps, p99})
		c.errors += nerr
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(r.workloads) == 0 {
		return nil, errors.New("no results")
	}
	// Servers declared but never run (a failed start) are left out.
	kept := r.servers[:0]
	for _, s := range r.servers {
		for k := range r.cells {
			if strings.HasPrefix(k, s.name+"\x00") {
				kept = append(kept, s)
				break
			}
		}
	}
	r.servers = kept
	return r, nil
}

// measured are the servers compared: all but the limit.
func (r *results) measured() []server {
	var out []server
	for _, s := range r.servers {
		if s.name != limit {
			out = append(out, s)
		}
	}
	return out
}

func (r *results) short(name string) string {
	for _, s := range r.servers {
		if s.name == name {
			return s.short
		}
	}
	return name
}

// ratio writes a/b with two decimals, or two significant digits below 0.1.
func ratio(a, b float64) string {
	if !(a > 0) || !(b > 0) {
		return "–"
	}
	if r := a / b; r < 0.1 {
		return strconv.FormatFloat(r, 'g', 2, 64) + "×"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func percent(a, b float64) string {
	if !(a > 0) || !(b > 0) {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func num(v float64) string {
	if !(v >= 0) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func us(v float64) string {
	if !(v >= 0) {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", v)
}

func (r *results) machine() string {
	m := r.meta
	var parts []string
	if m["cpu"] != "" {
		parts = append(parts, m["cpu"])
	}
	if m["cores"] != "" {
		parts = append(parts, m["cores"]+" cores")
	}
	if m["kernel"] != "" {
		parts = append(parts, "Linux "+m["kernel"])
	}
	if m["go"] != "" {
		parts = append(parts, m["go"])
	}
	if p := m["postfix"]; p != "" && !strings.HasPrefix(p, "absent") {
		parts = append(parts, "Postfix "+p)
	}
	return strings.Join(parts, ", ")
}

func (r *results) markdown(image string) string {
	var b strings.Builder
	m := r.meta
	hasBase, hasLimit := r.has(baseline), r.has(limit)
	fmt.Fprintf(&b, "# tlsmgr benchmark, %s\n\n", m["date"])
	fmt.Fprintf(&b, "Machine: %s", r.machine())
	if m["machine_note"] != "" {
		fmt.Fprintf(&b, " (%s)", m["machine_note"])
	}
	b.WriteString(".\n\n")
	if m["command"] != "" {
		fmt.Fprintf(&b, "Command: `%s`", m["command"])
		if m["elapsed"] != "" {
			fmt.Fprintf(&b, ", %s in all", m["elapsed"])
		}
		b.WriteString(".\n\n")
	}
	if m["load"] != "" {
		fmt.Fprintf(&b, "Every server gets the same load, %s (clients that wait for each reply with a blocking read, as Postfix's smtpd and smtp do; %s). ", m["load"], orDefault(m["placement"], "every process may run on every core"))
	}
	fmt.Fprintf(&b, "Each figure is the mean of %s of %s; the rounds alternate the servers, in a rotating order, so that background noise hits all of them. "+
		"Spread is (max − min) / mean of the rounds' requests/s.", rounds(m["rounds"]), orDefault(m["duration"], "?"))
	if hasBase {
		b.WriteString(" ÷ Postfix: requests/s ratio (higher is better) and p99 ratio (lower is better) to Postfix's tlsmgr.")
	}
	if hasLimit {
		b.WriteString(" Of limit: requests/s as a fraction of the do-nothing server's, the IPC limit of this machine, which no server can beat.")
	}
	b.WriteString("\n\nServers:\n\n")
	for _, s := range r.servers {
		fmt.Fprintf(&b, "* **%s**: %s\n", s.short, s.desc)
	}
	if p := m["postfix"]; !hasBase {
		fmt.Fprintf(&b, "* Postfix's tlsmgr: not measured (%s); the ratio columns are left out.\n", orDefault(strings.TrimPrefix(p, "absent: "), "absent"))
	}
	b.WriteString("\n")
	if image != "" {
		fmt.Fprintf(&b, "![requests/s and p99 per workload](%s)\n\n", image)
	}

	b.WriteString("## Summary\n\n")
	b.WriteString(r.summary())

	for _, w := range r.workloads {
		fmt.Fprintf(&b, "\n## %s\n\n", w.title())
		if w.mix != "" {
			fmt.Fprintf(&b, "Mix `%s`.\n\n", w.mix)
		}
		b.WriteString("| server | req/s | spread | p99 |")
		sep := "|---|---:|---:|---:|"
		if hasBase {
			b.WriteString(" req/s ÷ Postfix | p99 ÷ Postfix |")
			sep += "---:|---:|"
		}
		if hasLimit {
			b.WriteString(" of limit |")
			sep += "---:|"
		}
		b.WriteString("\n" + sep + "\n")
		var base, lim *cell
		if hasBase {
			base = r.cell(baseline, w)
		}
		if hasLimit {
			lim = r.cell(limit, w)
		}
		for _, s := range r.servers {
			c := r.cell(s.name, w)
			if c == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |", s.short, num(c.rps()), percent(c.spread(), 1), us(c.p99()))
			if hasBase {
				fmt.Fprintf(&b, " %s | %s |", ratio(c.rps(), rps(base)), ratio(c.p99(), p99(base)))
			}
			if hasLimit {
				fmt.Fprintf(&b, " %s |", percent(c.rps(), rps(lim)))
			}
			b.WriteString("\n")
		}
		for _, s := range r.servers {
			if c := r.cell(s.name, w); c != nil && c.errors > 0 {
				fmt.Fprintf(&b, "\n%s: %d requests failed.\n", s.short, c.errors)
			}
		}
	}
	return b.String()
}

func rps(c *cell) float64 {
	if c == nil {
		return math.NaN()
	}
	return c.rps()
}

func p99(c *cell) float64 {
	if c == nil {
		return math.NaN()
	}
	return c.p99()
}

// summary is one table of requests/s and one of p99 over all workloads,
// a column per server and, for ours, the ratio to Postfix, the other
// stores' ratio to the memory store, and the fraction of the limit.
func (r *results) summary() string {
	var b strings.Builder
	hasBase, hasLimit := r.has(baseline), r.has(limit)
	var ours []server
	for _, s := range r.servers {
		if s.name != baseline && s.name != limit {
			ours = append(ours, s)
		}
	}
	var perSecond, latency []column
	for _, s := range r.servers {
		perSecond = append(perSecond, column{s.short + " req/s", func(w workload) string { return num(rps(r.cell(s.name, w))) }})
		latency = append(latency, column{s.short + " p99", func(w workload) string { return us(p99(r.cell(s.name, w))) }})
	}
	if hasBase {
		for _, s := range ours {
			perSecond = append(perSecond, column{s.short + " ÷ Postfix", func(w workload) string {
				return ratio(rps(r.cell(s.name, w)), rps(r.cell(baseline, w)))
			}})
			latency = append(latency, column{s.short + " ÷ Postfix", func(w workload) string {
				return ratio(p99(r.cell(s.name, w)), p99(r.cell(baseline, w)))
			}})
		}
	}
	// The other stores against the memory store, what they are measured by.
	if r.has(memoryStore) {
		for _, s := range ours {
			if s.name == memoryStore {
				continue
			}
			perSecond = append(perSecond, column{s.short + " ÷ memory", func(w workload) string {
				return ratio(rps(r.cell(s.name, w)), rps(r.cell(memoryStore, w)))
			}})
			latency = append(latency, column{s.short + " ÷ memory", func(w workload) string {
				return ratio(p99(r.cell(s.name, w)), p99(r.cell(memoryStore, w)))
			}})
		}
	}
	if hasLimit {
		for _, s := range r.measured() {
			perSecond = append(perSecond, column{s.short + " of limit", func(w workload) string {
				return percent(rps(r.cell(s.name, w)), rps(r.cell(limit, w)))
			}})
		}
	}
	r.table(&b, perSecond)
	b.WriteString("\n")
	r.table(&b, latency)
	return b.String()
}

// column is one column of a summary table: its heading and its cell for
// each workload.
type column struct {
	head string
	cell func(workload) string
}

// table writes a Markdown table: a row per workload, a column each.
func (r *results) table(b *strings.Builder, cols []column) {
	b.WriteString("| workload |")
	sep := "|---|"
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c.head)
		sep += "---:|"
	}
	b.WriteString("\n" + sep + "\n")
	for _, w := range r.workloads {
		fmt.Fprintf(b, "| %s |", w.title())
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", c.cell(w))
		}
		b.WriteString("\n")
	}
}

func rounds(n string) string {
	switch n {
	case "":
		return "? rounds"
	case "1":
		return "1 round"
	}
	return n + " rounds"
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Colours by server; others take the palette in turn.
var (
	colours = map[string]color.RGBA{
		baseline: {150, 150, 150, 255},
		"memory": {31, 119, 180, 255},
		"btree":  {44, 160, 44, 255},
		"redis":  {255, 127, 14, 255},
	}
	palette = []color.RGBA{{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {23, 190, 207, 255}}
)

func (r *results) chart() *benchchart.Chart {
	measured := r.measured()
	c := &benchchart.Chart{
		Title:     "tlsmgr benchmark, " + r.meta["date"],
		Subtitle:  r.subtitle(),
		LimitName: "IPC limit (tlsmgr-null)",
	}
	if !r.has(limit) {
		c.LimitName = ""
	}
	next := 0
	for _, s := range measured {
		col, ok := colours[s.name]
		if !ok {
			col = palette[next%len(palette)]
			next++
		}
		c.Series = append(c.Series, benchchart.Series{Name: s.short, Color: col})
	}
	var thr, lat []benchchart.Group
	for _, w := range r.workloads {
		label := fmt.Sprintf("%s, c=%d", w.name, w.conns)
		tg := benchchart.Group{Label: label, Limit: rps(r.cell(limit, w))}
		lg := benchchart.Group{Label: label, Limit: p99(r.cell(limit, w))}
		for _, s := range measured {
			tg.Values = append(tg.Values, rps(r.cell(s.name, w)))
			lg.Values = append(lg.Values, p99(r.cell(s.name, w)))
		}
		thr, lat = append(thr, tg), append(lat, lg)
	}
	c.Panels = []benchchart.Panel{
		{Title: "requests/s (higher is better)", Groups: thr},
		{Title: "p99 latency (lower is better; log scale)", Groups: lat, Log: true, Format: latency},
	}
	return c
}

// latency writes microseconds as 67µs, 1.5ms, 235ms, 1.2s.
func latency(v float64) string {
	trim := func(s string) string {
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s
	}
	switch {
	case v >= 1e6:
		return trim(strconv.FormatFloat(v/1e6, 'f', 1, 64)) + "s"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "ms"
	case v >= 1e3:
		return trim(strconv.FormatFloat(v/1e3, 'f', 1, 64)) + "ms"
	case v >= 10 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64) + "µs"
	}
	return trim(strconv.FormatFloat(v, 'f', 1, 64)) + "µs"
}

func (r *results) subtitle() string {
	parts := []string{r.machine()}
	if r.meta["rounds"] != "" && r.meta["duration"] != "" {
		parts = append(parts, fmt.Sprintf("mean of %s of %s each", rounds(r.meta["rounds"]), r.meta["duration"]))
	}
	return strings.ReplaceAll(strings.Join(parts, "\n"), "(R)", "")
}
