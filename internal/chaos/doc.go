// Package chaos holds the crash-safety tests: real orchestrator processes
// (cmd/orchestrator, `orchestrator serve`) and real worker processes
// (./testworker, a Go SDK worker) run against a fresh database and are
// killed with SIGKILL — no graceful shutdown, no deferred cleanup — and
// restarted while tasks are in flight. The tests then prove from the
// database alone that the promises of DESIGN §1 and §6 held:
//
//   - every task completes; no step is left in a non-terminal state and the
//     queues drain;
//   - every step's result is applied exactly once: one `complete`
//     transition per step, and the stored result is the one the successful
//     attempt produced (the workers write a side-effect ledger,
//     public.chaos_ledger, that records every execution and its result);
//   - a step is never claimed twice at once: its claims are strictly
//     sequential in its transition log, each attempt runs at most once, and
//     only on the worker that claimed it;
//   - a dead worker's step is retried within seconds (lease expiry);
//   - the transition logs are intact: sort keys without gaps, each row's
//     from_state is the previous row's to_state, one most_recent row that
//     matches the parent row's state.
//
// The test binary builds both programs once (go build) into a temporary
// directory; child output goes to log files whose tails are printed when a
// test fails. TestChaos runs a short variant by default; TASKER_CHAOS=long
// (`make chaos`) runs the long one. regressions_test.go pins down, in
// process and deterministically, defects these runs found by chance. There
// is no non-test code here: the package exists for its tests and for
// ./testworker.
package chaos
