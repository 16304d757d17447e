package master

import (
	"fmt"
	"os/user"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// DataRedirectFile implements Postfix's data_directory redirect for a
// file (such as the PRNG exchange file): if the parent directory of path
// exists and is not owned by ownerUID, the file goes to
// dataDir/basename(path) instead, and the two warnings Postfix logs, which
// name the mail owner, are returned.
func DataRedirectFile(path, dataDir, owner string, ownerUID int) (string, []string) {
	return redirectPath(path, dataDir, owner, ownerUID, "file", path)
}

// redirectedMapTypes are the database types Postfix redirects; others (e.g.
// network tables) are left alone.
var redirectedMapTypes = map[string]bool{
	"hash": true, "btree": true, "dbm": true, "lmdb": true, "cdb": true,
	"sdbm": true, "dbz": true,
}

// DataRedirectMap redirects the file of a "type:name" table (such as a
// session cache database) the same way, keeping the type prefix; the
// warnings call it a table. Types other than local database files, and
// specs without a type, are returned unchanged.
func DataRedirectMap(spec, dataDir, owner string, ownerUID int) (string, []string) {
	typ, name, ok := strings.Cut(spec, ":")
	if !ok || !redirectedMapTypes[typ] {
		return spec, nil
	}
	newName, warnings := redirectPath(name, dataDir, owner, ownerUID, "table", spec)
	return typ + ":" + newName, warnings
}

func redirectPath(p, dataDir, owner string, ownerUID int, kind, logName string) (string, []string) {
	dir := dirName(p)
	var st syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || int(st.Uid) == ownerUID {
		return p, nil
	}
	warnings := []string{
		fmt.Sprintf("request to update %s %s in non-%s directory %s", kind, logName, owner, dir),
		fmt.Sprintf("redirecting the request to %s-owned data_directory %s", owner, dataDir),
	}
	return dataDir + "/" + baseName(p), warnings
}

// dirName is the directory part of p, with Postfix's conventions: "." for
// no slash or an empty path, "/" for a path of slashes only.
func dirName(p string) string {
	if p == "" {
		return "."
	}
	trimmed := strings.TrimRight(p, "/")
	if trimmed == "" {
		return "/"
	}
	i := strings.LastIndexByte(trimmed, '/')
	if i < 0 {
		return "."
	}
	if d := strings.TrimRight(trimmed[:i], "/"); d != "" {
		return d
	}
	return "/"
}

// baseName is the last component of p ("." for an empty path, "/" for
// slashes only), like Postfix's sane_basename.
func baseName(p string) string { return path.Base(p) }

// ownerName names ownerUID in warnings: its account name if known.
func ownerName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}
