package benchchart

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"testing"
)

var (
	gray  = color.RGBA{150, 150, 150, 255}
	blue  = color.RGBA{31, 119, 180, 255}
	green = color.RGBA{44, 160, 44, 255}
)

// known is a fixed data set: three servers, the middle one missing from
// the last group, a limit above every bar.
func known() *Chart {
	return &Chart{
		Title:     "test chart",
		Subtitle:  "2 cores, µs and × glyphs",
		Series:    []Series{{"postfix", gray}, {"memory", blue}, {"btree", green}},
		LimitName: "IPC limit",
		Width:     1000,
		Height:    800,
		Panels: []Panel{
			{Title: "requests/s", Groups: []Group{
				{Label: "lookup c=1", Values: []float64{10000, 40000, 20000}, Limit: 50000},
				{Label: "update c=1", Values: []float64{5000, 30000, 25000}, Limit: 45000},
				{Label: "mix\nc=8", Values: []float64{12000, math.NaN(), 30000}, Limit: 60000},
			}},
			{Title: "p99 (µs)", Log: true, Groups: []Group{
				{Label: "lookup c=1", Values: []float64{120, 12, 95}, Limit: 40},
				{Label: "update c=1", Values: []float64{1200, 85, 190}},
				{Label: "mix\nc=8", Values: []float64{800, 0, 350}, Limit: 60},
			}},
		},
	}
}

func at(img *image.RGBA, x, y int) color.RGBA { return img.RGBAAt(x, y) }

func TestRenderKnown(t *testing.T) {
	c := known()
	img, lay, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1000 || b.Dy() != 800 {
		t.Fatalf("image is %v, want 1000×800", b)
	}
	if len(lay.Panels) != 2 {
		t.Fatalf("%d panels laid out, want 2", len(lay.Panels))
	}
	for pi, pl := range lay.Panels {
		p := c.Panels[pi]
		if !pl.Plot.In(img.Bounds()) || pl.Plot.Dx() < 500 || pl.Plot.Dy() < 150 {
			t.Fatalf("panel %d: plot area %v", pi, pl.Plot)
		}
		if pi > 0 && pl.Plot.Min.Y <= lay.Panels[pi-1].Plot.Max.Y {
			t.Errorf("panel %d overlaps panel %d", pi, pi-1)
		}
		maxV := 0.0
		for gi, g := range p.Groups {
			for si, v := range g.Values {
				r := pl.Bars[gi][si]
				if !(v > 0) {
					if !r.Empty() {
						t.Errorf("panel %d group %d series %d: value %v has bar %v", pi, gi, si, v, r)
					}
					continue
				}
				maxV = max(maxV, v)
				// Where the bar should be, from the value alone.
				wantTop := wantY(pl, v)
				if r.Max.Y != pl.Plot.Max.Y || abs(r.Min.Y-wantTop) > 1 {
					t.Errorf("panel %d group %d series %d: bar %v, want rows %d..%d", pi, gi, si, r, wantTop, pl.Plot.Max.Y)
				}
				// Bars sit side by side in their group's slot, in series order.
				slot := pl.Plot.Dx() / len(p.Groups)
				if r.Min.X < pl.Plot.Min.X+gi*slot || r.Max.X > pl.Plot.Min.X+(gi+1)*slot {
					t.Errorf("panel %d group %d series %d: bar %v outside its group's slot", pi, gi, si, r)
				}
				if si > 0 && !pl.Bars[gi][si-1].Empty() && pl.Bars[gi][si-1].Max.X > r.Min.X {
					t.Errorf("panel %d group %d: bars %d and %d overlap", pi, gi, si-1, si)
				}
				// The pixels: the series colour over the bar, from its top
				// row to its bottom row, and not just above it.
				cx := (r.Min.X + r.Max.X) / 2
				for _, y := range []int{r.Min.Y, (r.Min.Y + r.Max.Y) / 2, r.Max.Y - 1} {
					if lim := pl.Limits[gi]; y >= lim.Min.Y-1 && y <= lim.Max.Y {
						continue // the limit line is drawn over bars that reach it
					}
					if got := at(img, cx, y); got != c.Series[si].Color {
						t.Errorf("panel %d group %d series %d: pixel (%d,%d) is %v, want %v", pi, gi, si, cx, y, got, c.Series[si].Color)
					}
				}
				if got := at(img, r.Min.X+1, r.Min.Y-2); got == c.Series[si].Color && (g.Limit <= 0 || !pl.Limits[gi].Inset(-2).Overlaps(r)) {
					t.Errorf("panel %d group %d series %d: colour above the bar's top", pi, gi, si)
				}
				// The base line is drawn under every bar.
				if got := at(img, cx, pl.Plot.Max.Y); got != Ink {
					t.Errorf("panel %d group %d: base line missing under bar %d", pi, gi, si)
				}
			}
			// Bars of a missing value leave the background (or grid).
			if pi == 0 && gi == 2 {
				left, right := pl.Bars[gi][0], pl.Bars[gi][2]
				x := (left.Max.X + right.Min.X) / 2
				y := pl.Plot.Max.Y - 5
				if got := at(img, x, y); got != Background && got != Grid {
					t.Errorf("missing bar's slot (%d,%d) is %v, want background", x, y, got)
				}
			}
			// The limit's value is written under the group's label.
			slot := pl.Plot.Dx() / len(p.Groups)
			under := image.Rect(pl.Plot.Min.X+gi*slot, pl.Plot.Max.Y+2, pl.Plot.Min.X+(gi+1)*slot, pl.Plot.Max.Y+70)
			if hasColour(img, under, DefaultRed) != (g.Limit > 0) {
				t.Errorf("panel %d group %d: limit %v, red text under the label: %v", pi, gi, g.Limit, !(g.Limit > 0))
			}
			// The limit line.
			lim := pl.Limits[gi]
			if !(g.Limit > 0) {
				if !lim.Empty() {
					t.Errorf("panel %d group %d: limit line %v without a limit", pi, gi, lim)
				}
				continue
			}
			wantY := wantY(pl, g.Limit)
			if lim.Dy() != 3 || lim.Min.Y > wantY || lim.Max.Y <= wantY {
				t.Errorf("panel %d group %d: limit line %v, want 3 rows around %d", pi, gi, lim, wantY)
			}
			first, last := pl.Bars[gi][0], pl.Bars[gi][2]
			if lim.Min.X > first.Min.X || lim.Max.X < last.Max.X {
				t.Errorf("panel %d group %d: limit line %v does not span the bars %v..%v", pi, gi, lim, first, last)
			}
			for _, x := range []int{lim.Min.X, (lim.Min.X + lim.Max.X) / 2, lim.Max.X - 1} {
				if got := at(img, x, wantY); got != DefaultRed {
					t.Errorf("panel %d group %d: limit pixel (%d,%d) is %v, want red", pi, gi, x, wantY, got)
				}
			}
			// It is a line per group, not across the panel.
			if gi+1 < len(p.Groups) {
				x := pl.Plot.Min.X + (gi+1)*(pl.Plot.Dx()/len(p.Groups))
				if got := at(img, x, wantY); got == DefaultRed {
					t.Errorf("panel %d: limit line of group %d runs into the next group", pi, gi)
				}
			}
			maxV = max(maxV, g.Limit)
		}
		switch {
		case pl.Log != p.Log:
			t.Errorf("panel %d: Log %v, want %v", pi, pl.Log, p.Log)
		case !p.Log && (pl.Min != 0 || pl.Max < maxV || pl.Max > 2*maxV):
			t.Errorf("panel %d: axis %v..%v for values up to %v", pi, pl.Min, pl.Max, maxV)
		case p.Log && (pl.Min != 10 || pl.Max != 10000):
			t.Errorf("panel %d: log axis %v..%v, want 10..10000 for values 12..1200", pi, pl.Min, pl.Max)
		}
	}
	// On the log axis a factor of ten is the same height anywhere:
	// 12 -> 120 as 120 -> 1200.
	lp := lay.Panels[1]
	d1 := lp.Bars[0][0].Dy() - lp.Bars[0][1].Dy()
	d2 := lp.Bars[1][0].Dy() - lp.Bars[0][0].Dy()
	if d1 <= 0 || abs(d1-d2) > 2 || abs(d1-lp.Plot.Dy()/3) > 2 {
		t.Errorf("log axis: 12->120 is %d pixels, 120->1200 %d, want both a third of %d", d1, d2, lp.Plot.Dy())
	}
	// Relative heights follow the values: 40000 is twice 20000.
	pl := lay.Panels[0]
	h1, h2 := pl.Bars[0][1].Dy(), pl.Bars[0][2].Dy()
	if abs(h1-2*h2) > 2 {
		t.Errorf("bars of 40000 and 20000 are %d and %d pixels tall", h1, h2)
	}
	// Text was drawn: the title's first glyph ('t') has ink.
	if !hasColour(img, image.Rect(margin, margin, margin+5*titleScale, margin+8*titleScale), Ink) {
		t.Error("no ink where the title starts")
	}
	// The legend shows each series' colour.
	for _, s := range c.Series {
		if !hasColour(img, image.Rect(0, 0, img.Bounds().Dx(), lay.Panels[0].Plot.Min.Y-TextHeight(textScale)), s.Color) {
			t.Errorf("legend lacks %s's colour", s.Name)
		}
	}
	var buf bytes.Buffer
	if err := c.WritePNG(&buf); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("BENCHCHART_OUT"); out != "" {
		os.WriteFile(out, buf.Bytes(), 0o644) // to look at it
	}
	dec, err := png.Decode(&buf)
	if err != nil || dec.Bounds() != img.Bounds() {
		t.Fatalf("PNG decodes to %v, %v", dec.Bounds(), err)
	}
}

// wantY computes the row of v on its own, from the axis range.
func wantY(pl PanelLayout, v float64) int {
	f := v / pl.Max
	if pl.Log {
		f = (math.Log10(v) - math.Log10(pl.Min)) / (math.Log10(pl.Max) - math.Log10(pl.Min))
	}
	return pl.Plot.Max.Y - int(math.Round(f*float64(pl.Plot.Dy())))
}

func hasColour(img *image.RGBA, r image.Rectangle, c color.RGBA) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if img.RGBAAt(x, y) == c {
				return true
			}
		}
	}
	return false
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func TestDefaultsAndErrors(t *testing.T) {
	c := known()
	c.Width, c.Height = 0, 0
	img, _, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 900 {
		t.Errorf("default size %v, want 1200×900", b)
	}
	for name, bad := range map[string]*Chart{
		"no panels":     {Series: c.Series},
		"no series":     {Panels: c.Panels},
		"no groups":     {Series: c.Series, Panels: []Panel{{Title: "x"}}},
		"short values":  {Series: c.Series, Panels: []Panel{{Groups: []Group{{Values: []float64{1}}}}}},
		"too small":     {Series: c.Series, Panels: c.Panels, Width: 100, Height: 100},
		"too many bars": {Series: c.Series[:1], Panels: c.Panels},
	} {
		if _, _, err := bad.Render(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct{ v, step, top float64 }{
		{54000, 20000, 60000},
		{100, 20, 100},
		{101, 50, 150},
		{9, 2, 10},
		{0, 1, 1},
	} {
		step, top := ticks(tc.v)
		if step != tc.step || top != tc.top {
			t.Errorf("ticks(%v) = %v, %v; want %v, %v", tc.v, step, top, tc.step, tc.top)
		}
	}
}

func TestCompact(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 5: "5", 2.5: "2.5", 90: "90", 999: "999", 1000: "1k", 41709: "41.7k",
		20000: "20k", 120000: "120k", 1.5e6: "1.5M", 2e6: "2M",
	} {
		if got := Compact(v); got != want {
			t.Errorf("Compact(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestText(t *testing.T) {
	if w := TextWidth("ab", 2); w != 22 {
		t.Errorf("TextWidth(ab, 2) = %d, want 22", w)
	}
	if w := TextWidth("", 2); w != 0 {
		t.Errorf("TextWidth of nothing = %d", w)
	}
	img := image.NewRGBA(image.Rect(0, 0, 40, 20))
	DrawText(img, 1, 1, "I|", 2, Ink)
	// 'I' has its stem in column 2: scaled, x 1+4..1+6, rows 1+2..1+12.
	if img.RGBAAt(6, 7) != Ink || img.RGBAAt(1, 7) == Ink {
		t.Error("'I' not drawn where expected")
	}
	// '|' starts 12 pixels on; its stem is column 2 too.
	if img.RGBAAt(6+12, 3) != Ink {
		t.Error("second glyph not drawn where expected")
	}
	// Every glyph has 8 rows of 5; an unknown rune is a box.
	if g := glyphFor('€'); g != glyphs[-1] {
		t.Error("unknown rune is not the box")
	}
	for r, g := range glyphs {
		if r != ' ' && g == (glyph{}) {
			t.Errorf("glyph %q is empty", r)
		}
	}
}
