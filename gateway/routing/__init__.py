"""Where a request goes and how it gets there: the plan (route → tier → candidates, screened by
what the request needs), the backend pool with its breakers, dispatch inside one deadline,
extra choices, and the accounting at the end of every request."""
