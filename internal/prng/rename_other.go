//go:build !linux

package prng

// moveIntoPlace gives the file tmp the name base unless base exists
// (EEXIST).
func moveIntoPlace(dirFD int, tmp, base string) error { return linkIntoPlace(dirFD, tmp, base) }
