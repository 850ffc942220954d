"""Feature sources: images -> vectors, their cache and the extraction worker."""
