"""How hard a request looks: token counting, the heuristic scorer (v1) and the learned scorer's
inference over its shipped artifact. Pure and fast: the request path calls it on every request."""
