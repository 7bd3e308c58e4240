// Package nodeworker holds the integration tests of the Node.js example worker
// (examples/node-worker): the real orchestrator runs in-process, the Node
// worker runs as a child process next to a Go SDK worker, and the two complete
// the demo workflow together over the plain-SQL worker protocol. It has no
// non-test code.
package nodeworker
