// Package proto names the tlsmgr protocol: the requests, attributes and
// statuses that Postfix's tls_mgr.c client and tlsmgr(8) exchange, plus
// our stats extension. The server and the client library both speak
// from this one definition.
package proto

// Announcement is what the server says first on every connection (an
// attribute list holding protocol=tlsmgr_protocol); Postfix 3.6+ clients
// refuse a server that does not.
const (
	AttrProtocol = "protocol"
	ProtocolName = "tlsmgr_protocol"
	Announcement = AttrProtocol + "\x00" + ProtocolName + "\x00\x00"
)

// Requests, the value of the "request" attribute.
const (
	RequestSeed   = "seed"
	RequestPolicy = "policy"
	RequestLookup = "lookup"
	RequestUpdate = "update"
	RequestDelete = "delete"
	RequestTktKey = "tktkey"
	RequestStats  = "stats" // ours: the daemon's counters
	RequestDump   = "dump"  // ours: list a cache's entries, never their secrets
	RequestFlush  = "flush" // ours: empty a cache; root or the mail owner only
)

// Attribute names.
const (
	AttrRequest   = "request"
	AttrStatus    = "status"
	AttrCacheType = "cache_type"
	AttrCacheID   = "cache_id"
	AttrSession   = "session"
	AttrSize      = "size"
	AttrSeed      = "seed"
	AttrCachable  = "cachable"
	AttrTimeout   = "timeout"
	AttrKeyName   = "keyname"
	AttrKeyBuf    = "keybuf"

	// Ours, for dump and flush.
	AttrMax    = "max"    // dump: the most entries to list
	AttrTotal  = "total"  // dump: entries the cache holds
	AttrEntry  = "entry"  // dump: one entry, "IDHASH AGE_SECONDS SIZE"
	AttrCount  = "count"  // flush: entries removed
	AttrReason = "reason" // why a request was refused
)

// Reply statuses.
const (
	StatusOK   int32 = 0  // success
	StatusErr  int32 = -1 // not found, or refused
	StatusFail int32 = -2 // protocol or usage error
)

// RingKeyStat is the stats name under which the daemon describes each key
// of its ticket-key ring, one attribute per key, never its secrets
// (tlsmgrctl keys lists them).
const RingKeyStat = "tktkey_ring_key"

// Stats names tlsmgrctl keys shows with the ring: how the daemon keeps
// its keys, and the ring's digest (members that agree show the same).
const (
	KeyModeStat    = "tktkey_mode"
	RingDigestStat = "tktkey_ring_digest"
)

// VersionStat is the stats name of the daemon's version (tlsmgrctl
// version prints it next to its own).
const VersionStat = "version"
