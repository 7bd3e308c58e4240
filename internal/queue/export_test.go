package queue

// Hooks for the external tests.
var (
	ReadSQLForTest      = readSQL
	AsyncCommitForTest  = asyncCommit
	WorkerFilterForTest = workerFilter
)
