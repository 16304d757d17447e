package server

import (
	"strings"
	"testing"
)

// TestCheckLimitsAdvice: when the open files do not cover even the
// reserve, lowering tlsmgr_client_limit cannot help and is not offered;
// with one file past the reserve, a limit of 1 is.
func TestCheckLimitsAdvice(t *testing.T) {
	err := checkLimits(10, fdReserve)
	if err == nil {
		t.Fatalf("10 clients in %d files: no error", fdReserve)
	}
	if msg := err.Error(); strings.Contains(msg, "or less") || !strings.Contains(msg, "raise the process's hard limit on open files") {
		t.Errorf("10 clients in %d files: %v", fdReserve, err)
	}
	err = checkLimits(10, fdReserve+1)
	if err == nil || !strings.Contains(err.Error(), "lower tlsmgr_client_limit to 1 or less, or raise") {
		t.Errorf("10 clients in %d files: %v", fdReserve+1, err)
	}
	if err := checkLimits(0, fdReserve); err != nil {
		t.Errorf("no clients in %d files: %v", fdReserve, err)
	}
}
