package gotls

import (
	"crypto/tls"
	"crypto/x509"
)

// exampleSocket is the socket of the in-process server the examples use.
var exampleSocket string

// SetupForExamples gives the examples (package gotls_test) a daemon's socket,
// a server certificate and the pool that trusts it.
func SetupForExamples() (socket string, cert tls.Certificate, roots *x509.CertPool) {
	c := getCert(nil)
	return exampleSocket, c.cert, c.pool
}

// ServerNameForExamples is the name the certificate is for.
const ServerNameForExamples = serverName
