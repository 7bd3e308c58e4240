package template

import (
	"fmt"
	"slices"
	"strings"
)

// maxCyclesReported bounds the cycles listed; one per cycle is plenty to
// fix them, and a dense graph can hold very many.
const maxCyclesReported = 20

// graph is the step DAG by declaration index. Edges run from parent to
// child (the order steps run in). Unknown, duplicated and self dependencies
// are left out: Validate reports those on their own.
type graph struct {
	children [][]int
	parents  [][]int
}

func (t *Template) graph() *graph {
	index := make(map[string]int, len(t.Steps))
	for i := range t.Steps {
		if _, dup := index[t.Steps[i].Name]; !dup {
			index[t.Steps[i].Name] = i
		}
	}
	g := &graph{children: make([][]int, len(t.Steps)), parents: make([][]int, len(t.Steps))}
	for i := range t.Steps {
		for _, dep := range t.Steps[i].DependsOn {
			j, ok := index[dep]
			if !ok || j == i || slices.Contains(g.parents[i], j) {
				continue
			}
			g.parents[i] = append(g.parents[i], j)
			g.children[j] = append(g.children[j], i)
		}
	}
	return g
}

// TopologicalOrder lists the step names with every step after all of its
// parents; among steps whose parents are all listed, the one declared first
// comes first. Steps on (or downstream of) a cycle are left out, so the list
// is complete only for a valid template.
func (t *Template) TopologicalOrder() []string {
	g := t.graph()
	waiting := make([]int, len(t.Steps)) // parents not yet listed
	var ready []int                      // sorted by declaration index
	for i, ps := range g.parents {
		waiting[i] = len(ps)
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	order := make([]string, 0, len(t.Steps))
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		order = append(order, t.Steps[i].Name)
		for _, c := range g.children[i] {
			if waiting[c]--; waiting[c] == 0 {
				at, _ := slices.BinarySearch(ready, c)
				ready = slices.Insert(ready, at, c)
			}
		}
	}
	return order
}

// Levels groups the step names by depth: level 0 holds the steps without
// dependencies, and every other step is one level after its deepest parent.
// No step depends on a step of its own level or a later one, so the steps
// of a level can run at once (a step may also start before an earlier
// level is done, once its own parents are). Within a level, steps are in
// declaration order. Like TopologicalOrder, it leaves out steps on (or
// downstream of) a cycle.
func (t *Template) Levels() [][]string {
	g := t.graph()
	waiting := make([]int, len(t.Steps)) // parents not yet placed
	level := make([]int, len(t.Steps))
	var ready []int
	for i, ps := range g.parents {
		waiting[i] = len(ps)
		if waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	placed := make([]bool, len(t.Steps))
	depth := 0
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		placed[i] = true
		depth = max(depth, level[i]+1)
		for _, c := range g.children[i] {
			level[c] = max(level[c], level[i]+1)
			if waiting[c]--; waiting[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
	levels := make([][]string, depth)
	for i := range t.Steps {
		if placed[i] {
			levels[level[i]] = append(levels[level[i]], t.Steps[i].Name)
		}
	}
	return levels
}

// validateGraph reports dependency cycles, each as the path around it
// starting at its earliest-declared step. Too many steps is reported on its
// own, and searching such a graph would only cost time.
func (t *Template) validateGraph(p *problems) {
	if len(t.Steps) > MaxSteps {
		return
	}
	cycles := t.graph().cycles()
	for n, c := range cycles {
		if n == maxCyclesReported {
			p.add("steps", "... and more dependency cycles")
			return
		}
		names := make([]string, len(c)+1)
		for k, i := range c {
			names[k] = t.Steps[i].Name
		}
		names[len(c)] = names[0]
		p.add(stepPath(c[0], t.Steps[c[0]].Name)+".depends_on",
			"cycle: %s (each step depends on the one before it)", strings.Join(names, " -> "))
	}
}

// cycles finds one cycle per back edge of a depth-first search, which finds
// at least one cycle in every cyclic part of the graph, and stops after
// maxCyclesReported+1. Each cycle is rotated to start at its smallest
// index, and duplicates are dropped. The search keeps its own stack:
// recursion depth would follow the longest chain of steps.
func (g *graph) cycles() [][]int {
	const (
		unvisited = iota
		onStack
		done
	)
	state := make([]int, len(g.children))
	var (
		out  [][]int
		seen = map[string]bool{}
	)
	type frame struct{ node, next int }
	for root := range g.children {
		if state[root] != unvisited {
			continue
		}
		stack := []frame{{node: root}}
		path := []int{root}
		state[root] = onStack
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next == len(g.children[top.node]) {
				state[top.node] = done
				stack = stack[:len(stack)-1]
				path = path[:len(path)-1]
				continue
			}
			c := g.children[top.node][top.next]
			top.next++
			switch state[c] {
			case unvisited:
				state[c] = onStack
				stack = append(stack, frame{node: c})
				path = append(path, c)
			case onStack:
				cycle := rotateToMin(slices.Clone(path[slices.Index(path, c):]))
				if key := fmt.Sprint(cycle); !seen[key] {
					seen[key] = true
					if out = append(out, cycle); len(out) > maxCyclesReported {
						return out
					}
				}
			}
		}
	}
	return out
}

// rotateToMin rotates a cycle to start at its smallest element.
func rotateToMin(c []int) []int {
	m := slices.Index(c, slices.Min(c))
	return append(c[m:], c[:m]...)
}
