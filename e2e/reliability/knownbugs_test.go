//go:build !reliability_bugs

package reliability

// Without the reliability_bugs tag, a test that meets a known shim bug logs
// it instead of failing (see knownBug and bugs_test.go).
const strictKnownBugs = false
