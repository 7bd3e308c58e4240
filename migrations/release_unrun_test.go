package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// releaseFunctions describes tasker.step_release and its unchecked
// definition as the catalog has them (protocolFunctions).
func releaseFunctions(t *testing.T, db *pgxpool.Pool) []string {
	return protocolFunctions(t, db, "step_release", "step_release_unchecked")
}

// protocolFunctions describes the named functions of schema tasker as the
// catalog has them: signature, arguments and defaults, SECURITY DEFINER,
// settings, who may execute it, and a hash of the body.
func protocolFunctions(t *testing.T, db *pgxpool.Pool, names ...string) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), `
		SELECT format('%s(%s) definer=%s config=%s execute=%s body=%s',
		              p.oid::regprocedure, pg_get_function_arguments(p.oid), p.prosecdef::text, p.proconfig,
		              (SELECT string_agg(g.name, ',' ORDER BY g.name)
		                 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a,
		                      LATERAL (SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' WHEN p.proowner THEN 'owner'
		                                      ELSE pg_get_userbyid(a.grantee)::text END AS name) g
		                WHERE a.privilege_type = 'EXECUTE'),
		              md5(p.prosrc))
		  FROM pg_proc p
		 WHERE p.pronamespace = 'tasker'::regnamespace AND p.proname = ANY ($1)
		 ORDER BY 1`, names)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReleaseMigrationDownAndUpAgain (00026): Up replaces the four-argument
// step_release and its unchecked definition with five-argument ones, in the
// same layering and with the same grants; Down puts back exactly what a
// database migrated to 00025 has, and Up again exactly what it made.
func TestReleaseMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	downAndUpAgain(t, 25, func(db *pgxpool.Pool) []string { return releaseFunctions(t, db) }, func(up, at25 []string) {
		for _, c := range []struct {
			fns     []string
			guard   string
			inner   string
			started bool
		}{
			{at25, "tasker.step_release(uuid,integer,text,bigint)", "tasker.step_release_unchecked(uuid,integer,text,bigint)", false},
			{up, "tasker.step_release(uuid,integer,text,bigint,boolean)", "tasker.step_release_unchecked(uuid,integer,text,bigint,boolean)", true},
		} {
			all := strings.Join(c.fns, "\n")
			if len(c.fns) != 2 || !strings.HasPrefix(c.fns[0], c.guard+"(") || !strings.HasPrefix(c.fns[1], c.inner+"(") ||
				strings.Contains(all, "p_handler_started boolean DEFAULT true") != c.started {
				t.Fatalf("functions:\n%s\nwant %s and %s only", all, c.guard, c.inner)
			}
			// The guard is the worker's and the API's, the unchecked definition
			// its owner's only; both run as the owner with the path pinned.
			for i, want := range []string{"execute=owner,tasker_api,tasker_worker ", "execute=owner "} {
				if !strings.Contains(c.fns[i], want) || !strings.Contains(c.fns[i], `definer=true config={"search_path=pg_catalog, pg_temp"}`) {
					t.Errorf("%s: want SECURITY DEFINER, search_path pinned and %s", c.fns[i], want)
				}
			}
		}
	})
}
