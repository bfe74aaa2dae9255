package join

import "testing"

// TestInitialCluster: the answer names every member by its peer URLs, the
// joiner under its own name; a second member that has not started yet
// (a join under way) is refused.
func TestInitialCluster(t *testing.T) {
	ms := []Member{
		{ID: 1, Name: "a", PeerURLs: []string{"https://a:2380"}},
		{ID: 2, PeerURLs: []string{"https://b:2380"}, IsLearner: true},
	}
	got, err := initialCluster(ms, 2, "b")
	if err != nil || got != "a=https://a:2380,b=https://b:2380" {
		t.Errorf("initialCluster = %q, %v", got, err)
	}
	ms = append(ms, Member{ID: 3, PeerURLs: []string{"https://c:2380"}, IsLearner: true})
	if _, err := initialCluster(ms, 3, "c"); err == nil {
		t.Error("another unstarted member accepted")
	}
}
