package attr

import "encoding/base64"

// ParseInt decodes an integer value: decimal digits only, at most
// 4294967295. Like Postfix it is read as unsigned and used as a C int, so
// 4294967295 means -1.
func ParseInt(name string, v []byte) (int32, error) {
	if len(v) == 0 {
		return 0, syntaxError(name, v, "empty number")
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, syntaxError(name, v, "not a decimal number")
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<32-1 {
			return 0, syntaxError(name, v, "number out of range")
		}
	}
	return int32(uint32(n)), nil
}

// ParseData decodes a binary value: standard base64 with padding, nothing
// else (in particular no line breaks, which Go's decoder would skip).
func ParseData(name string, v []byte) ([]byte, error) {
	for _, c := range v {
		if !isBase64(c) {
			return nil, syntaxError(name, v, "invalid base64 data")
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
	n, err := base64.StdEncoding.Decode(out, v)
	if err != nil {
		return nil, syntaxError(name, v, "invalid base64 data")
	}
	return out[:n], nil
}

func isBase64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '+' || c == '/' || c == '='
}
