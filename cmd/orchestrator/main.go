// Command orchestrator is the Tasker daemon and its operator CLI. Run
// `orchestrator --help` for the subcommands.
package main

import (
	"os"

	"github.com/tasker/tasker/internal/cli"
	"github.com/tasker/tasker/internal/gctune"
)

func main() {
	gctune.Apply()
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
