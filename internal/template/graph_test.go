package template

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestTopologicalOrder(t *testing.T) {
	t.Parallel()
	fanOut := func() (string, []string) {
		var sb strings.Builder
		sb.WriteString("namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: start, handler: h}\n")
		// Declared after the fan-in step on purpose: order follows the DAG,
		// not the file.
		sb.WriteString("  - {name: finish, handler: h, depends_on: [")
		var mids []string
		for i := range 20 {
			mids = append(mids, fmt.Sprintf("m%02d", i))
		}
		sb.WriteString(strings.Join(mids, ", ") + "]}\n")
		for _, m := range mids {
			fmt.Fprintf(&sb, "  - {name: %s, handler: h, depends_on: [start]}\n", m)
		}
		return sb.String(), append(append([]string{"start"}, mids...), "finish")
	}
	fanDoc, fanWant := fanOut()
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"linear", baseYAML, []string{"a", "b", "c"}},
		{"linear declared backwards", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: c, handler: h, depends_on: [b]}\n  - {name: b, handler: h, depends_on: [a]}\n  - {name: a, handler: h}\n", []string{"a", "b", "c"}},
		{"diamond", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: top, handler: h}\n  - {name: right, handler: h, depends_on: [top]}\n  - {name: left, handler: h, depends_on: [top]}\n  - {name: bottom, handler: h, depends_on: [left, right]}\n", []string{"top", "right", "left", "bottom"}},
		{"ties by declaration", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: z, handler: h}\n  - {name: y, handler: h, depends_on: [x]}\n  - {name: x, handler: h}\n", []string{"z", "x", "y"}},
		{"fan-out fan-in 1-20-1", fanDoc, fanWant},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.doc).TopologicalOrder()
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
			assertParentsFirst(t, mustParse(t, tc.doc), got)
		})
	}
}

func assertParentsFirst(t *testing.T, tmpl *Template, order []string) {
	t.Helper()
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	for _, s := range tmpl.Steps {
		for _, d := range s.DependsOn {
			if pos[d] >= pos[s.Name] {
				t.Errorf("%s listed before its parent %s", s.Name, d)
			}
		}
	}
}

func TestLevels(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		doc  string
		want [][]string
	}{
		{"linear", baseYAML, [][]string{{"a"}, {"b"}, {"c"}}},
		{"diamond", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: top, handler: h}\n  - {name: right, handler: h, depends_on: [top]}\n  - {name: left, handler: h, depends_on: [top]}\n  - {name: bottom, handler: h, depends_on: [left, right]}\n",
			[][]string{{"top"}, {"right", "left"}, {"bottom"}}},
		// A step goes after its deepest parent: "late" depends on a root
		// and on "mid", so it is level 2, not 1.
		{"deepest parent", "namespace: shop\nname: x\nversion: v\nsteps:\n  - {name: late, handler: h, depends_on: [root, mid]}\n  - {name: mid, handler: h, depends_on: [root]}\n  - {name: root, handler: h}\n  - {name: other, handler: h}\n",
			[][]string{{"root", "other"}, {"mid"}, {"late"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustParse(t, tc.doc).Levels()
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
	tmpl := mustParse(t, baseYAML)
	tmpl.Steps = append(tmpl.Steps, Step{Name: "p", DependsOn: []string{"q"}}, Step{Name: "q", DependsOn: []string{"p"}})
	if got := tmpl.Levels(); !slices.EqualFunc(got, [][]string{{"a"}, {"b"}, {"c"}}, slices.Equal) {
		t.Errorf("with a cycle: got %v", got)
	}
}

func TestTopologicalOrderLeavesOutCycles(t *testing.T) {
	t.Parallel()
	tmpl := mustParse(t, baseYAML)
	tmpl.Steps = append(tmpl.Steps,
		Step{Name: "p", DependsOn: []string{"q"}},
		Step{Name: "q", DependsOn: []string{"p"}},
		Step{Name: "after", DependsOn: []string{"q", "c"}},
	)
	if got := tmpl.TopologicalOrder(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("got %v", got)
	}
}
