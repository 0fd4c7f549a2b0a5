module github.com/convex-shim/convex-shim

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	golang.org/x/sys v0.50.0
	gopkg.in/yaml.v3 v3.0.1
)
