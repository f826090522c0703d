"""The caches the request path uses: exact answers (the response cache) and where prompt
prefixes are warm (the prefix registry), in Redis when shared by replicas, else in-process."""
