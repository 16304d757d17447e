// Package benchchart draws benchmark results as grouped bar charts in PNG,
// with the standard library alone (image, image/png and a tiny bitmap
// font of its own): one panel per measure (requests/s, p99 latency), a
// group of bars per workload, a bar per server, and a limit (the IPC
// ceiling of the machine) drawn as a line across each group, its value
// written under the group's label.
package benchchart

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"
	"strings"
)

// Series is one bar in every group: a server.
type Series struct {
	Name  string
	Color color.RGBA
}

// Group is one workload: a value per series (NaN, or not above zero: no
// bar) and the limit there (NaN or not above zero: none). Label may hold
// "\n" for a second line.
type Group struct {
	Label  string
	Values []float64
	Limit  float64
}

// Panel is one measure over all groups.
type Panel struct {
	Title string
	// Format writes tick and value labels; nil means Compact.
	Format func(float64) string
	// Log draws the value axis in decades (values far apart, such as
	// latencies); bars then rise from the decade below the smallest value.
	Log    bool
	Groups []Group
}

// Chart is the whole picture; Subtitle may hold "\n". Zero Width and Height mean 1200 and 100
// plus 400 per panel; zero LimitColor is red.
type Chart struct {
	Title, Subtitle string
	Series          []Series
	LimitName       string
	LimitColor      color.RGBA
	Panels          []Panel
	Width, Height   int
}

// Layout says where Render put things, for callers and tests.
type Layout struct {
	Panels []PanelLayout
}

// PanelLayout is one panel's geometry. Values run from Min (0 unless
// Log) at Plot.Max.Y (bars end just above it) up to Max at Plot.Min.Y.
type PanelLayout struct {
	Plot     image.Rectangle
	Min, Max float64
	Log      bool
	Bars     [][]image.Rectangle // [group][series]; empty where no bar
	Limits   []image.Rectangle   // [group]; empty where no limit
}

// Y is the row of value v.
func (p *PanelLayout) Y(v float64) int {
	f := (v - p.Min) / (p.Max - p.Min)
	if p.Log {
		f = math.Log10(v/p.Min) / math.Log10(p.Max/p.Min)
	}
	return p.Plot.Max.Y - int(math.Round(f*float64(p.Plot.Dy())))
}

// Colours of the frame.
var (
	Background = color.RGBA{255, 255, 255, 255}
	Ink        = color.RGBA{0, 0, 0, 255}
	Grid       = color.RGBA{225, 225, 225, 255}
	DefaultRed = color.RGBA{214, 39, 40, 255}
)

const (
	margin     = 16
	textScale  = 2 // labels
	titleScale = 3
	valueScale = 1 // numbers above bars
	limitThick = 3 // pixels
)

// Render draws the chart.
func (c *Chart) Render() (*image.RGBA, *Layout, error) {
	if len(c.Panels) == 0 || len(c.Series) == 0 {
		return nil, nil, errors.New("benchchart: no panels or no series")
	}
	for _, p := range c.Panels {
		if len(p.Groups) == 0 {
			return nil, nil, fmt.Errorf("benchchart: panel %q has no groups", p.Title)
		}
		for _, g := range p.Groups {
			if len(g.Values) != len(c.Series) {
				return nil, nil, fmt.Errorf("benchchart: group %q has %d values for %d series", g.Label, len(g.Values), len(c.Series))
			}
		}
	}
	w, h := c.Width, c.Height
	if w == 0 {
		w = 1200
	}
	if h == 0 {
		h = 100 + 400*len(c.Panels)
	}
	limitColor := c.LimitColor
	if limitColor == (color.RGBA{}) {
		limitColor = DefaultRed
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{Background}, image.Point{}, draw.Src)

	// Header: title, subtitle, legend.
	y := margin
	if c.Title != "" {
		DrawText(img, margin, y, c.Title, titleScale, Ink)
		y += TextHeight(titleScale) + 8
	}
	if c.Subtitle != "" {
		for _, line := range strings.Split(c.Subtitle, "\n") {
			DrawText(img, margin, y, line, textScale, Ink)
			y += TextHeight(textScale) + 6
		}
		y += 2
	}
	x := margin
	box := TextHeight(textScale)
	for _, s := range c.Series {
		fill(img, image.Rect(x, y, x+box, y+box), s.Color)
		x += box + 6
		DrawText(img, x, y, s.Name, textScale, Ink)
		x += TextWidth(s.Name, textScale) + 24
	}
	if c.LimitName != "" {
		mid := y + box/2
		fill(img, image.Rect(x, mid-limitThick/2, x+3*box, mid-limitThick/2+limitThick), limitColor)
		x += 3*box + 6
		DrawText(img, x, y, c.LimitName, textScale, Ink)
	}
	y += box + 12

	layout := &Layout{}
	panelH := (h - y - margin) / len(c.Panels)
	if panelH < 120 || w < 300 {
		return nil, nil, fmt.Errorf("benchchart: %d×%d is too small", w, h)
	}
	for i := range c.Panels {
		pl := c.drawPanel(img, &c.Panels[i], image.Rect(margin, y+i*panelH, w-margin, y+(i+1)*panelH), limitColor)
		layout.Panels = append(layout.Panels, pl)
	}
	return img, layout, nil
}

// WritePNG renders the chart and encodes it.
func (c *Chart) WritePNG(out io.Writer) error {
	img, _, err := c.Render()
	if err != nil {
		return err
	}
	return png.Encode(out, img)
}

func (c *Chart) drawPanel(img *image.RGBA, p *Panel, area image.Rectangle, limitColor color.RGBA) PanelLayout {
	format := p.Format
	if format == nil {
		format = Compact
	}
	maxV, minV := 0.0, math.Inf(1)
	for _, g := range p.Groups {
		for _, v := range append([]float64{g.Limit}, g.Values...) {
			if v > 0 {
				maxV, minV = max(maxV, v), min(minV, v)
			}
		}
	}
	var tickVals []float64
	pl := PanelLayout{Log: p.Log}
	if p.Log {
		if maxV == 0 {
			minV, maxV = 1, 10
		}
		pl.Min = math.Pow(10, math.Floor(math.Log10(minV)))
		pl.Max = math.Pow(10, math.Ceil(math.Log10(maxV*1.25))) // room for the labels
		for v := pl.Min; v <= pl.Max*1.001; v *= 10 {
			tickVals = append(tickVals, v)
		}
	} else {
		step, top := ticks(maxV * 1.08) // room for the labels above the bars
		pl.Max = top
		for i := 0; float64(i)*step <= top+step/2; i++ {
			tickVals = append(tickVals, float64(i)*step)
		}
	}
	var tickLabels []string
	labelW := 0
	for _, v := range tickVals {
		s := format(v)
		tickLabels = append(tickLabels, s)
		labelW = max(labelW, TextWidth(s, textScale))
	}
	// Group labels, then a line for the limit's value.
	labelLines, lines := 1, 0
	for _, g := range p.Groups {
		labelLines = max(labelLines, strings.Count(g.Label, "\n")+1)
		if g.Limit > 0 {
			lines = 1
		}
	}
	lines += labelLines
	lineH := TextHeight(textScale) + 4
	plot := image.Rect(area.Min.X+labelW+12, area.Min.Y+TextHeight(textScale)+28,
		area.Max.X, area.Max.Y-lines*lineH-12)
	pl.Plot = plot

	DrawText(img, area.Min.X, area.Min.Y+12, p.Title, textScale, Ink)
	for i, s := range tickLabels {
		ty := pl.Y(tickVals[i])
		if i > 0 {
			fill(img, image.Rect(plot.Min.X, ty, plot.Max.X, ty+1), Grid)
		}
		DrawText(img, plot.Min.X-10-TextWidth(s, textScale), ty-TextHeight(textScale)/2, s, textScale, Ink)
		fill(img, image.Rect(plot.Min.X-6, ty, plot.Min.X-1, ty+1), Ink)
	}
	fill(img, image.Rect(plot.Min.X-1, plot.Min.Y, plot.Min.X, plot.Max.Y+1), Ink) // value axis
	fill(img, image.Rect(plot.Min.X-1, plot.Max.Y, plot.Max.X, plot.Max.Y+1), Ink) // base line

	groupW := plot.Dx() / len(p.Groups)
	barW := groupW * 8 / 10 / len(c.Series)
	gap := max(1, barW/10)
	for gi, g := range p.Groups {
		gx := plot.Min.X + gi*groupW
		x0 := gx + (groupW-barW*len(c.Series))/2
		bars := make([]image.Rectangle, len(c.Series))
		for si, v := range g.Values {
			if !(v > 0) {
				continue
			}
			bx := x0 + si*barW
			r := image.Rect(bx+gap, min(pl.Y(v), plot.Max.Y-1), bx+barW-gap, plot.Max.Y)
			fill(img, r, c.Series[si].Color)
			bars[si] = r
			s := format(v)
			DrawText(img, (r.Min.X+r.Max.X-TextWidth(s, valueScale))/2, r.Min.Y-3-TextHeight(valueScale), s, valueScale, Ink)
		}
		pl.Bars = append(pl.Bars, bars)
		var lim image.Rectangle
		if g.Limit > 0 {
			ly := pl.Y(g.Limit)
			lim = image.Rect(x0-6, ly-limitThick/2, x0+barW*len(c.Series)+6, ly-limitThick/2+limitThick)
			fill(img, lim, limitColor)
			s := "limit " + format(g.Limit)
			DrawText(img, gx+(groupW-TextWidth(s, textScale))/2, plot.Max.Y+10+labelLines*lineH, s, textScale, limitColor)
		}
		pl.Limits = append(pl.Limits, lim)
		for li, line := range strings.Split(g.Label, "\n") {
			DrawText(img, gx+(groupW-TextWidth(line, textScale))/2, plot.Max.Y+10+li*lineH, line, textScale, Ink)
		}
	}
	return pl
}

// ticks picks a round step for about five ticks up to at least v, and
// the top tick.
func ticks(v float64) (step, top float64) {
	if !(v > 0) || math.IsInf(v, 0) {
		return 1, 1
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch m := raw / mag; {
	case m <= 1:
		step = mag
	case m <= 2:
		step = 2 * mag
	case m <= 5:
		step = 5 * mag
	default:
		step = 10 * mag
	}
	return step, math.Ceil(v/step) * step
}

// Compact writes 41709 as 41.7k, 120000 as 120k, 1500000 as 1.5M.
func Compact(v float64) string {
	trim := func(s string) string {
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s
	}
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trim(strconv.FormatFloat(v/1e6, 'f', 1, 64)) + "M"
	case a >= 1e5:
		return trim(strconv.FormatFloat(v/1e3, 'f', 0, 64)) + "k"
	case a >= 1e3:
		return trim(strconv.FormatFloat(v/1e3, 'f', 1, 64)) + "k"
	case a >= 10 || a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return trim(strconv.FormatFloat(v, 'f', 1, 64))
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}
