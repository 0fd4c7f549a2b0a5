package benchenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteBetweenMarkers(t *testing.T) {
	const begin, end = "<!-- x:begin -->", "<!-- x:end -->"
	block := begin + "\nnew\n" + end + "\n"
	for _, tc := range []struct{ name, old, want string }{
		{"no file", "", block},
		{"no markers", "# Benchmarks\n\nintro\n", "# Benchmarks\n\nintro\n\n" + block},
		{"end before begin", end + "\n" + begin + "\n", end + "\n" + begin + "\n\n" + block},
		{"replaced, the rest kept", "head\n" + begin + "\nold\n" + end + "\ntail\n", "head\n" + block + "tail\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "benchmarks.md")
			if tc.old != "" {
				os.WriteFile(f, []byte(tc.old), 0o644)
			}
			if err := WriteBetweenMarkers(f, begin, end, "new\n"); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(f); string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCells(t *testing.T) {
	two := func(x float64) string { return Num(x, 2) }
	for _, tc := range []struct {
		got, want string
	}{
		{Num(1234567.891, 1), "1,234,567.9"},
		{Num(-1234, 0), "-1,234"},
		{Num(999, 0), "999"},
		{Cell(nil, two), "—"},
		{Cell([]float64{3, 1, 2}, two), "2.00 (1.00–3.00)"},
		{Cell([]float64{1, 4}, two), "2.50 (1.00–4.00)"},
		{Cell([]float64{1.001, 0.999}, two), "1.00"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
