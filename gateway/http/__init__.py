"""The HTTP edge: the only code that knows Starlette and the wire formats. It parses a request
into the pipeline's terms, calls the pipeline, and renders what comes back."""
