// Package suggest finds the name a mistyped one was probably meant to be,
// for "did you mean" hints in error messages (template keys and step names,
// API query parameters).
package suggest

// maxLen bounds the names Closest considers: anything longer is not a typo
// of a short name, and the edit distance is quadratic.
const maxLen = 256

// Closest returns the candidate nearest to s when it is near enough to be a
// likely typo (an edit distance of at most 2, and less than half of s).
func Closest(s string, candidates []string) (string, bool) {
	if len(s) > maxLen {
		return "", false
	}
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist && 2*d < len(s) {
			best, bestDist = c, d
		}
	}
	return best, best != ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
