// Package docs holds the topic pages of the documentation (Markdown, no
// code). This test keeps them, the README, SECURITY.md and the CHANGELOG
// consistent: every relative link leads to a file of the repository, and
// to a heading of it when it names one; every page here is reachable
// from the README; and the README stays a front page.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// root is the repository, seen from this directory.
const root = ".."

// maxReadmeLines bounds the README: the manual is in the man pages and
// here, the README only points at it.
const maxReadmeLines = 200

// pages are the Markdown files whose links are checked, relative to root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md")
	}
	files := []string{"README.md", "SECURITY.md", "CHANGELOG.md"}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	return files
}

var (
	// inlineLink is [text](target) or ![alt](target), the target without
	// spaces (an optional "title" after it is left out).
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// refLink is a reference definition: [label]: target.
	refLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*(\S+)`)
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	// scheme marks an absolute URL (https:, mailto:).
	scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	// atxHeading is a heading line: its level and its text.
	atxHeading = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
)

// doc is one Markdown file: its links and the anchors of its headings.
type doc struct {
	lines   int
	links   []link
	anchors map[string]bool
}

type link struct {
	line   int
	target string
}

// parse reads a Markdown file, skipping fenced code blocks and code spans.
func parse(path string) (*doc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := &doc{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		d.lines++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if m := atxHeading.FindStringSubmatch(line); m != nil {
			a := slug(m[2])
			if n := seen[a]; n > 0 {
				d.anchors[fmt.Sprintf("%s-%d", a, n)] = true
			} else {
				d.anchors[a] = true
			}
			seen[a]++
		}
		// Indented code blocks are read as text: the commands in them
		// hold no "](", and a link there would be one to check anyway.
		text := codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(text, -1) {
			d.links = append(d.links, link{d.lines, m[1]})
		}
		if m := refLink.FindStringSubmatch(text); m != nil {
			d.links = append(d.links, link{d.lines, m[1]})
		}
	}
	return d, sc.Err()
}

// slug is the anchor GitHub gives a heading: its text without markup,
// in lower case, without punctuation, spaces made hyphens.
func slug(heading string) string {
	// Links in a heading count by their text.
	heading = inlineLink.ReplaceAllStringFunc(heading, func(s string) string {
		i := strings.Index(s, "](")
		return strings.TrimPrefix(s[:i], "!")
	})
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestLinks: every relative link of the pages leads to a file in the
// repository and, with a #fragment into a Markdown file, to one of its
// headings.
func TestLinks(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	parsed := map[string]*doc{}
	get := func(path string) (*doc, error) {
		if d, ok := parsed[path]; ok {
			return d, nil
		}
		d, err := parse(path)
		if err == nil {
			parsed[path] = d
		}
		return d, err
	}
	checked := 0
	for _, page := range pages(t) {
		src := filepath.Join(root, page)
		d, err := get(src)
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		for _, l := range d.links {
			if scheme.MatchString(l.target) || strings.HasPrefix(l.target, "//") {
				continue // an absolute URL
			}
			checked++
			where := fmt.Sprintf("%s:%d: link %q", page, l.line, l.target)
			path, anchor, _ := strings.Cut(l.target, "#")
			dest := src
			if path != "" {
				dest = filepath.Join(filepath.Dir(src), filepath.FromSlash(path))
				full, err := filepath.Abs(dest)
				if err != nil {
					t.Fatal(err)
				}
				if full != abs && !strings.HasPrefix(full, abs+string(filepath.Separator)) {
					t.Errorf("%s leads out of the repository", where)
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: no such file (%v)", where, err)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: an anchor into a file that is not Markdown", where)
				continue
			}
			target, err := get(dest)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if !target.anchors[anchor] {
				t.Errorf("%s: no heading with the anchor #%s", where, anchor)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relative links found: is the link pattern still right?", checked)
	}
}

// TestReadmeIsAFrontPage: the README is at most maxReadmeLines long, and
// links every page of docs/.
func TestReadmeIsAFrontPage(t *testing.T) {
	d, err := parse(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if d.lines > maxReadmeLines {
		t.Errorf("README.md has %d lines, more than %d: move the detail to docs/ or the man pages", d.lines, maxReadmeLines)
	}
	linked := map[string]bool{}
	for _, l := range d.links {
		path, _, _ := strings.Cut(l.target, "#")
		linked[filepath.Clean(path)] = true
	}
	for _, page := range pages(t) {
		if strings.HasPrefix(page, "docs"+string(filepath.Separator)) && !linked[filepath.ToSlash(page)] {
			t.Errorf("README.md does not link %s", page)
		}
	}
}

// TestSlug pins the anchor rule on headings of the kinds these pages use.
func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Supported Postfix versions":                            "supported-postfix-versions",
		"Choosing `timeout`":                                    "choosing-timeout",
		"gotls: share TLS sessions between Go processes":        "gotls-share-tls-sessions-between-go-processes",
		"proto: the protocol's names":                           "proto-the-protocols-names",
		"A member reads its own writes, never an older session": "a-member-reads-its-own-writes-never-an-older-session",
		"Differences from Postfix's tlsmgr":                     "differences-from-postfixs-tlsmgr",
		"[Unreleased]":                                          "unreleased",
		"tlsmgr — a drop-in TLS session cache":                  "tlsmgr--a-drop-in-tls-session-cache",
		"Go TLS programs (`gotls`)":                             "go-tls-programs-gotls",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
}
