//go:build reliability_bugs

package reliability

// With the reliability_bugs tag, a test that meets a known, still open shim
// bug (see knownBug) fails on it instead of logging it:
//
//	go test -tags reliability_bugs ./e2e/reliability/
//
// Bugs found and since fixed have regression tests in regressions_test.go.
const strictKnownBugs = true
