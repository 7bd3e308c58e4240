package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigPrintRefusesWhatServeRefuses: a broken file or a bad value is
// an error (exit 1) whether or not DATABASE_URL is set; only a missing
// database.url alone is a note. Not parallel: environment.
func TestConfigPrintRefusesWhatServeRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	files := map[string]string{
		"syntax":  write("syntax.toml", "[database\n"),
		"unknown": write("unknown.toml", "[server]\nlisten_addr = \":1\"\n"),
		"type":    write("type.toml", "[database]\nmax_conns = \"x\"\n"),
		"range":   write("range.toml", "[database]\nmax_conns = 1\n"),
	}
	for _, dbURL := range []string{"postgres://u@h/db", ""} {
		t.Setenv("DATABASE_URL", dbURL)
		for name, path := range files {
			out, errOut, code := run(t, "--config", path, "config", "print")
			if code != 1 || out != "" || strings.Contains(errOut, "note:") || !strings.Contains(errOut, "error:") {
				t.Errorf("DATABASE_URL=%q, %s file: exit %d\nstdout %s\nstderr %s", dbURL, name, code, out, errOut)
			}
		}
	}
	t.Setenv("DATABASE_URL", "")
	t.Setenv("TASKER_ORCHESTRATOR_BATCH_SIZE", "abc")
	if _, errOut, code := run(t, "config", "print"); code != 1 || !strings.Contains(errOut, "TASKER_ORCHESTRATOR_BATCH_SIZE") {
		t.Errorf("bad variable without DATABASE_URL: exit %d: %s", code, errOut)
	}
	os.Unsetenv("TASKER_ORCHESTRATOR_BATCH_SIZE")
	out, errOut, code := run(t, "config", "print")
	if code != 0 || !strings.Contains(out, "max_conns = 20") || !strings.Contains(errOut, "note: database.url is not set") {
		t.Errorf("only the URL missing: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestConfigPrintMasksQueryPasswordAndUsesTOMLKeys: a password given as a
// query parameter is masked, and --json names keys as the file does.
func TestConfigPrintMasksQueryPasswordAndUsesTOMLKeys(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://bob:s3cret@h/db?sslmode=disable&password=qsecret")
	out, errOut, code := run(t, "config", "print")
	if code != 0 || strings.Contains(out, "s3cret") || strings.Contains(out, "qsecret") || !strings.Contains(out, "password=xxxxx") {
		t.Errorf("config print: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = run(t, "--json", "config", "print")
	var got map[string]map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("config print --json: exit %d\n%s\n%s", code, out, errOut)
	}
	if got["database"]["url"] != "postgres://bob:xxxxx@h/db?sslmode=disable&password=xxxxx" || got["database"]["max_conns"] != float64(20) {
		t.Errorf("config print --json, database: %v", got["database"])
	}
	if got["server"]["listen"] == nil || strings.Contains(out, "MaxConns") {
		t.Errorf("config print --json does not use the TOML keys:\n%s", out)
	}
}
