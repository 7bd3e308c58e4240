// Command orchestrator is the Tasker daemon and its operator CLI. Run
// `orchestrator --help` for the subcommands.
package main

import (
	"os"

	"github.com/tasker/tasker/internal/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
