package main

import (
	"strings"
	"testing"
)

// The table --check prints, as the README shows it.
func TestCheckTable(t *testing.T) {
	var b strings.Builder
	printTable(&b, [][]string{
		{"LISTEN", "TARGET", "FROM", "CHECK"},
		{"127.0.0.1:80", "127.0.0.1:3210", "default", "ok"},
		{"127.0.0.1:8080", "127.0.0.1:3210", "CONVEX_CLOUD_ORIGIN", "FAIL: backend at 127.0.0.1:3210: connect: connection refused"},
	})
	want := "" +
		"LISTEN          TARGET          FROM                 CHECK\n" +
		"127.0.0.1:80    127.0.0.1:3210  default              ok\n" +
		"127.0.0.1:8080  127.0.0.1:3210  CONVEX_CLOUD_ORIGIN  FAIL: backend at 127.0.0.1:3210: connect: connection refused\n"
	if got := b.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
