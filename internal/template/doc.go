// Package template reads task templates: the workflow definitions (a DAG of
// named steps) that tasks are instances of.
//
// A template is written in YAML (config/templates/*.yaml, see the README
// there) or, for the REST API, as the same document in JSON. Parse and
// ParseJSON are strict: an unknown or duplicated key, a value of the wrong
// type or a second YAML document is refused with the key's path and line,
// because a misspelt key silently ignored would run a workflow other than the
// one written. Both then fill in defaults and validate the whole template,
// returning a *ValidationError that lists every problem found, each with the
// path of the offending field (`steps[2] (create_order).depends_on[1]`).
//
// A parsed template is defaulted: every optional setting holds its effective
// value, so the rest of the engine never applies a default of its own. JSON
// gives its canonical encoding (what the store keeps) and Hash the digest of
// that encoding, so two documents that differ only in formatting, key order
// or spelled-out defaults have the same hash.
//
// The package does no I/O apart from LoadDir reading files.
package template
