package prng

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

// cavpVector is one COUNT record of HMAC_DRBG.rsp with the bracketed
// parameters of its section.
type cavpVector struct {
	section map[string]string
	line    int
	fields  map[string][]string // AdditionalInput occurs twice
}

func (v *cavpVector) hex(t *testing.T, name string, index int) []byte {
	t.Helper()
	values := v.fields[name]
	if len(values) <= index {
		t.Fatalf("line %d: no %s #%d", v.line, name, index+1)
	}
	b, err := hex.DecodeString(values[index])
	if err != nil {
		t.Fatalf("line %d: %s: %v", v.line, name, err)
	}
	return b
}

// parseCAVP reads a CAVP .rsp file: "# comments", "[Name]" or
// "[Name = value]" section headers, then "Name = value" records each
// opened by COUNT.
func parseCAVP(t *testing.T, path string) []*cavpVector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		vectors   []*cavpVector
		section   = map[string]string{}
		inHeaders bool
		current   *cavpVector
	)
	scanner := bufio.NewScanner(f)
	scanner.Buffer(nil, 1<<20)
	for lineNo := 1; scanner.Scan(); lineNo++ {
		line := strings.TrimSpace(scanner.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "["):
			if !inHeaders {
				section = map[string]string{}
				inHeaders = true
			}
			inner := strings.TrimSuffix(strings.TrimPrefix(line, "["), "]")
			if name, value, ok := strings.Cut(inner, "="); ok {
				section[strings.TrimSpace(name)] = strings.TrimSpace(value)
			} else {
				section["Hash"] = inner
			}
			continue
		}
		inHeaders = false
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: cannot parse %q", path, lineNo, line)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if name == "COUNT" {
			current = &cavpVector{section: section, line: lineNo, fields: map[string][]string{}}
			vectors = append(vectors, current)
		}
		if current == nil {
			t.Fatalf("%s:%d: field before COUNT", path, lineNo)
		}
		current.fields[name] = append(current.fields[name], value)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return vectors
}

// TestHMACDRBGCAVP checks every SHA-256 vector of NIST's HMAC_DRBG.rsp
// (no prediction resistance, with reseed): instantiate, reseed, generate
// twice, compare the second output.
func TestHMACDRBGCAVP(t *testing.T) {
	vectors := parseCAVP(t, "testdata/hmac_drbg_sha256.rsp")
	perVariant := map[string]int{}
	for _, v := range vectors {
		if v.section["Hash"] != "SHA-256" || v.section["PredictionResistance"] != "False" {
			t.Fatalf("line %d: unexpected section %v", v.line, v.section)
		}
		returned := v.hex(t, "ReturnedBits", 0)
		if want := v.section["ReturnedBitsLen"]; fmt.Sprint(len(returned)*8) != want {
			t.Fatalf("line %d: ReturnedBits is %d bits, section says %s", v.line, len(returned)*8, want)
		}
		d := newHMACDRBG(v.hex(t, "EntropyInput", 0), v.hex(t, "Nonce", 0), v.hex(t, "PersonalizationString", 0))
		d.reseed(v.hex(t, "EntropyInputReseed", 0), v.hex(t, "AdditionalInputReseed", 0))
		out := make([]byte, len(returned))
		if err := d.generate(out, v.hex(t, "AdditionalInput", 0)); err != nil {
			t.Fatal(err)
		}
		if err := d.generate(out, v.hex(t, "AdditionalInput", 1)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, returned) {
			t.Errorf("line %d (COUNT = %s, %v): got %x, want %x", v.line, v.fields["COUNT"][0], v.section, out, returned)
		}
		if d.reseedCounter != 3 {
			t.Errorf("line %d: reseed counter %d after reseed and two generates, want 3", v.line, d.reseedCounter)
		}
		variant := fmt.Sprintf("PersonalizationStringLen=%s AdditionalInputLen=%s",
			v.section["PersonalizationStringLen"], v.section["AdditionalInputLen"])
		perVariant[variant]++
	}
	for _, variant := range []string{
		"PersonalizationStringLen=0 AdditionalInputLen=0",
		"PersonalizationStringLen=0 AdditionalInputLen=256",
		"PersonalizationStringLen=256 AdditionalInputLen=0",
		"PersonalizationStringLen=256 AdditionalInputLen=256",
	} {
		if perVariant[variant] < 15 {
			t.Errorf("%s: only %d vectors", variant, perVariant[variant])
		}
	}
	t.Logf("checked %d vectors: %v", len(vectors), perVariant)
}

func TestHMACDRBGReseedRequired(t *testing.T) {
	d := newHMACDRBG(make([]byte, 32), make([]byte, 16), nil)
	d.reseedInterval = 2
	out := make([]byte, 16)
	for i := range 2 {
		if err := d.generate(out, nil); err != nil {
			t.Fatalf("generate %d: %v", i, err)
		}
	}
	if err := d.generate(out, nil); err != errReseedRequired {
		t.Fatalf("third generate: %v, want %v", err, errReseedRequired)
	}
	d.reseed(make([]byte, 32), nil)
	if err := d.generate(out, nil); err != nil {
		t.Fatalf("after reseed: %v", err)
	}
	if err := d.generate(make([]byte, maxBytesPerRequest+1), nil); err != errRequestTooLong {
		t.Fatalf("oversized request: %v", err)
	}
}
