// Package packagetest checks the tlsmgr-go packages that scripts/packages
// builds (make packages): a .deb and an .rpm each for amd64 and arm64,
// made with nfpm from packaging/nfpm.yaml. Its test builds them into a
// temporary directory and checks them with lintian, dpkg-deb and rpm:
// lintian finds no error and no warning that packaging/lintian-overrides
// does not override (nor an override it no longer needs), the files of
// each package are exactly the expected ones, with their modes, in each
// family's places and none of Postfix's, the fields say what they should,
// the programs are static, and the version in them is the package's
// under the rules of scripts/packages. It needs root, Debian's lintian
// and rpm; without them it skips, except under CI=true.
//
// The package holds no code: only the test.
package packagetest
