package bench

import (
	"strings"
	"testing"
)

// TestRedactHidesEveryPassword: the URL bench prints (a kept database, a
// failed connection) shows no password, in the user info or the query.
func TestRedactHidesEveryPassword(t *testing.T) {
	t.Parallel()
	got := redact("postgres://bob:s3cret@h/db?sslmode=disable&password=qsecret")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "qsecret") || !strings.HasPrefix(got, "postgres://bob:xxxxx@h/db?") {
		t.Errorf("redact: %s", got)
	}
	if got := redact("postgres://bob@h/db?password=qsecret"); strings.Contains(got, "qsecret") {
		t.Errorf("redact, password only in the query: %s", got)
	}
}
