package config

import (
	"fmt"
	"slices"
	"strings"
)

// ownParams are the parameters of tlsmgr's own, which no Postfix knows:
// postconf(1) reports them as unused unless master.cf declares them
// (tlsmgrctl postfix enable does), and a misspelt one would be silently
// ignored by both.
var ownParams = func() []string {
	var names []string
	for _, pm := range table {
		if pm.Own {
			names = append(names, pm.Name)
		}
	}
	slices.Sort(names)
	return names
}()

// OwnParams returns the names of tlsmgr's own parameters, sorted.
func OwnParams() []string { return slices.Clone(ownParams) }

// OwnSet returns the names of tlsmgr's own parameters that main.cf or an
// override gives a value, sorted.
func (c *Config) OwnSet() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var names []string
	for _, name := range ownParams {
		if _, ok := c.values[name]; ok {
			names = append(names, name)
		}
	}
	return names
}

// DeclareParam is the parameter whose list of names postconf takes for
// user-defined parameters: tlsmgrctl postfix enable gives it, on the
// tlsmgr service's command line, the names of OwnSet.
const DeclareParam = "smtpd_restriction_classes"

// Undeclared returns the names of OwnSet that DeclareParam (from main.cf
// or master.cf's -o) does not list: postconf and postfix check report
// those as unused parameters.
func (c *Config) Undeclared() []string {
	c.mu.RLock()
	declared := strings.FieldsFunc(c.values[DeclareParam], func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n'
	})
	c.mu.RUnlock()
	var out []string
	for _, name := range c.OwnSet() {
		if !slices.Contains(declared, name) {
			out = append(out, name)
		}
	}
	return out
}

// postfixTLSMgrParams are Postfix's parameters named like ours: its
// clients read them, tlsmgr does not.
var postfixTLSMgrParams = map[string]bool{"tlsmgr_service_name": true}

// lookalikes returns a warning for each parameter given a value that is
// not one tlsmgr reads but looks like one of its own: a tlsmgr_ name, or
// a name within two edits of one (a typo such as
// smtpd_tls_session_cache_max_entires). Postfix reports those as unused
// among many others; tlsmgr names the parameter it probably meant.
func (c *Config) lookalikes() []string {
	c.mu.RLock()
	var set []string
	for name := range c.values {
		if byName[name] == nil && !postfixTLSMgrParams[name] {
			set = append(set, name)
		}
	}
	c.mu.RUnlock()
	slices.Sort(set)
	var warnings []string
	for _, name := range set {
		best, dist := "", len(name)
		for _, own := range ownParams {
			if d := editDistance(name, own, 3); d < dist {
				best, dist = own, d
			}
		}
		switch {
		case dist <= 2:
			warnings = append(warnings, fmt.Sprintf("unknown parameter %s is ignored; did you mean %s?", name, best))
		case strings.HasPrefix(name, "tlsmgr_"):
			warnings = append(warnings, fmt.Sprintf("unknown parameter %s is ignored: tlsmgr-go(8) lists its parameters", name))
		}
	}
	return warnings
}

// editDistance is the optimal string alignment distance between a and b
// (insertions, deletions, substitutions, transpositions of neighbours),
// or limit once it is known to be at least limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}
